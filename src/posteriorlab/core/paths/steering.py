r"""Inference-time steering of a flow model: best-of-N, particle SMC and rollover budgets.

A trained flow model knows one thing, the velocity :math:`u_t(x)` that carries noise
(:math:`t = 0`) to data (:math:`t = 1`). At inference time we often want more than a
typical sample: a sample that scores well under a *reward* :math:`r(x)` the model never
saw. This module spends extra model evaluations (NFE, the number of function
evaluations) to get one, on the 2-D mixture world where every answer is known exactly.

One evaluation, three fields
----------------------------
For the Gaussian path :math:`x_t = \sigma_t x_0 + \alpha_t x_1` from standard normal
noise, the velocity, the score :math:`s_t = \nabla\log p_t` and the denoiser
:math:`\hat x_1 = \mathbb{E}[x_1 \mid x_t]` are three linear views of the same
conditional expectation, so one velocity evaluation gives all three:

.. math::

    s_t(x) = \frac{\alpha_t u_t(x) - \dot\alpha_t x}
                  {\sigma_t(\dot\alpha_t\sigma_t - \alpha_t\dot\sigma_t)},
    \qquad
    \hat x_1(x) = \frac{\sigma_t u_t(x) - \dot\sigma_t x}
                       {\dot\alpha_t\sigma_t - \alpha_t\dot\sigma_t}.

(:func:`score_from_velocity`, :func:`denoise_from_velocity`; the denominator is
:math:`\sigma_t^2` times the rate of the signal-to-noise ratio, positive for every
schedule except at :math:`t = 0` of a polynomial path :math:`\alpha_t = t^n,\ n \ne 1`,
where it is 0 or infinite and the methods read the fields at :math:`t = 10^{-6}`.) This
is the design choice of the whole module: a *model* is anything with a
``schedule`` and a ``velocity(t, x)``, the :class:`Flow` protocol, and every method here
reads the score and the denoiser off the velocity, exactly as it would for a trained
network. On the mixture world :class:`MixtureFlow` supplies the exact velocity, and the
two formulas then reproduce :func:`~posteriorlab.core.paths.fields.score` and
:func:`~posteriorlab.core.paths.fields.expected_data` to rounding error.

Why particle methods need an SDE
--------------------------------
The probability-flow ODE is deterministic: a sample is a function of its starting noise.
A particle method that resamples (copies good particles, drops bad ones) then gains
nothing after the first step, because two copies of a particle follow the same path
forever; the only diversity is the initial noise. The score turns the ODE into a family
of SDEs with the *same marginals* :math:`p_t`,

.. math::

    \mathrm{d}X_t = \bigl[u_t(X_t) + \varepsilon_t\, s_t(X_t)\bigr]\mathrm{d}t
                    + \sqrt{2\varepsilon_t}\,\mathrm{d}W_t ,

one for each diffusion level :math:`\varepsilon_t \ge 0`. With
:math:`\varepsilon_t > 0` every step is a genuine Markov kernel that spreads a particle
into a small cloud, so copies made by resampling branch and explore. With the score read
off the velocity, any flow model can be sampled this way (:func:`sample_sde`). Here
:math:`\varepsilon_t = \eta\,\sigma_t^{p}` (:class:`Diffusion`): the noise fades as the
path reaches the data, where the score-from-velocity divides by :math:`\sigma_t`.
(In the notation :math:`g_t^2 = 2\varepsilon_t`; the FLUX experiments of Kim et al.
use :math:`g = 3\sigma^2` on the linear path, i.e. ``Diffusion(4.5, 4.0)``.)

Changing the interpolant at inference time
------------------------------------------
A velocity for one schedule is, after an exact re-timing and re-scaling, a velocity for
any other (:func:`~posteriorlab.core.paths.schedules.change_schedule`). The ODE of the
converted model carries each noise point to the same data point, but its SDE at a given
:math:`\varepsilon` does not inject noise at the same place along the way: the
variance-preserving (VP) schedule spends much more time at low signal-to-noise, so
particles wander further before they commit to a mode. :func:`convert_schedule` wraps a
flow as :class:`ConvertedFlow`; the steering methods accept either.

Optimisation versus sampling
----------------------------
With a reward :math:`r` and a temperature :math:`\lambda > 0` the *tilted* target is

.. math::

    \pi_\lambda(x) = \frac{p(x)\, e^{r(x)/\lambda}}{Z_\lambda},
    \qquad Z_\lambda = \mathbb{E}_p\bigl[e^{r(x)/\lambda}\bigr].

For the observation reward :math:`r(x) = \log\mathcal{N}(y;\, Ax, R)`
(:class:`LinearGaussianReward`) and :math:`\lambda = 1` this is Bayes' rule: the tilted
target is the posterior and :math:`Z_1 = p(y)`. For every :math:`\lambda` it is again a
mixture, the posterior under noise :math:`\lambda R` (:func:`tilted_target`).

The methods answer two different questions, and the lab shows both:

* **Optimisation** -- best-of-N (:func:`best_of_n`) and Rollover Budget Forcing
  (:func:`rollover_budget_forcing`) return the highest-reward sample they can find. As
  the budget grows they climb towards :math:`\max_x r(x)`, which for the observation
  reward is the whole line :math:`Ax = y`; they behave like the tilted target with
  :math:`\lambda \to 0`, not like the posterior.
* **Sampling** -- sequential Monte Carlo (:func:`smc`) returns weighted particles whose
  distribution is :math:`\pi_\lambda`, and an estimate of :math:`\log Z_\lambda`. Its
  error shrinks with the particle count; it does not collapse onto the best point.

SMC on the flow
---------------
Particles move by Euler--Maruyama steps of the SDE above. A reward is only known at the
data end, so each particle is scored on its denoised guess :math:`\hat x_k` and weighted
by the *change* of that score,

.. math::

    G_0 = e^{r(\hat x_0)/\lambda}, \qquad
    G_k = e^{(r(\hat x_k) - r(\hat x_{k-1}))/\lambda}, \qquad
    G_K = e^{(r(x_K) - r(\hat x_{K-1}))/\lambda},

where the last potential uses the reward of the *actual* final state. Along any path
the product telescopes to :math:`e^{r(x_K)/\lambda}`, so whatever the intermediate
scores, the weighted particles target :math:`p_K(x)e^{r(x)/\lambda}` (with :math:`p_K`
the law of the discretised SDE at :math:`t = 1`), and the intermediate scores only
decide *when* the weight is applied, hence which particles resampling keeps. The product
of the average potentials, :math:`\hat Z`, is an unbiased estimate of
:math:`\mathbb{E}_{p_K}[e^{r/\lambda}]`, which tends to :math:`Z_\lambda` as the steps
shrink.

Rollover Budget Forcing (the toy version)
-----------------------------------------
RBF (Kim et al., 2025) follows a single trajectory and spends its budget step by step.
At each step it proposes SDE moves one at a time and scores each on its denoised guess.
As soon as a proposal beats the best reward seen so far it is accepted, and the budget
this step did not use *rolls over* to the next step. If the step's budget runs out
first, the best proposal of the step is taken anyway. Steps where improvement is easy
are passed quickly and the savings go to the steps where it is hard. The published
method stops two steps before the data end and returns the denoised guess there. On the
toy we let it reach :math:`t = 1`, where the denoised guess is the sample itself, and
spend whatever is left on proposals for the last step, so its answer is a true sample
whose reward can be compared with best-of-N at equal NFE. The data-dependent loop is a
``jax.lax.while_loop`` with one proposal (one NFE) per iteration, so the budget is a
traced number and ``max_nfe`` is never exceeded.

Conventions
-----------
Every method is a pure function: the PRNG key comes first and is split into named
sub-keys; weights are kept in log space; results are ``NamedTuple`` values carrying what
a dashboard draws (trajectories of shape ``(steps + 1, n, d)``, ESS, budgets). The flow,
the reward, the temperature, the diffusion and the time grid are pytrees of traced
arrays, so moving any of them never recompiles; the particle count and the number of
steps are shapes and compile once per value::

    run = jax.jit(smc, static_argnames="num_particles")
    result = run(key, MixtureFlow(CondOT(), prior), reward, uniform_times(100),
                 num_particles=512, temperature=1.0)

A flow wrapping a trained network is a pytree too: a ``NamedTuple`` holding the weights
and the schedule, with a ``velocity`` method calling the network (for an equinox module
with non-array fields, jit with ``equinox.filter_jit``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from posteriorlab.core import gmm
from posteriorlab.core.paths import fields, integrators, schedules
from posteriorlab.core.paths.schedules import PathCoefficients, Schedule
from posteriorlab.core.smc import resampling

__all__ = [
    "BestOfNResult",
    "ConvertedFlow",
    "DEFAULT_SDE",
    "Diffusion",
    "Flow",
    "LinearGaussianReward",
    "MixtureFlow",
    "MixtureLookahead",
    "ODE",
    "RBFResult",
    "SMCResult",
    "TiltedTarget",
    "best_of_n",
    "convert_schedule",
    "denoise_from_velocity",
    "linear_gaussian_reward",
    "rollover_budget_forcing",
    "sample_sde",
    "score_from_velocity",
    "smc",
    "tilted_target",
    "velocity_and_score",
]

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------
# Score and denoiser from a velocity
# --------------------------------------------------------------------------------------


def _snr_rate_times_sigma_sq(c: PathCoefficients) -> jax.Array:
    r""":math:`\dot\alpha\sigma - \alpha\dot\sigma`, i.e. :math:`\sigma^2` times the rate of
    :math:`\alpha/\sigma` (positive: the signal-to-noise ratio increases)."""
    return c.alpha_dot * c.sigma - c.alpha * c.sigma_dot


_T_MIN = 1e-6
"""Where a path's velocity says nothing about the data, the fields are read this late."""


