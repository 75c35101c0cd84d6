r"""State-space models: the objects a particle filter runs on.

A state-space model (also called a hidden Markov model with continuous states) is a
Markov chain :math:`x_0, x_1, \dots` that we never see, and observations
:math:`y_0, y_1, \dots` that each depend on the current state only:

.. math::

    x_0 \sim \mu(x_0), \qquad
    x_t \mid x_{t-1} \sim f_t(x_t \mid x_{t-1}), \qquad
    y_t \mid x_t \sim g_t(y_t \mid x_t).

Filtering means computing :math:`p(x_t \mid y_{0:t})` for each :math:`t`, and the
likelihood (evidence) :math:`p(y_{0:T})` on the way. For a linear-Gaussian model the
Kalman filter does this exactly; for every other model we approximate it with particles.

The three ingredients :math:`\mu, f, g` are all a particle filter needs: it samples from
:math:`\mu` and :math:`f` and evaluates :math:`\log g` (the bootstrap filter), or samples
from a better proposal and evaluates all three densities to correct for it.

Representation
--------------
A model here is a ``NamedTuple`` whose fields are its parameters and whose methods are
its densities. Because a ``NamedTuple`` is a JAX pytree, a model can be passed as an
argument to a jitted function: its parameters are then traced values, so moving a slider
(``rho`` from 0.9 to 0.8) reuses the compiled code instead of recompiling. Fields may be
Python floats or JAX arrays.

Shapes are fixed across models so that algorithms never special-case the dimension:

* a batch of states is ``(N, d)``, with ``d = 1`` for univariate models;
* an observation is ``(k,)`` and a sequence of them ``(T, k)``;
* the time index ``t`` is an integer, possibly traced;
* log-densities broadcast over leading dimensions, so
  ``model.log_prob_transition(t, x[:, None], x[None, :])`` is the ``(N, N)`` matrix of
  :math:`\log f_t(x^j \mid x^i)` that backward smoothers need.

Models
------
:class:`LinearGaussianSSM`
    The exact world: linear dynamics, Gaussian noise, a Kalman filter to compare with.
    It also knows its locally optimal proposal :math:`p(x_t \mid x_{t-1}, y_t)`.
    Build it with :func:`linear_gaussian_1d` or :func:`linear_gaussian_2d`.
:class:`StochasticVolatilitySSM`
    A latent log-volatility drives the variance of (financial) returns.
:class:`GrowthModelSSM`
    A strongly nonlinear benchmark whose filtering distribution is often bimodal.

The univariate models carry their default parameters, so ``StochasticVolatilitySSM()``
is the textbook model; the linear-Gaussian models are built by functions because their
fields are matrices.

Recommended import::

    from posteriorlab.core.smc import models

    model = models.linear_gaussian_1d(rho=0.9, sigma_x=1.0, sigma_y=0.2)
    states, observations = model.simulate(key, 50)
"""

from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array
from jax.scipy.linalg import solve_triangular
from jax.typing import ArrayLike

__all__ = [
    "GrowthModelSSM",
    "LinearGaussianSSM",
    "StateSpaceModel",
    "StochasticVolatilitySSM",
    "gaussian_log_prob",
    "linear_gaussian_1d",
    "linear_gaussian_2d",
    "sample_gaussian",
]


