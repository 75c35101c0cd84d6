r"""Tempered SMC: from the prior to the posterior of a static model through a ladder of
intermediate distributions.

Importance sampling from the prior weights each draw by the whole likelihood at once;
when the data are informative almost every weight is negligible and the effective
sample size collapses. *Likelihood tempering* (Neal, 2001; Del Moral, Doucet and Jasra,
2006; Chopin and Papaspiliopoulos, 2020, ch. 17) walks there in small steps instead,
through

.. math::

    \pi_\beta(x) = \frac{p(x)\, L(x)^\beta}{Z_\beta}, \qquad
    0 = \beta_0 < \beta_1 < \dots < \beta_T = 1, \qquad
    Z_\beta = \int p(x)\, L(x)^\beta \, dx,

from the prior :math:`\pi_0 = p` to the posterior :math:`\pi_1`, with
:math:`Z_1 = p(y)` the evidence.

One step, from :math:`\beta` to :math:`\beta'`
----------------------------------------------
The particles :math:`x^i` carry weights :math:`W^i` (summing to one) for
:math:`\pi_\beta`; write :math:`\ell^i = \log L(x^i)` and :math:`\delta = \beta' - \beta`.

1. **Choose the next temperature.** The incremental weights
   :math:`G^i = L(x^i)^\delta` turn :math:`\pi_\beta`-particles into
   :math:`\pi_{\beta'}`-particles. Their *conditional* effective sample size
   (Zhou, Johansen and Aston, 2016)

   .. math::

       \mathrm{CESS}(\delta) = N\, \frac{\bigl(\sum_i W^i G^i\bigr)^2}{\sum_i W^i (G^i)^2}

   falls from :math:`N` at :math:`\delta = 0` as :math:`\delta` grows; :math:`\delta`
   is found by bisection so that :math:`\mathrm{CESS}(\delta) = \alpha N` (``alpha`` is
   ``target_ess_fraction``), or :math:`\delta = 1 - \beta` if even that keeps it above.
   The data decide the ladder: where the likelihood is flat the steps are long, where
   it is sharp they are short. After resampling :math:`W^i = 1/N`, and the CESS is the
   ordinary ESS of the incremental weights.
2. **Reweight** :math:`W^i \leftarrow W^i G^i / \sum_j W^j G^j`; the evidence estimate
   gains the factor

   .. math::

       \frac{\hat Z_{\beta'}}{\hat Z_\beta} = \sum_i W^i\, L(x^i)^{\delta} .

3. **Resample** (any scheme of :mod:`posteriorlab.core.smc.resampling`): the weights
   become :math:`1/N`, heavy particles are copied.
4. **Move** every particle by ``num_moves`` random-walk Metropolis steps that leave
   :math:`\pi_{\beta'}` invariant: propose :math:`x' = x + s\, C\varepsilon`,
   :math:`\varepsilon \sim \mathcal{N}(0, I)`, accept with probability
   :math:`\min\{1, \pi_{\beta'}(x')/\pi_{\beta'}(x)\}`. :math:`C` is the Cholesky factor
   of the weighted covariance of the particles after step 2, so the proposal has the
   shape of the current cloud, and :math:`s` starts at the optimal-scaling value
   :math:`2.38/\sqrt d` (Roberts, Gelman and Gilks, 1997) and is multiplied by
   :math:`\exp\{2(a - 0.234)\}` after each temperature, :math:`a` the acceptance rate
   just measured: a cloud that is wider than the target's thin parts (a ring, two modes)
   gets smaller steps. Moving is what restores the diversity that resampling removed.

The product of the factors in step 2, :math:`\hat Z = \prod_t \hat Z_{\beta_t} /
\hat Z_{\beta_{t-1}}`, is an unbiased estimate of :math:`Z_1 = p(y)` for a fixed ladder
(Del Moral, 2004); choosing the ladder from the same particles adds a bias of order
:math:`1/N` that the tests cannot see at their sizes. :math:`\log \hat Z` is biased
downward (Jensen), by about half its variance.

Shapes and compilation
----------------------
:func:`run` is a ``lax.while_loop`` over temperatures, stopped at :math:`\beta = 1` or
after ``max_steps`` steps; the last allowed step jumps to :math:`\beta = 1`, so the
ladder always ends at one. The ladder and the acceptance rates are returned padded to
``max_steps`` (``nan`` after the last step). The particle count, ``num_moves``,
``max_steps`` and the resampling scheme are static; the data, the prior and
``target_ess_fraction`` are traced, so new data never recompile.

Recommended import::

    from posteriorlab.core.smc import tempering

    result = tempering.run_mixture_prior(key, prior, log_likelihood, num_particles=1000)
    result.log_evidence, result.particles
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from posteriorlab.core import gmm
from posteriorlab.core.smc.resampling import RESAMPLING_SCHEMES, normalize

__all__ = [
    "TARGET_ACCEPTANCE",
    "TemperingState",
    "TemperingInfo",
    "TemperingResult",
    "conditional_ess",
    "covariance_factor",
    "next_temperature",
    "random_walk_metropolis",
    "init",
    "step",
    "run",
    "run_mixture_prior",
]

TARGET_ACCEPTANCE = 0.234
"""The acceptance rate the random-walk scale is steered towards (module docstring)."""

BISECTION_STEPS = 50
"""Halvings of the temperature interval: :math:`2^{-50}` is below float64 resolution."""

LogDensity = Callable[[Array], Array]


class TemperingState(NamedTuple):
    """What tempered SMC carries from one temperature to the next.

    Attributes
    ----------
    particles : Array, shape (N, d)
    log_weights : Array, shape (N,)
        Normalised :math:`\\log W^i` for :math:`\\pi_\\beta`.
    log_likelihoods : Array, shape (N,)
        :math:`\\ell^i = \\log L(x^i)`, kept so that no particle is evaluated twice.
    temperature : Array, shape ()
        :math:`\\beta`.
    log_evidence : Array, shape ()
        :math:`\\log \\hat Z_\\beta`.
    proposal_scale : Array, shape ()
        :math:`s`, the random-walk step in units of the cloud's covariance factor.
    """

    particles: Array
    log_weights: Array
    log_likelihoods: Array
    temperature: Array
    log_evidence: Array
    proposal_scale: Array


class TemperingInfo(NamedTuple):
    """What one step did.

    Attributes
    ----------
    temperature : Array, shape ()
        The new :math:`\\beta'`.
    ess : Array, shape ()
        Conditional ESS of the incremental weights (:math:`\\alpha N` unless the step
        reached :math:`\\beta' = 1` with room to spare).
    acceptance_rate : Array, shape ()
        Fraction of accepted Metropolis proposals over all particles and moves.
    """

    temperature: Array
    ess: Array
    acceptance_rate: Array


class TemperingResult(NamedTuple):
    """The output of :func:`run`.

    Attributes
    ----------
    particles : Array, shape (N, d)
        Draws for the posterior (equally weighted after the last resampling).
    log_weights : Array, shape (N,)
        Their normalised log-weights.
    log_evidence : Array, shape ()
        :math:`\\log \\hat Z`, an estimate of :math:`\\log p(y)`.
    temperatures : Array, shape (max_steps,)
        :math:`\\beta_1, \\dots, \\beta_T`, then ``nan``.
    acceptance_rates : Array, shape (max_steps,)
        Metropolis acceptance rate at each temperature, then ``nan``.
    num_steps : Array of int, shape ()
        :math:`T`.
    """

    particles: Array
    log_weights: Array
    log_evidence: Array
    temperatures: Array
    acceptance_rates: Array
    num_steps: Array


def conditional_ess(log_weights: ArrayLike, log_likelihoods: ArrayLike, delta: ArrayLike) -> Array:
    r""":math:`\mathrm{CESS}(\delta) = N (\sum_i W^i G^i)^2 / \sum_i W^i (G^i)^2` with
    :math:`G^i = e^{\delta \ell^i}`, computed in log space.

    Parameters
    ----------
    log_weights : Array, shape (N,)
        Normalised :math:`\log W^i`.
    log_likelihoods : Array, shape (N,)
    delta : float or Array, shape ()
    """
    increments = delta * jnp.asarray(log_likelihoods)
    num_particles = jnp.shape(log_weights)[0]
    log_cess = (2.0 * logsumexp(log_weights + increments)
                - logsumexp(log_weights + 2.0 * increments))  # fmt: skip
    return num_particles * jnp.exp(log_cess)


def next_temperature(log_weights, log_likelihoods, temperature, target_ess_fraction) -> Array:
    r"""The next :math:`\beta'`: the largest :math:`\beta' \le 1` with
    :math:`\mathrm{CESS}(\beta' - \beta) \ge \alpha N`, by bisection on
    :math:`\delta \in [0, 1 - \beta]` (the CESS falls as :math:`\delta` grows).
    """
    num_particles = jnp.shape(log_weights)[0]
    target = target_ess_fraction * num_particles
    remaining = 1.0 - temperature

    def cess(delta):
        return conditional_ess(log_weights, log_likelihoods, delta)

    def halve(_, bracket):
        low, high = bracket
        middle = 0.5 * (low + high)
        enough = cess(middle) >= target
        return jnp.where(enough, middle, low), jnp.where(enough, high, middle)

    low, _ = jax.lax.fori_loop(
        0, BISECTION_STEPS, halve, (jnp.zeros_like(remaining), remaining)
    )
    delta = jnp.where(cess(remaining) >= target, remaining, low)
    return temperature + delta


def random_walk_metropolis(key, particles, log_targets, log_target: LogDensity, chol, scale):
    r"""One random-walk Metropolis step for every particle.

    Parameters
    ----------
    key : PRNG key
    particles : Array, shape (N, d)
    log_targets : Array, shape (N,)
        :math:`\log \pi(x^i)` up to a constant (the same constant as ``log_target``).
    log_target : callable
        ``x (d,) -> log pi(x)``, vmapped.
    chol : Array, shape (d, d)
        Proposal covariance factor :math:`C`.
    scale : Array, shape ()
        Step :math:`s`: proposals are :math:`x + s C \varepsilon`.

    Returns
    -------
    particles, log_targets : Arrays, shapes (N, d), (N,)
    accepted : bool Array, shape (N,)
    """
    key_step, key_accept = jax.random.split(key)
    noise = jax.random.normal(key_step, particles.shape, dtype=particles.dtype)
    proposals = particles + scale * noise @ chol.T
    proposed_targets = jax.vmap(log_target)(proposals)
    log_uniform = jnp.log(jax.random.uniform(key_accept, log_targets.shape,
                                             dtype=particles.dtype))  # fmt: skip
    accepted = log_uniform < proposed_targets - log_targets
    return (
        jnp.where(accepted[:, None], proposals, particles),
        jnp.where(accepted, proposed_targets, log_targets),
        accepted,
    )


def covariance_factor(particles: Array, log_weights: Array) -> Array:
    """Cholesky factor of the weighted covariance :math:`\\sum_i W^i (x^i - m)(x^i - m)^\\top`
    of particles (``log_weights`` normalised or not), with a jitter relative to its trace
    so that a collapsed cloud still has a factor."""
    weights = normalize(log_weights)
    centred = particles - weights @ particles
    covariance = centred.T @ (centred * weights[:, None])
    dim = particles.shape[-1]
    jitter = 1e-9 * jnp.trace(covariance) / dim + 1e-12
    return jnp.linalg.cholesky(covariance + jitter * jnp.eye(dim, dtype=particles.dtype))


def init(particles: Array, log_likelihood: LogDensity) -> TemperingState:
    r"""Equally weighted prior draws at :math:`\beta = 0` (:math:`\hat Z_0 = 1`)."""
    num_particles, dim = particles.shape
    dtype = particles.dtype
    return TemperingState(
        particles=particles,
        log_weights=jnp.full((num_particles,), -jnp.log(num_particles), dtype),
        log_likelihoods=jax.vmap(log_likelihood)(particles),
        temperature=jnp.zeros((), dtype),
        log_evidence=jnp.zeros((), dtype),
        proposal_scale=jnp.asarray(2.38 / jnp.sqrt(dim), dtype),
    )


def step(
    key: Array,
    state: TemperingState,
    log_prior: LogDensity,
    log_likelihood: LogDensity,
    target_ess_fraction: ArrayLike = 0.5,
    num_moves: int = 5,
    resampling: str = "systematic",
    last: ArrayLike = False,
) -> tuple[TemperingState, TemperingInfo]:
    """One temperature step: choose :math:`\\beta'`, reweight, resample, move (module
    docstring). ``last`` (traced) forces :math:`\\beta' = 1`."""
    if resampling not in RESAMPLING_SCHEMES:
        raise ValueError(
            f"unknown resampling scheme {resampling!r}; choose one of "
            f"{sorted(RESAMPLING_SCHEMES)}."
        )
    key_resample, key_move = jax.random.split(key)
    num_particles = state.particles.shape[0]
    chosen = next_temperature(state.log_weights, state.log_likelihoods, state.temperature,
                              target_ess_fraction)  # fmt: skip
    temperature = jnp.where(last, jnp.ones_like(chosen), chosen)
    delta = temperature - state.temperature
    ess = conditional_ess(state.log_weights, state.log_likelihoods, delta)

    unnormalised = state.log_weights + delta * state.log_likelihoods
    increment = logsumexp(unnormalised)
    log_weights = unnormalised - increment
    chol = covariance_factor(state.particles, log_weights)

    ancestors = RESAMPLING_SCHEMES[resampling](key_resample, normalize(log_weights),
                                               num_particles)  # fmt: skip
    particles = state.particles[ancestors]
    log_likelihoods = state.log_likelihoods[ancestors]

    def log_target(x):
        return log_prior(x) + temperature * log_likelihood(x)

    log_targets = jax.vmap(log_prior)(particles) + temperature * log_likelihoods

    def move(carry, move_key):
        current, current_targets = carry
        moved, moved_targets, accepted = random_walk_metropolis(
            move_key, current, current_targets, log_target, chol, state.proposal_scale
        )
        return (moved, moved_targets), jnp.mean(accepted.astype(current.dtype))

    (particles, _), acceptances = jax.lax.scan(
        move, (particles, log_targets), jax.random.split(key_move, num_moves)
    )
    acceptance_rate = jnp.mean(acceptances)
    new_state = TemperingState(
        particles=particles,
        log_weights=jnp.full((num_particles,), -jnp.log(num_particles), particles.dtype),
        log_likelihoods=jax.vmap(log_likelihood)(particles),
        temperature=temperature,
        log_evidence=state.log_evidence + increment,
        proposal_scale=state.proposal_scale
        * jnp.exp(2.0 * (acceptance_rate - TARGET_ACCEPTANCE)),
    )
    return new_state, TemperingInfo(temperature, ess, acceptance_rate)


def run(
    key: Array,
    prior_particles: Array,
    log_prior: LogDensity,
    log_likelihood: LogDensity,
    target_ess_fraction: ArrayLike = 0.5,
    num_moves: int = 5,
    max_steps: int = 100,
    resampling: str = "systematic",
) -> TemperingResult:
    r"""Tempered SMC from prior draws to the posterior :math:`\propto p(x) L(x)`.

    Parameters
    ----------
    key : PRNG key
    prior_particles : Array, shape (N, d)
        Independent draws from the prior (any sampler); ``N`` is static.
    log_prior : callable
        ``x (d,) -> log p(x)`` (up to a constant).
    log_likelihood : callable
        ``x (d,) -> log L(x) = log p(y | x)``; its constant matters for the evidence.
    target_ess_fraction : float in (0, 1)
        :math:`\alpha`: each step keeps a conditional ESS of :math:`\alpha N` (traced).
    num_moves : int
        Metropolis steps per temperature (static).
    max_steps : int
        Most temperatures; the last allowed step jumps to :math:`\beta = 1` (static).
    resampling : str
        A key of :data:`~posteriorlab.core.smc.resampling.RESAMPLING_SCHEMES` (static).

    Returns
    -------
    TemperingResult
    """
    state = init(prior_particles, log_likelihood)
    dtype = prior_particles.dtype
    ladder = jnp.full((max_steps,), jnp.nan, dtype)

    def unfinished(carry):
        current, _, _, count, _ = carry
        return (current.temperature < 1.0) & (count < max_steps)

    def body(carry):
        current, temperatures, acceptances, count, loop_key = carry
        loop_key, key_step = jax.random.split(loop_key)
        current, info = step(key_step, current, log_prior, log_likelihood,
                             target_ess_fraction, num_moves, resampling,
                             last=count == max_steps - 1)  # fmt: skip
        return (current, temperatures.at[count].set(info.temperature),
                acceptances.at[count].set(info.acceptance_rate), count + 1, loop_key)  # fmt: skip

    state, temperatures, acceptances, count, _ = jax.lax.while_loop(
        unfinished, body, (state, ladder, ladder, jnp.zeros((), jnp.int32), key)
    )
    return TemperingResult(
        particles=state.particles,
        log_weights=state.log_weights,
        log_evidence=state.log_evidence,
        temperatures=temperatures,
        acceptance_rates=acceptances,
        num_steps=count,
    )


def run_mixture_prior(
    key: Array,
    prior: gmm.GaussianMixture,
    log_likelihood: LogDensity,
    num_particles: int,
    target_ess_fraction: ArrayLike = 0.5,
    num_moves: int = 5,
    max_steps: int = 100,
    resampling: str = "systematic",
) -> TemperingResult:
    """:func:`run` with a Gaussian-mixture prior: ``num_particles`` draws by
    :func:`posteriorlab.core.gmm.sample`, log-density :func:`posteriorlab.core.gmm.log_prob`.
    Every argument but ``num_particles``, ``num_moves``, ``max_steps`` and ``resampling``
    may be traced (the prior too)."""
    key_prior, key_run = jax.random.split(key)
    particles = gmm.sample(key_prior, prior, num_particles)
    return run(key_run, particles, partial(gmm.log_prob, prior), log_likelihood,
               target_ess_fraction, num_moves, max_steps, resampling)  # fmt: skip