def _reading_time(schedule: Schedule, t) -> jax.Array:
    r"""``t``, or ``max(t, 1e-6)`` where :math:`\dot\alpha\sigma - \alpha\dot\sigma` is 0 or
    infinite, so that the score and the denoiser cannot be read off the velocity.

    That happens at :math:`t = 0` on the polynomial path :math:`\alpha_t = t^n`: for
    :math:`n > 1`, :math:`\alpha = \dot\alpha = \dot\sigma = 0` and the velocity vanishes;
    for :math:`n < 1`, :math:`\dot\alpha` is infinite. Elsewhere ``t`` is returned as it is.
    """
    t = jnp.asarray(t, dtype=jnp.result_type(float))
    rate = _snr_rate_times_sigma_sq(schedules.coefficients(schedule, t))
    return jnp.where(jnp.isfinite(rate) & (rate > 0), t, jnp.maximum(t, _T_MIN))


def score_from_velocity(coefficients: PathCoefficients, x, u) -> jax.Array:
    r"""The score :math:`\nabla\log p_t(x)` read off the velocity :math:`u_t(x)`.

    For a standard normal source the velocity and the score are both linear in
    :math:`\mathbb{E}[x_0 \mid x_t = x]` (:math:`u = \dot\sigma\hat x_0 + \dot\alpha\hat
    x_1`, :math:`x = \sigma\hat x_0 + \alpha\hat x_1`, :math:`s = -\hat x_0/\sigma`);
    eliminating :math:`\hat x_1` gives

    .. math::

        s_t(x) = \frac{\alpha_t\, u_t(x) - \dot\alpha_t\, x}
                      {\sigma_t\,(\dot\alpha_t\sigma_t - \alpha_t\dot\sigma_t)} .

    It divides by :math:`\sigma_t`, so an error in a learned velocity is amplified near
    the data end :math:`t = 1`; use it with a diffusion level that vanishes there.

    Parameters
    ----------
    coefficients : PathCoefficients
        :math:`(\alpha_t, \sigma_t, \dot\alpha_t, \dot\sigma_t)` at the time of ``u``
        (:func:`~posteriorlab.core.paths.schedules.coefficients`).
    x, u : array, shape (..., d)
        Points and the velocity there.

    Returns
    -------
    Array, shape (..., d)
    """
    c = coefficients
    return (c.alpha * u - c.alpha_dot * x) / (c.sigma * _snr_rate_times_sigma_sq(c))


def denoise_from_velocity(coefficients: PathCoefficients, x, u) -> jax.Array:
    r"""Tweedie's denoiser :math:`\mathbb{E}[x_1 \mid x_t = x]` read off the velocity.

    .. math::

        \hat x_1(x) = \frac{\sigma_t\, u_t(x) - \dot\sigma_t\, x}
                           {\dot\alpha_t\sigma_t - \alpha_t\dot\sigma_t} .

    No division by :math:`\sigma_t` or :math:`\alpha_t`: it is finite at both ends, and
    at :math:`t = 1` (:math:`\sigma = 0,\ \alpha = 1`) it returns :math:`x` itself.

    Parameters
    ----------
    coefficients : PathCoefficients
    x, u : array, shape (..., d)

    Returns
    -------
    Array, shape (..., d)
    """
    c = coefficients
    return (c.sigma * u - c.sigma_dot * x) / _snr_rate_times_sigma_sq(c)