class StateSpaceModel(Protocol):
    """What every model in this module provides (a structural type, for annotations).

    ``x`` is a batch of states ``(..., d)``, ``y`` one observation ``(k,)`` and ``t`` the
    integer time index. Log-densities return one value per state, ``(...)``.
    """

    state_dim: int
    obs_dim: int

    def sample_initial(self, key: Array, num_particles: int) -> Array:
        """Draw ``num_particles`` states from :math:`\\mu`, shape ``(N, d)``."""

    def log_prob_initial(self, x: ArrayLike) -> Array:
        """:math:`\\log \\mu(x)`."""

    def sample_transition(self, key: Array, t: ArrayLike, x_prev: ArrayLike) -> Array:
        """Draw :math:`x_t \\sim f_t(\\cdot \\mid x_{t-1})` for each row of ``x_prev``."""

    def log_prob_transition(self, t: ArrayLike, x_prev: ArrayLike, x: ArrayLike) -> Array:
        """:math:`\\log f_t(x \\mid x_{t-1})`, broadcasting ``x_prev`` against ``x``."""

    def sample_observation(self, key: Array, t: ArrayLike, x: ArrayLike) -> Array:
        """Draw :math:`y_t \\sim g_t(\\cdot \\mid x_t)` for each row of ``x``, ``(N, k)``."""

    def log_prob_observation(self, t: ArrayLike, x: ArrayLike, y: ArrayLike) -> Array:
        """:math:`\\log g_t(y \\mid x)` for each state in ``x``."""

    def simulate(self, key: Array, num_steps: int) -> tuple[Array, Array]:
        """Draw one trajectory: states ``(T, d)`` and observations ``(T, k)``."""


def _as_float(value: ArrayLike) -> Array:
    """A float array of the default precision (float64 when x64 is enabled)."""
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _simulate(model: StateSpaceModel, key: Array, num_steps: int) -> tuple[Array, Array]:
    """Ancestral sampling of :math:`(x_{0:T-1}, y_{0:T-1})`, shared by every model."""
    if num_steps < 1:
        raise ValueError(
            f"simulate needs at least one time step, got num_steps={num_steps}; "
            "pass num_steps >= 1."
        )
    key_initial, key_first_observation, key_rest = jax.random.split(key, 3)
    x0 = model.sample_initial(key_initial, 1)
    y0 = model.sample_observation(key_first_observation, 0, x0)

    def advance(x_prev, inputs):
        step_key, t = inputs
        key_state, key_observation = jax.random.split(step_key)
        x = model.sample_transition(key_state, t, x_prev)
        y = model.sample_observation(key_observation, t, x)
        return x, (x[0], y[0])

    step_keys = jax.random.split(key_rest, num_steps - 1)
    _, (states, observations) = jax.lax.scan(advance, x0, (step_keys, jnp.arange(1, num_steps)))
    return jnp.concatenate([x0, states]), jnp.concatenate([y0, observations])