# --------------------------------------------------------------------------------------
# Flows: velocity-only models
# --------------------------------------------------------------------------------------


class Flow(Protocol):
    """A velocity-only model: its schedule and its velocity field ``(t, x) -> u``.

    To be passed through ``jax.jit`` it must be a pytree (e.g. a ``NamedTuple``).
    """

    schedule: Schedule

    def velocity(self, t, x) -> jax.Array: ...


class MixtureFlow(NamedTuple):
    r"""The exact velocity of the path to a Gaussian mixture, used as a flow model.

    Attributes
    ----------
    schedule : Schedule
        The path :math:`(\alpha_t, \sigma_t)`; the source is :math:`\mathcal{N}(0, I)`.
    target : GaussianMixture
        The data distribution :math:`p_1`.
    """

    schedule: Any
    target: gmm.GaussianMixture

    def velocity(self, t, x) -> jax.Array:
        """:func:`~posteriorlab.core.paths.fields.velocity` of the marginal at ``t``."""
        return fields.velocity(fields.marginal(self.schedule, self.target, t), x)


class ConvertedFlow(NamedTuple):
    r"""A flow re-expressed on another schedule by the exact scale--time change.

    If ``flow`` transports along :math:`(\alpha_t, \sigma_t)`, this flow transports along
    ``schedule`` :math:`(\bar\alpha_r, \bar\sigma_r)` with
    :math:`\bar u_r(x) = (\dot c_r/c_r)\,x + c_r\dot t_r\, u_{t_r}(x/c_r)` (see
    :func:`~posteriorlab.core.paths.schedules.change_schedule`). Each evaluation costs
    one evaluation of the original model.

    Attributes
    ----------
    flow : Flow
        The original model.
    schedule : Schedule
        The new schedule.
    """

    flow: Any
    schedule: Any

    def velocity(self, t, x) -> jax.Array:
        """The converted velocity :math:`\\bar u_t(x)`."""
        converted = schedules.change_schedule(self.flow.velocity, self.flow.schedule, self.schedule)
        return converted(t, x)


def convert_schedule(flow: Flow, schedule: Schedule) -> ConvertedFlow:
    r"""Use ``flow`` on ``schedule`` (for instance a linear/CondOT model on the VP path).

    The probability-flow ODEs of the two share their noise-to-data map when both
    schedules start at pure noise (:math:`\alpha_0 = 0`); the VP schedule of
    :class:`~posteriorlab.core.paths.schedules.VP` starts at :math:`\alpha_0 \approx
    0.0066`, so its map is the original one started at the (tiny) time :math:`t_0` with
    :math:`\alpha_{t_0}/\sigma_{t_0} = \bar\alpha_0/\bar\sigma_0`.
    """
    return ConvertedFlow(flow, schedule)


def velocity_and_score(flow: Flow):
    r"""``(t, x) -> (u_t(x), s_t(x))`` with the score read off the velocity.

    One model evaluation per call; the shape expected by
    :func:`~posteriorlab.core.paths.integrators.euler_maruyama`.
    """

    def both(t, x):
        t = _reading_time(flow.schedule, t)
        u = flow.velocity(t, x)
        return u, score_from_velocity(schedules.coefficients(flow.schedule, t), x, u)

    return both


class Diffusion(NamedTuple):
    r"""The diffusion level :math:`\varepsilon_t = \eta\,\sigma_t^{p}` of the sampling SDE.

    Attributes
    ----------
    level : float or Array
        :math:`\eta \ge 0`; zero gives the probability-flow ODE (Euler steps).
    power : float or Array
        :math:`p \ge 0`. ``0`` is a constant level; ``2`` (default) fades like the path
        noise variance; ``4`` with ``level = 4.5`` is :math:`g = 3\sigma^2`, the FLUX
        setting of Kim et al. on the linear path.
    """

    level: Any = 1.0
    power: Any = 2.0

    def epsilon(self, coefficients: PathCoefficients) -> jax.Array:
        r""":math:`\varepsilon_t` from the schedule's coefficients at :math:`t`."""
        return self.level * coefficients.sigma**self.power


ODE = Diffusion(0.0)
"""No diffusion: sampling follows the probability-flow ODE (Euler steps)."""

DEFAULT_SDE = Diffusion(1.0, 2.0)
r""":math:`\varepsilon_t = \sigma_t^2`, the default of the particle methods."""


def _sde_move(key, flow: Flow, diffusion: Diffusion, t, t_next, x, u) -> jax.Array:
    r"""One Euler--Maruyama step from :math:`t` to :math:`t'`, given :math:`u_t(x)`.

    :math:`x' = x + h[u + \varepsilon_t s] + \sqrt{2\varepsilon_t h}\,\xi`. The velocity
    is an input so that the evaluation made to score the point is reused for moving it.
    """
    c = schedules.coefficients(flow.schedule, _reading_time(flow.schedule, t))  # where u was read
    epsilon = diffusion.epsilon(c)
    h = t_next - t
    drift = u + epsilon * score_from_velocity(c, x, u)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x + h * drift + jnp.sqrt(2.0 * epsilon * h) * noise


def _initial_noise(key, flow: Flow, times, num: int, dim: int) -> jax.Array:
    r""":math:`x = \sigma_{t_0} z`, :math:`z \sim \mathcal{N}(0, I)`: exact when
    :math:`\alpha_{t_0} = 0`, the usual approximation otherwise (VP: :math:`\alpha_0
    \approx 0.007`)."""
    sigma = schedules.coefficients(flow.schedule, times[0]).sigma
    return sigma * jax.random.normal(key, (num, dim), times.dtype)


def sample_sde(
    key: jax.Array, flow: Flow, times, num_samples: int, dim: int, diffusion: Diffusion
) -> jax.Array:
    r"""Sample a velocity-only model with the same-marginals SDE (Euler--Maruyama).

    Starts at :math:`\sigma_{t_0}z` and uses
    :func:`~posteriorlab.core.paths.integrators.euler_maruyama` with the score from
    :func:`score_from_velocity` and :math:`\varepsilon_t` from ``diffusion``. One model
    evaluation per sample per step; ``Diffusion(0.0)`` gives Euler's method for the ODE.

    Parameters
    ----------
    key : PRNG key
    flow : Flow
    times : array, shape (steps + 1,)
        Increasing grid from the noise end to the data end (``times[-1] = 1``).
    num_samples, dim : int
        Static shapes.
    diffusion : Diffusion

    Returns
    -------
    Array, shape (steps + 1, num_samples, dim)
        The trajectory; ``[-1]`` are the samples.
    """
    key_start, key_path = jax.random.split(key)
    times = jnp.asarray(times, dtype=jnp.result_type(float))
    x0 = _initial_noise(key_start, flow, times, num_samples, dim)

    def epsilon(t):
        return diffusion.epsilon(schedules.coefficients(flow.schedule, t))

    return integrators.euler_maruyama(key_path, velocity_and_score(flow), epsilon, x0, times)


# --------------------------------------------------------------------------------------
# Reward and the exact tilted target
# --------------------------------------------------------------------------------------


class LinearGaussianReward(NamedTuple):
    r"""The observation reward :math:`r(x) = \log\mathcal{N}(y;\, Ax, R)`.

    Attributes
    ----------
    A : Array, shape (m, d)
    noise_cov : Array, shape (m, m)
        :math:`R`, positive definite.
    y : Array, shape (m,)
    """

    A: jax.Array
    noise_cov: jax.Array
    y: jax.Array

    def __call__(self, x) -> jax.Array:
        """The reward at points of shape ``(..., d)``; returns shape ``(...)``."""
        x = jnp.asarray(x)
        num_obs = self.y.shape[-1]
        residuals = (self.y - x @ self.A.T).reshape(-1, num_obs)
        chol = jnp.linalg.cholesky(self.noise_cov)
        whitened = solve_triangular(chol, residuals.T, lower=True).T
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol)))
        log_density = -0.5 * jnp.sum(whitened**2, axis=-1) - half_log_det - 0.5 * num_obs * _LOG_2PI
        return log_density.reshape(x.shape[:-1])


def linear_gaussian_reward(A, noise_cov, y) -> LinearGaussianReward:
    r"""Build a :class:`LinearGaussianReward`, promoting shapes like
    :func:`~posteriorlab.core.gmm.condition_on_linear_gaussian`.

    A vector ``A`` is one row, a scalar ``noise_cov`` means :math:`R\,I_m` and a scalar
    ``y`` means :math:`m = 1`. Only shapes are checked, so values may be traced.
    """
    A = jnp.asarray(A, dtype=jnp.result_type(float))
    A = A[None, :] if A.ndim == 1 else A
    if A.ndim != 2:
        raise ValueError(f"A has shape {A.shape}; it must be a matrix (m, d) or a row (d,).")
    num_obs = A.shape[0]
    noise_cov = jnp.asarray(noise_cov, dtype=A.dtype)
    if noise_cov.ndim == 0:
        noise_cov = noise_cov * jnp.eye(num_obs, dtype=A.dtype)
    y = jnp.atleast_1d(jnp.asarray(y, dtype=A.dtype))
    if noise_cov.shape != (num_obs, num_obs) or y.shape != (num_obs,):
        raise ValueError(
            f"A has {num_obs} rows, so noise_cov must be ({num_obs}, {num_obs}) (or a scalar) "
            f"and y must have length {num_obs}; got noise_cov {noise_cov.shape}, y {y.shape}."
        )
    return LinearGaussianReward(A, noise_cov, y)


class TiltedTarget(NamedTuple):
    r"""The exact tilted target :math:`\pi_\lambda \propto p\,e^{r/\lambda}` and its
    normaliser.

    Attributes
    ----------
    mixture : GaussianMixture
        :math:`\pi_\lambda`, the posterior of the prior under observation noise
        :math:`\lambda R`.
    log_normalizer : Array, shape ()
        :math:`\log Z_\lambda = \log\mathbb{E}_p[e^{r(x)/\lambda}]`.
    """

    mixture: gmm.GaussianMixture
    log_normalizer: jax.Array


def tilted_target(
    prior: gmm.GaussianMixture, reward: LinearGaussianReward, temperature
) -> TiltedTarget:
    r"""The prior tilted by the observation reward at temperature :math:`\lambda`.

    Raising a Gaussian likelihood to the power :math:`1/\lambda` widens it:

    .. math::

        e^{r(x)/\lambda} = \mathcal{N}(y;\, Ax, R)^{1/\lambda}
        = c_\lambda\, \mathcal{N}(y;\, Ax, \lambda R),\qquad
        \log c_\lambda = \bigl(1 - \tfrac1\lambda\bigr)\tfrac12\log\det(2\pi R)
                       + \tfrac m2 \log\lambda ,

    (compare the exponents :math:`-q/(2\lambda)`, :math:`q = \lVert y - Ax\rVert_{R^{-1}}^2`,
    and the normalising constants). So :math:`\pi_\lambda` is Bayes' posterior under
    noise :math:`\lambda R` (a mixture, by
    :func:`~posteriorlab.core.gmm.condition_on_linear_gaussian`) and

    .. math::

        \log Z_\lambda = \log c_\lambda + \log p_{\lambda R}(y),

    with :math:`p_{\lambda R}(y)` the evidence under noise :math:`\lambda R`. At
    :math:`\lambda = 1`, :math:`c_1 = 1`: the posterior and :math:`\log p(y)`.

    Parameters
    ----------
    prior : GaussianMixture
    reward : LinearGaussianReward
    temperature : float or Array
        :math:`\lambda > 0`; traced.

    Returns
    -------
    TiltedTarget
    """
    temperature = jnp.asarray(temperature, dtype=reward.noise_cov.dtype)
    widened = temperature * reward.noise_cov
    log_evidence = gmm.log_marginal_likelihood(prior, reward.A, widened, reward.y)
    return TiltedTarget(
        mixture=gmm.condition_on_linear_gaussian(prior, reward.A, widened, reward.y),
        log_normalizer=_log_tilt_constant(reward, temperature) + log_evidence,
    )


def _log_tilt_constant(reward: LinearGaussianReward, temperature) -> jax.Array:
    r""":math:`\log c_\lambda = (1 - 1/\lambda)\tfrac12\log\det(2\pi R) + \tfrac m2\log\lambda`."""
    num_obs = reward.y.shape[0]
    chol = jnp.linalg.cholesky(reward.noise_cov)
    half_log_det_2pi_r = jnp.sum(jnp.log(jnp.diagonal(chol))) + 0.5 * num_obs * _LOG_2PI
    return (1.0 - 1.0 / temperature) * half_log_det_2pi_r + 0.5 * num_obs * jnp.log(temperature)