def gaussian_log_prob(x: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Array:
    r"""Log-density of :math:`N(\mu, \Sigma)` with one covariance shared by a whole batch.

    With the Cholesky factor :math:`\Sigma = L L^\top` and :math:`z = L^{-1}(x - \mu)`,

    .. math::

        \log N(x; \mu, \Sigma) = -\tfrac12 \lVert z \rVert^2 - \sum_j \log L_{jj}
                                  - \tfrac{d}{2} \log 2\pi.

    The factorisation is done once, whatever the batch: ``x`` and ``mean`` broadcast
    against each other, so ``x (1, N, d)`` against ``mean (N, 1, d)`` gives an
    ``(N, N)`` matrix.

    Parameters
    ----------
    x, mean : Array, shape (..., d)
    cov : Array, shape (d, d)
        Positive definite.

    Returns
    -------
    Array, shape (...)
    """
    diff = jnp.asarray(x) - jnp.asarray(mean)
    dim = diff.shape[-1]
    if dim == 1:  # a scalar variance: no factorisation, one fused elementwise expression
        variance = jnp.reshape(jnp.asarray(cov), ())
        return -0.5 * (diff[..., 0] ** 2 / variance + jnp.log(2.0 * jnp.pi * variance))
    chol = jnp.linalg.cholesky(cov)
    whitened = solve_triangular(chol, diff.reshape(-1, dim).T, lower=True)
    squared_norm = jnp.sum(whitened**2, axis=0).reshape(diff.shape[:-1])
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (squared_norm + log_det + dim * jnp.log(2.0 * jnp.pi))


def _gaussian_log_peak(cov: ArrayLike) -> Array:
    r""":math:`\log N(\mu; \mu, \Sigma) = -\tfrac12 \log\det(2\pi\Sigma)`, the largest value
    of a Gaussian density: the bound PaRIS's accept–reject backward sampling needs."""
    cov = jnp.asarray(cov, dtype=float)
    return -0.5 * jnp.linalg.slogdet(2.0 * jnp.pi * cov)[1]


def sample_gaussian(
    key: Array, mean: ArrayLike, cov: ArrayLike, sample_shape: tuple[int, ...] = ()
) -> Array:
    r"""Draw from :math:`N(\mu, \Sigma)` as :math:`x = \mu + L \varepsilon`.

    Here :math:`LL^\top = \Sigma` is the Cholesky factor and
    :math:`\varepsilon \sim N(0, I)`.

    Parameters
    ----------
    key : PRNG key
    mean : Array, shape (..., d)
        One mean per draw (a batch), or a single mean.
    cov : Array, shape (d, d)
        Positive definite, shared by every draw.
    sample_shape : tuple of int
        Extra leading shape, e.g. ``(N,)`` to draw N states around one mean.

    Returns
    -------
    Array, shape sample_shape + mean.shape
    """
    mean = jnp.asarray(mean)
    noise = jax.random.normal(key, sample_shape + mean.shape, dtype=mean.dtype)
    return mean + noise @ jnp.linalg.cholesky(cov).T


def _condition_on_observation(
    mean: Array, cov: Array, observation_matrix: Array, observation_cov: Array, y: Array
) -> tuple[Array, Array]:
    r"""Gaussian conditioning: the law of :math:`x \sim N(m, P)` given :math:`y = Hx + N(0, R)`.

    .. math::

        S = H P H^\top + R, \quad K = P H^\top S^{-1}, \quad
        m' = m + K (y - H m), \quad P' = (I - K H) P.

    ``mean`` may be a batch ``(..., d)``; ``cov`` is shared ``(d, d)``.
    """
    innovation_cov = observation_matrix @ cov @ observation_matrix.T + observation_cov
    gain = jnp.linalg.solve(innovation_cov, observation_matrix @ cov).T
    conditional_mean = mean + (y - mean @ observation_matrix.T) @ gain.T
    conditional_cov = cov - gain @ observation_matrix @ cov
    return conditional_mean, 0.5 * (conditional_cov + conditional_cov.T)


class LinearGaussianSSM(NamedTuple):
    r"""Linear-Gaussian state-space model, the one model a Kalman filter solves exactly.

    .. math::

        x_0 \sim N(m_0, P_0), \qquad
        x_t = F x_{t-1} + \varepsilon_t,\ \varepsilon_t \sim N(0, Q), \qquad
        y_t = H x_t + \eta_t,\ \eta_t \sim N(0, R).

    Attributes
    ----------
    transition_matrix : Array, shape (d, d)
        :math:`F`.
    transition_cov : Array, shape (d, d)
        :math:`Q`, positive definite.
    observation_matrix : Array, shape (k, d)
        :math:`H`.
    observation_cov : Array, shape (k, k)
        :math:`R`, positive definite.
    initial_mean : Array, shape (d,)
        :math:`m_0`.
    initial_cov : Array, shape (d, d)
        :math:`P_0`, positive definite.

    See Also
    --------
    linear_gaussian_1d, linear_gaussian_2d : constructors with teaching defaults.
    """

    transition_matrix: Array
    transition_cov: Array
    observation_matrix: Array
    observation_cov: Array
    initial_mean: Array
    initial_cov: Array

    @property
    def state_dim(self) -> int:
        """Dimension ``d`` of the state."""
        return jnp.shape(self.transition_matrix)[-1]

    @property
    def obs_dim(self) -> int:
        """Dimension ``k`` of an observation."""
        return jnp.shape(self.observation_matrix)[-2]

    def sample_initial(self, key: Array, num_particles: int) -> Array:
        """Draw ``num_particles`` states from :math:`N(m_0, P_0)`, shape ``(N, d)``."""
        return sample_gaussian(key, self.initial_mean, self.initial_cov, (num_particles,))

    def log_prob_initial(self, x: ArrayLike) -> Array:
        """:math:`\\log N(x; m_0, P_0)` for ``x`` of shape ``(..., d)``."""
        return gaussian_log_prob(x, self.initial_mean, self.initial_cov)

    def sample_transition(self, key: Array, t: ArrayLike, x_prev: ArrayLike) -> Array:
        """Draw :math:`x_t \\sim N(F x_{t-1}, Q)` for each row of ``x_prev`` ``(N, d)``."""
        del t  # time-homogeneous
        mean = jnp.asarray(x_prev) @ self.transition_matrix.T
        return sample_gaussian(key, mean, self.transition_cov)

    def log_prob_transition(self, t: ArrayLike, x_prev: ArrayLike, x: ArrayLike) -> Array:
        """:math:`\\log N(x; F x_{t-1}, Q)`, broadcasting ``x_prev (..., d)`` against ``x``."""
        del t
        mean = jnp.asarray(x_prev) @ self.transition_matrix.T
        return gaussian_log_prob(x, mean, self.transition_cov)

    def log_transition_density_bound(self) -> Array:
        """:math:`\\log \\sup f = -\\tfrac12 \\log\\det(2\\pi Q)`, the transition's peak."""
        return _gaussian_log_peak(self.transition_cov)

    def sample_observation(self, key: Array, t: ArrayLike, x: ArrayLike) -> Array:
        """Draw :math:`y_t \\sim N(H x_t, R)` for each row of ``x`` ``(N, d)``, ``(N, k)``."""
        del t
        mean = jnp.asarray(x) @ self.observation_matrix.T
        return sample_gaussian(key, mean, self.observation_cov)

    def log_prob_observation(self, t: ArrayLike, x: ArrayLike, y: ArrayLike) -> Array:
        """:math:`\\log N(y; H x, R)` for ``x`` of shape ``(..., d)`` and ``y`` ``(k,)``."""
        del t
        mean = jnp.asarray(x) @ self.observation_matrix.T
        return gaussian_log_prob(y, mean, self.observation_cov)

    def optimal_proposal_initial(self, y: ArrayLike) -> tuple[Array, Array]:
        r"""The posterior of the first state, :math:`p(x_0 \mid y_0) = N(\text{mean}, \text{cov})`.

        Sampling :math:`x_0` from it makes every initial weight equal to
        :math:`p(y_0)`, so the first evidence estimate is exact.

        Returns
        -------
        mean : Array, shape (d,)
        cov : Array, shape (d, d)
        """
        return _condition_on_observation(
            self.initial_mean, self.initial_cov, self.observation_matrix, self.observation_cov, y
        )

    def optimal_proposal(
        self, t: ArrayLike, x_prev: ArrayLike, y: ArrayLike
    ) -> tuple[Array, Array]:
        r"""The locally optimal proposal :math:`p(x_t \mid x_{t-1}, y_t)`.

        It is proportional to :math:`f(x_t \mid x_{t-1})\, g(y_t \mid x_t)`: the Gaussian
        :math:`N(Fx_{t-1}, Q)` conditioned on :math:`y_t = H x_t + N(0, R)`. Proposing
        from it makes the incremental weight

        .. math::

            \frac{f(x_t \mid x_{t-1})\, g(y_t \mid x_t)}{q(x_t \mid x_{t-1}, y_t)}
            = p(y_t \mid x_{t-1}) = N(y_t; H F x_{t-1}, H Q H^\top + R),

        which no longer depends on the new state: the weight variance that is left comes
        only from the ancestors.

        Returns
        -------
        mean : Array, shape (N, d)
            One conditional mean per row of ``x_prev``.
        cov : Array, shape (d, d)
            The conditional covariance, shared by all particles.
        """
        del t
        predicted_mean = jnp.asarray(x_prev) @ self.transition_matrix.T
        return _condition_on_observation(
            predicted_mean, self.transition_cov, self.observation_matrix, self.observation_cov, y
        )

    def simulate(self, key: Array, num_steps: int) -> tuple[Array, Array]:
        """Draw one trajectory: states ``(num_steps, d)`` and observations ``(num_steps, k)``."""
        return _simulate(self, key, num_steps)


def linear_gaussian_1d(
    rho: ArrayLike = 0.9, sigma_x: ArrayLike = 1.0, sigma_y: ArrayLike = 0.2
) -> LinearGaussianSSM:
    r"""Univariate AR(1) state observed with Gaussian noise, started at stationarity.

    .. math::

        x_0 \sim N\!\left(0, \frac{\sigma_X^2}{1 - \rho^2}\right), \quad
        x_t = \rho x_{t-1} + \sigma_X \varepsilon_t, \quad
        y_t = x_t + \sigma_Y \eta_t.

    The defaults make the observations informative (:math:`\sigma_Y = 0.2` against a
    stationary standard deviation of 2.29), so a bootstrap filter with ten particles is
    visibly poor: a good first experiment. With these defaults and the data
    ``y = [0.5, -0.3, 1.2, 0.8, -0.1]`` the exact log-likelihood is -7.169735.

    Parameters
    ----------
    rho : float or Array
        Autoregression coefficient, :math:`|\rho| < 1` for a stationary start.
    sigma_x, sigma_y : float or Array
        State and observation noise standard deviations.

    Arguments may be traced scalars, so the model can be built inside a jitted function.
    """
    rho, sigma_x, sigma_y = _as_float(rho), _as_float(sigma_x), _as_float(sigma_y)
    return LinearGaussianSSM(
        transition_matrix=jnp.atleast_2d(rho),
        transition_cov=jnp.atleast_2d(sigma_x**2),
        observation_matrix=jnp.ones((1, 1), dtype=rho.dtype),
        observation_cov=jnp.atleast_2d(sigma_y**2),
        initial_mean=jnp.zeros(1, dtype=rho.dtype),
        initial_cov=jnp.atleast_2d(sigma_x**2 / (1.0 - rho**2)),
    )


def linear_gaussian_2d(
    rho: ArrayLike = 0.95,
    omega: ArrayLike = 0.3,
    sigma_x: ArrayLike = 0.2,
    sigma_y: ArrayLike = 0.5,
    initial_mean: ArrayLike = (3.0, 0.0),
    initial_sd: ArrayLike = 0.5,
) -> LinearGaussianSSM:
    r"""A damped rotation in the plane, observed in both coordinates.

    .. math::

        x_0 \sim N(m_0, s_0^2 I), \quad
        x_t = \rho \begin{pmatrix} \cos\omega & -\sin\omega \\ \sin\omega & \cos\omega \end{pmatrix}
              x_{t-1} + \sigma_X \varepsilon_t, \quad
        y_t = x_t + \sigma_Y \eta_t.

    The defaults draw an inward spiral: the state starts near :math:`(3, 0)`, turns by
    0.3 rad (about 17 degrees) per step, so a lap takes about 21 steps, and shrinks by 5%
    per step. The observation noise (0.5) is larger than the state noise (0.2), so the
    raw observations look scattered while the filtered path stays smooth.

    Parameters
    ----------
    rho : float or Array
        Contraction per step, :math:`0 < \rho < 1`.
    omega : float or Array
        Rotation angle per step, in radians.
    sigma_x, sigma_y : float or Array
        State and observation noise standard deviations (isotropic).
    initial_mean : array_like, shape (2,)
        :math:`m_0`.
    initial_sd : float or Array
        :math:`s_0`.

    Arguments may be traced scalars, so the model can be built inside a jitted function.
    """
    rho, omega = _as_float(rho), _as_float(omega)
    cos, sin = jnp.cos(omega), jnp.sin(omega)
    rotation = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
    identity = jnp.eye(2, dtype=rho.dtype)
    return LinearGaussianSSM(
        transition_matrix=rho * rotation,
        transition_cov=_as_float(sigma_x) ** 2 * identity,
        observation_matrix=identity,
        observation_cov=_as_float(sigma_y) ** 2 * identity,
        initial_mean=jnp.broadcast_to(_as_float(initial_mean), (2,)),
        initial_cov=_as_float(initial_sd) ** 2 * identity,
    )


def _normal_sample(key: Array, mean: Array, scale: ArrayLike) -> Array:
    return mean + scale * jax.random.normal(key, jnp.shape(mean), dtype=jnp.result_type(mean))


class StochasticVolatilitySSM(NamedTuple):
    r"""Stochastic volatility: a latent AR(1) log-variance drives the returns.

    .. math::

        x_0 \sim N\!\left(\mu, \frac{\sigma^2}{1 - \rho^2}\right), \quad
        x_t = \mu + \rho (x_{t-1} - \mu) + \sigma \varepsilon_t, \quad
        y_t \sim N(0, e^{x_t}).

    The defaults (:math:`\mu = -1.02, \rho = 0.9702, \sigma = 0.178`) are the classic
    values fitted to daily exchange-rate returns. Calm and turbulent periods alternate
    slowly because :math:`\rho` is close to one. ``d = k = 1``.

    Attributes
    ----------
    mu : float or Array
        Mean log-variance.
    rho : float or Array
        Persistence, :math:`|\rho| < 1`.
    sigma : float or Array
        Standard deviation of the log-variance innovations.
    """

    mu: ArrayLike = -1.02
    rho: ArrayLike = 0.9702
    sigma: ArrayLike = 0.178

    state_dim = 1
    obs_dim = 1

    def _initial_scale(self) -> Array:
        return self.sigma / jnp.sqrt(1.0 - jnp.square(self.rho))

    def sample_initial(self, key: Array, num_particles: int) -> Array:
        """Draw ``num_particles`` states from the stationary law, shape ``(N, 1)``."""
        mean = jnp.full((num_particles, 1), self.mu, dtype=jnp.result_type(float))
        return _normal_sample(key, mean, self._initial_scale())

    def log_prob_initial(self, x: ArrayLike) -> Array:
        """Stationary log-density of ``x`` ``(..., 1)``."""
        return dist.Normal(self.mu, self._initial_scale()).log_prob(jnp.asarray(x)[..., 0])

    def _transition_mean(self, x_prev: ArrayLike) -> Array:
        return self.mu + self.rho * (jnp.asarray(x_prev) - self.mu)

    def sample_transition(self, key: Array, t: ArrayLike, x_prev: ArrayLike) -> Array:
        """Draw :math:`x_t \\sim N(\\mu + \\rho(x_{t-1} - \\mu), \\sigma^2)` per row."""
        del t
        return _normal_sample(key, self._transition_mean(x_prev), self.sigma)

    def log_prob_transition(self, t: ArrayLike, x_prev: ArrayLike, x: ArrayLike) -> Array:
        """Transition log-density, broadcasting ``x_prev (..., 1)`` with ``x (..., 1)``."""
        del t
        mean = self._transition_mean(x_prev)[..., 0]
        return dist.Normal(mean, self.sigma).log_prob(jnp.asarray(x)[..., 0])

    def log_transition_density_bound(self) -> Array:
        """:math:`\\log \\sup f = -\\tfrac12 \\log(2\\pi\\sigma^2)`, the transition's peak."""
        return _gaussian_log_peak(jnp.reshape(jnp.square(self.sigma), (1, 1)))

    def sample_observation(self, key: Array, t: ArrayLike, x: ArrayLike) -> Array:
        """Draw a return :math:`y_t \\sim N(0, e^{x_t})` per row of ``x``, ``(N, 1)``."""
        del t
        x = jnp.asarray(x)
        return _normal_sample(key, jnp.zeros_like(x), jnp.exp(0.5 * x))

    def log_prob_observation(self, t: ArrayLike, x: ArrayLike, y: ArrayLike) -> Array:
        """:math:`\\log N(y; 0, e^{x})` for ``x (..., 1)`` and ``y (1,)``."""
        del t
        scale = jnp.exp(0.5 * jnp.asarray(x)[..., 0])
        return dist.Normal(0.0, scale).log_prob(jnp.asarray(y)[0])

    def simulate(self, key: Array, num_steps: int) -> tuple[Array, Array]:
        """Draw one trajectory: states ``(num_steps, 1)`` and returns ``(num_steps, 1)``."""
        return _simulate(self, key, num_steps)


class GrowthModelSSM(NamedTuple):
    r"""The univariate nonlinear growth model, a standard stress test for particle filters.

    .. math::

        x_0 \sim N(0, s_0^2), \quad
        x_t = \frac{x_{t-1}}{2} + \frac{25\, x_{t-1}}{1 + x_{t-1}^2} + 8 \cos(1.2\, t)
              + N(0, \sigma_X^2), \quad
        y_t = \frac{x_t^2}{20} + N(0, \sigma_Y^2).

    The observation only sees :math:`x_t^2`, so the sign of the state is ambiguous and
    the filtering distribution is often bimodal: a Kalman filter (even an extended one)
    fails here, particles do not. ``d = k = 1``.

    Attributes
    ----------
    transition_var : float or Array
        :math:`\sigma_X^2` (default 10).
    observation_var : float or Array
        :math:`\sigma_Y^2` (default 1).
    initial_var : float or Array
        :math:`s_0^2` (default 5).
    """

    transition_var: ArrayLike = 10.0
    observation_var: ArrayLike = 1.0
    initial_var: ArrayLike = 5.0

    state_dim = 1
    obs_dim = 1

    def sample_initial(self, key: Array, num_particles: int) -> Array:
        """Draw ``num_particles`` states from :math:`N(0, s_0^2)`, shape ``(N, 1)``."""
        mean = jnp.zeros((num_particles, 1), dtype=jnp.result_type(float))
        return _normal_sample(key, mean, jnp.sqrt(self.initial_var))

    def log_prob_initial(self, x: ArrayLike) -> Array:
        """:math:`\\log N(x; 0, s_0^2)` for ``x (..., 1)``."""
        return dist.Normal(0.0, jnp.sqrt(self.initial_var)).log_prob(jnp.asarray(x)[..., 0])

    def _transition_mean(self, t: ArrayLike, x_prev: ArrayLike) -> Array:
        x_prev = jnp.asarray(x_prev)
        return 0.5 * x_prev + 25.0 * x_prev / (1.0 + x_prev**2) + 8.0 * jnp.cos(1.2 * t)

    def sample_transition(self, key: Array, t: ArrayLike, x_prev: ArrayLike) -> Array:
        """Draw :math:`x_t` given each row of ``x_prev`` ``(N, 1)``."""
        return _normal_sample(key, self._transition_mean(t, x_prev), jnp.sqrt(self.transition_var))

    def log_prob_transition(self, t: ArrayLike, x_prev: ArrayLike, x: ArrayLike) -> Array:
        """Transition log-density, broadcasting ``x_prev (..., 1)`` with ``x (..., 1)``."""
        mean = self._transition_mean(t, x_prev)[..., 0]
        return dist.Normal(mean, jnp.sqrt(self.transition_var)).log_prob(jnp.asarray(x)[..., 0])

    def log_transition_density_bound(self) -> Array:
        """:math:`\\log \\sup f = -\\tfrac12 \\log(2\\pi\\sigma_X^2)`, the transition's peak."""
        return _gaussian_log_peak(jnp.reshape(self.transition_var, (1, 1)))

    def sample_observation(self, key: Array, t: ArrayLike, x: ArrayLike) -> Array:
        """Draw :math:`y_t \\sim N(x_t^2 / 20, \\sigma_Y^2)` per row of ``x``, ``(N, 1)``."""
        del t
        return _normal_sample(key, jnp.asarray(x) ** 2 / 20.0, jnp.sqrt(self.observation_var))

    def log_prob_observation(self, t: ArrayLike, x: ArrayLike, y: ArrayLike) -> Array:
        """:math:`\\log N(y; x^2/20, \\sigma_Y^2)` for ``x (..., 1)`` and ``y (1,)``."""
        del t
        mean = jnp.asarray(x)[..., 0] ** 2 / 20.0
        return dist.Normal(mean, jnp.sqrt(self.observation_var)).log_prob(jnp.asarray(y)[0])

    def simulate(self, key: Array, num_steps: int) -> tuple[Array, Array]:
        """Draw one trajectory: states ``(num_steps, 1)`` and observations ``(num_steps, 1)``."""
        return _simulate(self, key, num_steps)