class MixtureLookahead(NamedTuple):
    r"""The exact lookahead :math:`h_t(x) = \log\mathbb{E}[e^{r(x_1)/\lambda} \mid x_t = x]`.

    For the observation reward, :math:`e^{r/\lambda} = c_\lambda\,\mathcal{N}(y; Ax,
    \lambda R)` (:func:`tilted_target`), so

    .. math::

        h_t(x) = \log c_\lambda + \log p_t(y \mid x_t = x)\big|_{\text{noise } \lambda R},

    the likelihood of the observation seen from a noisy point
    (:func:`~posteriorlab.core.paths.fields.observation_log_likelihood`). Under the exact
    SDE, :math:`e^{h_t(X_t)}` is a martingale: the optimal "twist" for :func:`smc`, known
    here only because the world is a mixture. At :math:`t = 0` (CondOT) it is
    :math:`\log Z_\lambda` for every particle, at :math:`t = 1` it is :math:`r/\lambda`.

    Attributes
    ----------
    schedule : Schedule
        The schedule of the flow being steered (for a :class:`ConvertedFlow`, the new one).
    prior : GaussianMixture
    reward : LinearGaussianReward
    """

    schedule: Any
    prior: gmm.GaussianMixture
    reward: LinearGaussianReward

    def __call__(self, t, x, temperature) -> jax.Array:
        """:math:`h_t` at points ``x`` of shape ``(..., d)``."""
        temperature = jnp.asarray(temperature, dtype=self.reward.noise_cov.dtype)
        widened = temperature * self.reward.noise_cov
        observed = fields.observation_log_likelihood(
            self.schedule, self.prior, t, self.reward.A, widened, self.reward.y, x
        )
        return _log_tilt_constant(self.reward, temperature) + observed


# --------------------------------------------------------------------------------------
# Shared pieces of the methods
# --------------------------------------------------------------------------------------


class _Evaluation(NamedTuple):
    velocity: jax.Array  # u_t(x), the one model evaluation (zeros at the data end)
    denoised: jax.Array  # the denoised guess of x_1 (x itself at the data end)
    reward: jax.Array  # r(denoised)


def _evaluate(flow: Flow, reward, t, x) -> _Evaluation:
    """One model evaluation inside the path: velocity, denoised guess and its reward."""
    t = _reading_time(flow.schedule, t)
    u = flow.velocity(t, x)
    denoised = denoise_from_velocity(schedules.coefficients(flow.schedule, t), x, u)
    return _Evaluation(u, denoised, reward(denoised))


def _evaluate_at_data_end(reward, x) -> _Evaluation:
    """At t = 1 the denoised guess is the point itself: no model evaluation is needed."""
    return _Evaluation(jnp.zeros_like(x), x, reward(x))


def _as_times(times) -> jax.Array:
    times = jnp.asarray(times, dtype=jnp.result_type(float))
    if times.ndim != 1 or times.shape[0] < 2:
        raise ValueError(
            f"times has shape {times.shape}; pass an increasing grid of at least two times "
            "from the noise end to t = 1, e.g. integrators.uniform_times(50)."
        )
    return times


def _dimension(flow: Flow, dim: int | None) -> int:
    """The sample dimension: ``dim`` if given, else that of the mixture a flow wraps."""
    if dim is not None:
        return dim
    if isinstance(flow, MixtureFlow):
        return flow.target.means.shape[-1]
    if isinstance(flow, ConvertedFlow):
        return _dimension(flow.flow, None)
    raise ValueError(
        f"Cannot tell the sample dimension of a {type(flow).__name__}; pass dim=d, the "
        "length of one sample."
    )


# --------------------------------------------------------------------------------------
# Best-of-N
# --------------------------------------------------------------------------------------


class BestOfNResult(NamedTuple):
    r"""What :func:`best_of_n` returns.

    Attributes
    ----------
    best : Array, shape (d,)
        The candidate with the highest reward.
    best_reward : Array, shape ()
    best_index : Array, shape ()
    samples : Array, shape (N, d)
        All candidates (samples at :math:`t = 1`).
    rewards : Array, shape (N,)
        :math:`r` at every candidate.
    log_weights : Array, shape (N,)
        :math:`r/\lambda`: the candidates as an importance sample of :math:`\pi_\lambda`.
    log_evidence : Array, shape ()
        :math:`\log\frac1N\sum_i e^{r_i/\lambda}`, the plain Monte Carlo estimate of
        :math:`\log Z_\lambda` (unbiased before the log).
    trajectory : Array, shape (steps + 1, N, d)
    nfe : Array, shape ()
        :math:`N \times` steps.
    """

    best: jax.Array
    best_reward: jax.Array
    best_index: jax.Array
    samples: jax.Array
    rewards: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array
    trajectory: jax.Array
    nfe: jax.Array


def best_of_n(
    key: jax.Array,
    flow: Flow,
    reward,
    times,
    *,
    num_samples: int,
    diffusion: Diffusion = ODE,
    temperature=1.0,
    dim: int | None = None,
) -> BestOfNResult:
    r"""Generate :math:`N` samples independently and keep the one with the highest reward.

    .. math::

        x^\star = \arg\max_{i \le N} r(x^i), \qquad x^i \sim p_K \text{ i.i.d.}

    The expected best reward grows with :math:`N` towards :math:`\sup r`, so best-of-N
    *optimises*; its answer is not a posterior sample. The same candidates, weighted by
    :math:`e^{r/\lambda}`, are a (poor, for large rewards) importance sample of
    :math:`\pi_\lambda`, reported as ``log_weights`` and ``log_evidence``.

    Parameters
    ----------
    key : PRNG key
    flow : Flow
    reward : callable pytree ``x (..., d) -> (...)``, e.g. :class:`LinearGaussianReward`
    times : array, shape (steps + 1,)
    num_samples : int
        :math:`N`, static.
    diffusion : Diffusion, default ``Diffusion(0.0)``
        Zero level: ODE (Euler) generation; positive: SDE generation.
    temperature : float or Array, default 1
        :math:`\lambda`, only for ``log_weights`` and ``log_evidence``.
    dim : int, optional
        Sample dimension; read from ``flow.target`` when omitted.

    Returns
    -------
    BestOfNResult
    """
    times = _as_times(times)
    trajectory = sample_sde(key, flow, times, num_samples, _dimension(flow, dim), diffusion)
    samples = trajectory[-1]
    rewards = reward(samples)
    best_index = jnp.argmax(rewards)
    log_weights = rewards / temperature
    return BestOfNResult(
        best=samples[best_index],
        best_reward=rewards[best_index],
        best_index=best_index,
        samples=samples,
        rewards=rewards,
        log_weights=log_weights,
        log_evidence=logsumexp(log_weights) - jnp.log(num_samples),
        trajectory=trajectory,
        nfe=jnp.asarray(num_samples * (times.shape[0] - 1)),
    )


# --------------------------------------------------------------------------------------
# Sequential Monte Carlo over SDE steps
# --------------------------------------------------------------------------------------


class SMCResult(NamedTuple):
    r"""What :func:`smc` returns.

    Attributes
    ----------
    particles : Array, shape (N, d)
        Final particles at :math:`t = 1`.
    log_weights : Array, shape (N,)
        Their normalised log-weights; with ``particles`` they target
        :math:`\pi_\lambda` (up to the SDE's discretisation).
    rewards : Array, shape (N,)
        :math:`r` at the final particles.
    log_evidence : Array, shape ()
        :math:`\log\hat Z`, estimating :math:`\log Z_\lambda`.
    ess : Array, shape (steps + 1,)
        Effective sample size after each reweighting (index 0: the initial weights).
    resampled : Array, shape (steps,)
        Whether step :math:`k` began by resampling.
    ancestors : Array, shape (steps, N)
        Parent of each particle at each step (identity when not resampled); see
        :func:`posteriorlab.core.smc.filtering.trace_lineages`.
    trajectory : Array, shape (steps + 1, N, d)
        Particle positions after each move (before the next resampling).
    denoised : Array, shape (steps + 1, N, d)
        The denoised guesses :math:`\hat x_k` the rewards were computed on (the last is
        the final state).
    nfe : Array, shape ()
        :math:`N \times` steps.
    """

    particles: jax.Array
    log_weights: jax.Array
    rewards: jax.Array
    log_evidence: jax.Array
    ess: jax.Array
    resampled: jax.Array
    ancestors: jax.Array
    trajectory: jax.Array
    denoised: jax.Array
    nfe: jax.Array


class _SMCState(NamedTuple):
    x: jax.Array  # (N, d) positions at t_k
    u: jax.Array  # (N, d) velocity there
    reward: jax.Array  # (N,) r(denoised x_k)
    lookahead: jax.Array  # (N,) h_k(x_k), the log-potential scale (already divided by lambda)
    log_weights: jax.Array  # (N,) normalised
    log_evidence: jax.Array  # ()


def _smc_step(key, state: _SMCState, t, t_next, at_data_end, flow, reward, temperature,
              diffusion, ess_threshold, lookahead):  # fmt: skip
    """Resample if the ESS is low, move one SDE step, reweight by the lookahead change."""
    key_resample, key_move = jax.random.split(key)
    num = state.x.shape[0]
    resample = resampling.effective_sample_size(state.log_weights) < ess_threshold * num
    drawn = resampling.systematic(key_resample, jnp.exp(state.log_weights), num)
    ancestors = jnp.where(resample, drawn, jnp.arange(num))
    uniform = jnp.full((num,), -jnp.log(num), state.log_weights.dtype)
    log_weights = jnp.where(resample, uniform, state.log_weights)
    x, u, previous = state.x[ancestors], state.u[ancestors], state.lookahead[ancestors]

    x_next = _sde_move(key_move, flow, diffusion, t, t_next, x, u)

    def inside(x):
        evaluation = _evaluate(flow, reward, t_next, x)
        if lookahead is None:
            return evaluation, evaluation.reward / temperature
        return evaluation, lookahead(t_next, x, temperature)

    def at_end(x):  # the potentials must telescope to exp(r(x_K) / lambda)
        evaluation = _evaluate_at_data_end(reward, x)
        return evaluation, evaluation.reward / temperature

    evaluation, lookahead_next = jax.lax.cond(at_data_end, at_end, inside, x_next)
    log_potentials = lookahead_next - previous
    increment = logsumexp(log_weights + log_potentials)
    new_state = _SMCState(
        x=x_next,
        u=evaluation.velocity,
        reward=evaluation.reward,
        lookahead=lookahead_next,
        log_weights=log_weights + log_potentials - increment,
        log_evidence=state.log_evidence + increment,
    )
    ess = resampling.effective_sample_size(new_state.log_weights)
    return new_state, (x_next, ess, resample, ancestors, evaluation.denoised)


def smc(
    key: jax.Array,
    flow: Flow,
    reward,
    times,
    *,
    num_particles: int,
    temperature=1.0,
    diffusion: Diffusion = DEFAULT_SDE,
    ess_threshold=0.5,
    lookahead=None,
    dim: int | None = None,
) -> SMCResult:
    r"""Sequential Monte Carlo towards :math:`\pi_\lambda \propto p\,e^{r/\lambda}` along
    the SDE of a flow.

    Start :math:`N` particles at :math:`\sigma_{t_0}z`, weight them by
    :math:`G_0 = e^{r(\hat x_0)/\lambda}`, then for :math:`k = 0, \dots, K-1`:

    1. resample (systematic) when :math:`\mathrm{ESS} < \kappa N`;
    2. move by one Euler--Maruyama step of the same-marginals SDE, the score read off the
       velocity (:func:`score_from_velocity`);
    3. evaluate the model at the new point: its velocity (for the next move) and the
       denoised guess :math:`\hat x_{k+1}` (:func:`denoise_from_velocity`); at
       :math:`t_K = 1` the guess is the final state itself;
    4. multiply the weight by :math:`G_{k+1} = e^{(r(\hat x_{k+1}) - r(\hat x_k))/\lambda}`
       and the evidence by the weighted mean potential.

    The potentials telescope to :math:`e^{r(x_K)/\lambda}` along every path, so the final
    weighted particles target :math:`p_K e^{r/\lambda}` and
    :math:`\hat Z = \prod_k \sum_i W_{k-1}^i G_k^i` is unbiased for
    :math:`\mathbb{E}_{p_K}[e^{r/\lambda}]`. With ``diffusion.level = 0`` (the ODE) copies
    made by resampling never separate again; keep the level positive.

    The intermediate scores :math:`h_k = r(\hat x_k)/\lambda` are a guess of how promising
    a particle is. The reward of the *average* outcome overrates particles whose possible
    outcomes straddle the reward's peak (a point between two modes can denoise onto the
    line :math:`Ax = y` although neither mode lies there), so resampling on them
    over-exploits and the evidence estimate becomes noisy. The perfect guess is the
    *lookahead* :math:`h_t(x) = \log\mathbb{E}[e^{r(x_1)/\lambda} \mid x_t = x]`, which
    turns the weights into a martingale; pass it as ``lookahead`` (on the mixture world:
    :class:`MixtureLookahead`) to compare. Whatever the lookahead, the last potential uses
    :math:`r(x_K)/\lambda`, so the target and :math:`\mathbb{E}\hat Z` do not change.

    Parameters
    ----------
    key : PRNG key
    flow : Flow
    reward : callable pytree ``x (..., d) -> (...)``
    times : array, shape (K + 1,)
        Increasing grid from the noise end to ``times[-1] = 1``; traced, its length static.
    num_particles : int
        :math:`N`, static.
    temperature : float or Array, default 1
        :math:`\lambda > 0` (Kim et al.'s ``reward_weight``).
    diffusion : Diffusion, default ``Diffusion(1.0)``
    ess_threshold : float or Array, default 0.5
        :math:`\kappa`: 0 never resamples, 1 resamples whenever weights are unequal.
    lookahead : callable pytree ``(t, x, temperature) -> h``, optional
        Replaces :math:`r(\hat x_k)/\lambda` as the intermediate log-potential scale
        (e.g. :class:`MixtureLookahead`). The model is evaluated all the same.
    dim : int, optional
        Sample dimension; read from ``flow.target`` when omitted.

    Returns
    -------
    SMCResult
    """
    times = _as_times(times)
    num_steps = times.shape[0] - 1
    key_start, key_steps = jax.random.split(key)
    x0 = _initial_noise(key_start, flow, times, num_particles, _dimension(flow, dim))
    start = _evaluate(flow, reward, times[0], x0)
    if lookahead is None:
        log_potentials = start.reward / temperature
    else:
        log_potentials = lookahead(times[0], x0, temperature)
    state = _SMCState(
        x=x0,
        u=start.velocity,
        reward=start.reward,
        lookahead=log_potentials,
        log_weights=log_potentials - logsumexp(log_potentials),
        log_evidence=logsumexp(log_potentials) - jnp.log(num_particles),
    )

    def advance(state, inputs):
        step_key, t, t_next, at_data_end = inputs
        return _smc_step(step_key, state, t, t_next, at_data_end, flow, reward, temperature,
                         diffusion, ess_threshold, lookahead)  # fmt: skip

    at_data_end = jnp.arange(1, num_steps + 1) == num_steps
    step_keys = jax.random.split(key_steps, num_steps)
    final, (path, ess, resampled, ancestors, denoised) = jax.lax.scan(
        advance, state, (step_keys, times[:-1], times[1:], at_data_end)
    )
    ess0 = resampling.effective_sample_size(state.log_weights)
    return SMCResult(
        particles=final.x,
        log_weights=final.log_weights,
        rewards=final.reward,
        log_evidence=final.log_evidence,
        ess=jnp.concatenate([ess0[None], ess]),
        resampled=resampled,
        ancestors=ancestors,
        trajectory=jnp.concatenate([x0[None], path]),
        denoised=jnp.concatenate([start.denoised[None], denoised]),
        nfe=jnp.asarray(num_particles * num_steps),
    )


# --------------------------------------------------------------------------------------
# Rollover Budget Forcing
# --------------------------------------------------------------------------------------


class RBFResult(NamedTuple):
    r"""What :func:`rollover_budget_forcing` returns.

    Attributes
    ----------
    sample : Array, shape (d,)
        The answer: the best proposal at the last step reached, a sample at :math:`t = 1`
        whenever the budget allows (``max_nfe >= num_initial + steps``).
    denoised : Array, shape (d,)
        Its denoised guess (equal to ``sample`` at :math:`t = 1`).
    reward : Array, shape ()
        :math:`r` at ``denoised``.
    time : Array, shape ()
        The time of ``sample``.
    best_reward : Array, shape ()
        The best reward seen anywhere in the search (may belong to an earlier, blurrier
        denoised guess than the answer's).
    nfe : Array, shape ()
        Model evaluations used, never more than ``max_nfe``.
    budget_used : Array, shape (steps,)
        Proposals spent at each step (the last step gets what is left over).
    trajectory : Array, shape (steps + 1, 1, d)
        The accepted state at each time (NaN for times never reached).
    candidates : Array, shape (record_size, d)
        Every proposal in order, as far as the record holds (NaN beyond).
    candidate_steps : Array, shape (record_size,)
        The step index :math:`k` each proposal moved to (its time is ``times[k]``), -1
        beyond the record.
    candidate_rewards : Array, shape (record_size,)
        Their rewards (NaN beyond the record).
    """

    sample: jax.Array
    denoised: jax.Array
    reward: jax.Array
    time: jax.Array
    best_reward: jax.Array
    nfe: jax.Array
    budget_used: jax.Array
    trajectory: jax.Array
    candidates: jax.Array
    candidate_steps: jax.Array
    candidate_rewards: jax.Array


class _RBFState(NamedTuple):
    key: jax.Array
    step: jax.Array  # current level k: the state sits at times[k]
    x: jax.Array  # (d,) accepted state
    u: jax.Array  # (d,) velocity there
    x_denoised: jax.Array  # (d,) its denoised guess
    x_reward: jax.Array  # () its reward
    best_reward: jax.Array  # () best reward seen so far (the rollover test)
    budget: jax.Array  # () proposals allowed at this step
    used: jax.Array  # () proposals made at this step
    top: tuple  # best proposal of this step: (x, u, denoised, reward)
    nfe: jax.Array
    budget_used: jax.Array  # (K,)
    trajectory: jax.Array  # (K + 1, d)
    record: tuple  # (candidates, steps, rewards)


def _check_budget(max_nfe, num_initial: int, num_steps: int) -> None:
    """Reject a budget too small to reach t = 1, when the budget is a concrete number."""
    if isinstance(max_nfe, jax.core.Tracer):
        return
    if int(max_nfe) < num_initial + num_steps:
        raise ValueError(
            f"max_nfe = {int(max_nfe)} cannot pay for {num_initial} initial samples and one "
            f"proposal at each of the {num_steps} steps; use max_nfe >= "
            f"{num_initial + num_steps}, or fewer steps or initial samples."
        )


def rollover_budget_forcing(
    key: jax.Array,
    flow: Flow,
    reward,
    times,
    *,
    max_nfe,
    num_initial: int,
    diffusion: Diffusion = DEFAULT_SDE,
    dim: int | None = None,
    record_size: int = 256,
) -> RBFResult:
    r"""Rollover Budget Forcing: greedy SDE search with a per-step budget that rolls over.

    With :math:`K` steps and budget :math:`B` (``max_nfe``), each step is allowed
    :math:`b_0 = \lfloor (B - N_0)/K \rfloor` proposals.

    1. Draw :math:`N_0` starting points, evaluate each (velocity, denoised guess, reward)
       and keep the best.
    2. At step :math:`k`, propose :math:`x' \sim` one SDE step from the current state to
       :math:`t_{k+1}`, evaluate it (one NFE) and score its denoised guess (at
       :math:`t_{k+1} = 1`, the point itself).
    3. If :math:`r(x')` beats the best reward seen so far, accept :math:`x'` at once and
       move to step :math:`k+1` with budget :math:`b_0 + (\text{budget} - \text{used})`
       (the rollover). If instead this step's budget is used up, move on with the step's
       best proposal and budget :math:`b_0`.
    4. At the last step there is nowhere to move: the remaining budget keeps proposing
       final samples from the same state, and the best of them is the answer.

    Rollover only passes on unused budget, so the first :math:`K - 1` steps spend at most
    :math:`(K-1)b_0` and the last step always gets at least :math:`b_0 \ge 1` proposals.
    Each loop iteration is one proposal and one NFE (the proposals of the last step are
    charged one NFE each too, although at :math:`t = 1` a real model could skip the
    evaluation), and the loop stops at ``max_nfe``.

    Parameters
    ----------
    key : PRNG key
    flow : Flow
    reward : callable pytree ``x (..., d) -> (...)``
    times : array, shape (K + 1,)
    max_nfe : int or Array
        Total budget :math:`B`; traced (no recompilation when it changes), at least
        ``num_initial + K``.
    num_initial : int
        :math:`N_0`, static.
    diffusion : Diffusion, default ``Diffusion(1.0)``
        Must be positive for proposals to differ.
    dim : int, optional
    record_size : int, default 256
        How many proposals to keep for drawing (static); later ones are not recorded.

    Returns
    -------
    RBFResult
    """
    times = _as_times(times)
    num_steps = times.shape[0] - 1
    _check_budget(max_nfe, num_initial, num_steps)
    dim = _dimension(flow, dim)
    max_nfe = jnp.asarray(max_nfe, dtype=jnp.int32)
    per_step = (max_nfe - num_initial) // num_steps
    key_start, key_search = jax.random.split(key)

    x0 = _initial_noise(key_start, flow, times, num_initial, dim)
    u0, denoised0, reward0 = _evaluate(flow, reward, times[0], x0)
    first = jnp.argmax(reward0)
    nan = jnp.array(jnp.nan, times.dtype)
    zero_int = jnp.zeros((), jnp.int32)
    state = _RBFState(
        key=key_search,
        step=zero_int,
        x=x0[first],
        u=u0[first],
        x_denoised=denoised0[first],
        x_reward=reward0[first],
        best_reward=reward0[first],
        budget=per_step,
        used=zero_int,
        top=(x0[first], u0[first], denoised0[first], jnp.array(-jnp.inf, times.dtype)),
        nfe=jnp.asarray(num_initial, jnp.int32),
        budget_used=jnp.zeros((num_steps,), jnp.int32),
        trajectory=jnp.full((num_steps + 1, dim), nan).at[0].set(x0[first]),
        record=(
            jnp.full((record_size, dim), nan),
            jnp.full((record_size,), -1, jnp.int32),
            jnp.full((record_size,), nan),
        ),
    )

    def propose(state: _RBFState) -> _RBFState:
        key, key_move = jax.random.split(state.key)
        k = state.step
        final_step = k == num_steps - 1
        x_new = _sde_move(key_move, flow, diffusion, times[k], times[k + 1], state.x, state.u)
        u_new, denoised, r_new = jax.lax.cond(
            final_step,
            lambda x: _evaluate_at_data_end(reward, x),
            lambda x: _evaluate(flow, reward, times[k + 1], x),
            x_new,
        )

        better_than_top = r_new > state.top[3]
        top = jax.tree.map(
            lambda new, old: jnp.where(better_than_top, new, old),
            (x_new, u_new, denoised, r_new),
            state.top,
        )
        improved = r_new > state.best_reward
        used = state.used + 1
        move_on = (improved | (used >= state.budget)) & ~final_step
        index = state.nfe - num_initial
        candidates, steps, rewards = state.record
        record = (
            candidates.at[index].set(x_new, mode="drop"),
            steps.at[index].set(k + 1, mode="drop"),
            rewards.at[index].set(r_new, mode="drop"),
        )
        next_budget = jnp.where(improved, per_step + state.budget - used, per_step)
        next_step = jnp.where(move_on, k + 1, k)

        def on_move(new, old):
            return jnp.where(move_on, new, old)

        return _RBFState(
            key=key,
            step=next_step,
            x=on_move(top[0], state.x),
            u=on_move(top[1], state.u),
            x_denoised=on_move(top[2], state.x_denoised),
            x_reward=on_move(top[3], state.x_reward),
            best_reward=jnp.maximum(state.best_reward, r_new),
            budget=on_move(next_budget, state.budget),
            used=on_move(zero_int, used),
            top=(*top[:3], jnp.where(move_on, -jnp.inf, top[3])),  # a new step starts empty
            nfe=state.nfe + 1,
            budget_used=state.budget_used.at[k].add(1),
            trajectory=state.trajectory.at[next_step].set(
                jnp.where(move_on, top[0], state.trajectory[next_step])
            ),
            record=record,
        )

    final = jax.lax.while_loop(lambda s: s.nfe < max_nfe, propose, state)
    proposed = final.top[3] > -jnp.inf  # the current step has at least one proposal
    sample = jnp.where(proposed, final.top[0], final.x)
    denoised = jnp.where(proposed, final.top[2], final.x_denoised)
    trajectory = final.trajectory.at[final.step + 1].set(
        jnp.where(proposed, final.top[0], final.trajectory[final.step + 1]), mode="drop"
    )
    return RBFResult(
        sample=sample,
        denoised=denoised,
        reward=jnp.where(proposed, final.top[3], final.x_reward),
        time=times[jnp.where(proposed, final.step + 1, final.step)],
        best_reward=final.best_reward,
        nfe=final.nfe,
        budget_used=final.budget_used,
        trajectory=trajectory[:, None, :],
        candidates=final.record[0],
        candidate_steps=final.record[1],
        candidate_rewards=final.record[2],
    )
