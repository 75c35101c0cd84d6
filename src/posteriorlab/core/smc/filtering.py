r"""The particle filter: sequential importance sampling with resampling.

For a state-space model (see :mod:`posteriorlab.core.smc.models`) with initial law
:math:`\mu`, transition :math:`f` and observation density :math:`g`, a particle filter
approximates the filtering distribution :math:`p(x_t \mid y_{0:t})` by :math:`N` weighted
particles, and estimates the evidence :math:`Z_t = p(y_{0:t})` along the way.

The algorithm
-------------
At :math:`t = 0`, draw :math:`x_0^i \sim q_0(\cdot \mid y_0)` and weight them by
:math:`w_0^i = \mu(x_0^i)\, g(y_0 \mid x_0^i) / q_0(x_0^i \mid y_0)`. Then, at each
:math:`t \ge 1`:

1. **Resample (sometimes).** If :math:`\mathrm{ESS}_{t-1} < \kappa N`, draw ancestors
   :math:`A^i` from the weights and reset the weights to :math:`1/N`; otherwise keep
   :math:`A^i = i` and the weights. :math:`\kappa \in [0, 1]` is ``ess_threshold``:
   0 never resamples, 1 resamples whenever the weights are unequal.
2. **Move.** Draw :math:`x_t^i \sim q_t(\cdot \mid x_{t-1}^{A^i}, y_t)`.
3. **Reweight.** Multiply the carried weight :math:`W_{t-1}^{i}` by the potential

   .. math::

       G_t^i = \frac{f(x_t^i \mid x_{t-1}^{A^i})\, g(y_t \mid x_t^i)}
                    {q_t(x_t^i \mid x_{t-1}^{A^i}, y_t)}

   and normalise.

The *bootstrap* filter proposes from the dynamics, :math:`q_t = f`, so that
:math:`G_t = g(y_t \mid x_t)`: blind moves, corrected afterwards. The *guided* filter
proposes from the locally optimal :math:`q_t = p(x_t \mid x_{t-1}, y_t)`, which looks at
:math:`y_t` before moving; only some models know it in closed form (the linear-Gaussian
one). Both use the formula above, so they share one code path.

The evidence
------------
With carried weights :math:`W_{t-1}^i` that sum to one, each step multiplies the
evidence estimate by the average potential:

.. math::

    \hat Z_t = \hat Z_{t-1} \sum_{i=1}^N W_{t-1}^i\, G_t^i, \qquad
    \hat Z_0 = \frac{1}{N} \sum_{i=1}^N w_0^i.

This holds whether or not the step resampled (after resampling :math:`W^i = 1/N`), and
:math:`\hat Z_t` is then an *unbiased* estimate of :math:`Z_t` for every :math:`N`
(Del Moral, 2004). Its logarithm is biased downward (Jensen's inequality): with few
particles :math:`\log \hat Z` is on average below :math:`\log Z`, by about half its
variance. Everything is computed in log space.

Entropic annealing
------------------
With ``annealing`` switched on (see
:func:`posteriorlab.core.smc.resampling.annealing_temperature`), ancestors are drawn
from the flattened probabilities :math:`\tilde p^i \propto (W^i)^{1/\tau}` instead of
:math:`W^i`, early in the run and while the ESS is low, which keeps more distinct
particles alive. Entropic particle filtering (ePF) for language-model search stops
there, because its weights are recomputed from scratch at every step. Here weights
accumulate, so each offspring :math:`i` carries the importance correction

.. math::

    \bar w^i = \frac{W^{A^i}}{N\, \tilde p^{A^i}},

whose expectation, for any unbiased resampling scheme, gives back the weighted
particle system before resampling. The filter still targets the right distribution
and :math:`\hat Z` stays unbiased; the :math:`\bar w^i` no longer sum exactly to one,
and the evidence increment :math:`\log \sum_i \bar w^i G_t^i` accounts for that.

Genealogy
---------
Following the ancestors backwards from the final particles traces their lineages
(:func:`trace_lineages`). Going back in time the lineages merge, so only a few distinct
ancestors survive (:func:`count_surviving_lineages`): this *path degeneracy* is why the
particle paths are a poor smoother of early states.

Recommended import::

    from posteriorlab.core.smc import filtering

    info = filtering.run(key, model, observations, num_particles=100)
    info.log_evidence[-1]  # log of the estimate of p(y_{0:T-1})
"""

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from posteriorlab.core.smc.models import StateSpaceModel, gaussian_log_prob, sample_gaussian
from posteriorlab.core.smc.resampling import (
    RESAMPLING_SCHEMES,
    annealing_temperature,
    effective_sample_size,
)

__all__ = [
    "PROPOSALS",
    "AnnealingSettings",
    "FilterInfo",
    "FilterState",
    "NO_ANNEALING",
    "count_surviving_lineages",
    "init",
    "run",
    "step",
    "trace_lineages",
]

PROPOSALS = ("bootstrap", "guided")
"""Names of the proposals: ``"bootstrap"`` (move with the dynamics) or ``"guided"``
(the locally optimal proposal of models that provide ``optimal_proposal``)."""


class FilterState(NamedTuple):
    """What a particle filter carries from one step to the next.

    Attributes
    ----------
    particles : Array, shape (N, d)
        The states :math:`x_t^i`.
    log_weights : Array, shape (N,)
        Normalised log-weights :math:`\\log W_t^i` (their log-sum-exp is 0).
    log_evidence : Array, shape ()
        :math:`\\log \\hat Z_t`, the running estimate of :math:`\\log p(y_{0:t})`.
    """

    particles: Array
    log_weights: Array
    log_evidence: Array


class FilterInfo(NamedTuple):
    """What happened at one time step, for plots; :func:`run` stacks them along time.

    Attributes
    ----------
    particles : Array, shape (N, d)
        :math:`x_t^i` after the move.
    log_weights : Array, shape (N,)
        Normalised :math:`\\log W_t^i` after reweighting at :math:`t`.
    ancestors : Array of int32, shape (N,)
        Index at :math:`t - 1` of the parent of each particle (``arange(N)`` at
        :math:`t = 0` and when the step did not resample).
    ess : Array, shape ()
        Effective sample size of :math:`W_t`; the next step resamples when it is below
        ``ess_threshold * N``.
    resampled : Array of bool, shape ()
        Whether this step resampled before moving.
    temperature : Array, shape ()
        Annealing temperature used to resample (1 when not annealed or not resampled).
    log_evidence_increment : Array, shape ()
        :math:`\\log(\\hat Z_t / \\hat Z_{t-1})`.
    log_evidence : Array, shape ()
        :math:`\\log \\hat Z_t`.
    """

    particles: Array
    log_weights: Array
    ancestors: Array
    ess: Array
    resampled: Array
    temperature: Array
    log_evidence_increment: Array
    log_evidence: Array


class AnnealingSettings(NamedTuple):
    """Entropic annealing of the resampling step; all fields may be traced.

    Attributes
    ----------
    schedule : int or Array
        0: none (plain resampling), 1: ESS schedule, 2: entropy schedule; see
        :data:`posteriorlab.core.smc.resampling.ANNEALING_SCHEDULES`.
    ess_trigger : float or Array
        Anneal only while :math:`\\mathrm{ESS}/N` is below this.
    early_phase : float or Array
        Anneal only while the progress :math:`t/T` is below this.
    """

    schedule: ArrayLike = 0
    ess_trigger: ArrayLike = 0.5
    early_phase: ArrayLike = 0.5


NO_ANNEALING = AnnealingSettings()
"""The default: plain resampling from the weights (``schedule=0``)."""


def _resampling_scheme(name: str) -> Callable[[Array, ArrayLike, int], Array]:
    if name not in RESAMPLING_SCHEMES:
        raise ValueError(
            f"unknown resampling scheme {name!r}; choose one of {sorted(RESAMPLING_SCHEMES)}."
        )
    return RESAMPLING_SCHEMES[name]


def _check_proposal(model: StateSpaceModel, proposal: str) -> None:
    if proposal not in PROPOSALS:
        raise ValueError(f"unknown proposal {proposal!r}; choose one of {list(PROPOSALS)}.")
    if proposal == "guided" and not hasattr(model, "optimal_proposal"):
        raise ValueError(
            f"proposal='guided' needs a model with a locally optimal proposal, and "
            f"{type(model).__name__} has none (no `optimal_proposal` method); use "
            "proposal='bootstrap', or a LinearGaussianSSM for the guided filter."
        )


def _propose_initial(
    key: Array, model: StateSpaceModel, observation: Array, num_particles: int, proposal: str
) -> tuple[Array, Array]:
    r"""Draw :math:`x_0 \sim q_0`; return it and :math:`\log \mu(x_0) - \log q_0(x_0)`.

    For the bootstrap proposal :math:`q_0 = \mu` and the ratio is exactly 0: it is not
    computed.
    """
    if proposal == "guided":
        mean, cov = model.optimal_proposal_initial(observation)
        particles = sample_gaussian(key, mean, cov, (num_particles,))
        log_ratio = model.log_prob_initial(particles) - gaussian_log_prob(particles, mean, cov)
        return particles, log_ratio
    particles = model.sample_initial(key, num_particles)
    return particles, jnp.zeros(num_particles, particles.dtype)


def _propose(
    key: Array,
    model: StateSpaceModel,
    t: ArrayLike,
    x_prev: Array,
    observation: Array,
    proposal: str,
) -> tuple[Array, Array]:
    r"""Draw :math:`x_t \sim q_t(\cdot \mid x_{t-1}, y_t)`; return it and
    :math:`\log f(x_t \mid x_{t-1}) - \log q_t(x_t \mid x_{t-1}, y_t)`.

    For the bootstrap proposal :math:`q_t = f` and the ratio is exactly 0: it is not
    computed, so a bootstrap step evaluates only the observation density.
    """
    if proposal == "guided":
        mean, cov = model.optimal_proposal(t, x_prev, observation)
        particles = sample_gaussian(key, mean, cov)
        log_ratio = model.log_prob_transition(t, x_prev, particles) - gaussian_log_prob(
            particles, mean, cov
        )
        return particles, log_ratio
    particles = model.sample_transition(key, t, x_prev)
    return particles, jnp.zeros(particles.shape[0], particles.dtype)


def _reweight(
    particles: Array,
    carried_log_weights: Array,
    log_potentials: Array,
    log_evidence: Array,
    ancestors: Array,
    resampled: Array,
    temperature: Array,
) -> tuple[FilterState, FilterInfo]:
    """Multiply the carried weights by the potentials, normalise, update the evidence."""
    unnormalized = carried_log_weights + log_potentials
    increment = logsumexp(unnormalized)
    log_weights = unnormalized - increment
    log_evidence = log_evidence + increment
    info = FilterInfo(
        particles=particles,
        log_weights=log_weights,
        ancestors=ancestors,
        ess=effective_sample_size(log_weights),
        resampled=resampled,
        temperature=temperature,
        log_evidence_increment=increment,
        log_evidence=log_evidence,
    )
    return FilterState(particles, log_weights, log_evidence), info


def init(
    key: Array,
    model: StateSpaceModel,
    observation_0: ArrayLike,
    num_particles: int,
    proposal: str = "bootstrap",
) -> tuple[FilterState, FilterInfo]:
    r"""Start a particle filter at :math:`t = 0`.

    .. math::

        x_0^i \sim q_0, \qquad
        w_0^i = \frac{\mu(x_0^i)\, g(y_0 \mid x_0^i)}{q_0(x_0^i)}, \qquad
        \hat Z_0 = \frac{1}{N} \sum_i w_0^i.

    Parameters
    ----------
    key : PRNG key
    model : StateSpaceModel
    observation_0 : Array, shape (k,)
        :math:`y_0`.
    num_particles : int
        :math:`N`; static (it sets array shapes).
    proposal : {"bootstrap", "guided"}
        :math:`q_0 = \mu`, or :math:`q_0 = p(x_0 \mid y_0)` (then every
        :math:`w_0^i = p(y_0)` and :math:`\hat Z_0` is exact).

    Returns
    -------
    state : FilterState
    info : FilterInfo
        The first entry of the history :func:`run` returns.
    """
    _check_proposal(model, proposal)
    observation_0 = jnp.asarray(observation_0)
    particles, log_ratio = _propose_initial(key, model, observation_0, num_particles, proposal)
    log_potentials = log_ratio + model.log_prob_observation(0, particles, observation_0)
    uniform = jnp.full(num_particles, -jnp.log(num_particles), dtype=log_potentials.dtype)
    return _reweight(
        particles,
        uniform,
        log_potentials,
        log_evidence=jnp.zeros((), dtype=log_potentials.dtype),
        ancestors=jnp.arange(num_particles, dtype=jnp.int32),
        resampled=jnp.asarray(False),
        temperature=jnp.ones((), dtype=log_potentials.dtype),
    )


def _resample(
    key: Array, log_weights: Array, temperature: Array, scheme: Callable
) -> tuple[Array, Array]:
    r"""Draw ancestors from :math:`\tilde p \propto W^{1/\tau}`, and their log-weights.

    The offspring weights :math:`\bar w^i = W^{A^i} / (N \tilde p^{A^i})` make the
    resampled system unbiased for the weighted one; at :math:`\tau = 1` they are all
    :math:`1/N`.
    """
    num_particles = log_weights.shape[0]
    log_probs = jax.nn.log_softmax(log_weights / temperature)
    ancestors = scheme(key, jnp.exp(log_probs), num_particles)
    offspring_log_weights = log_weights[ancestors] - log_probs[ancestors] - jnp.log(num_particles)
    return ancestors, offspring_log_weights


def step(
    key: Array,
    state: FilterState,
    model: StateSpaceModel,
    t: ArrayLike,
    observation: ArrayLike,
    *,
    resampling: str = "systematic",
    proposal: str = "bootstrap",
    ess_threshold: ArrayLike = 0.5,
    annealing: AnnealingSettings = NO_ANNEALING,
    horizon: ArrayLike,
) -> tuple[FilterState, FilterInfo]:
    r"""One step of the particle filter, from :math:`t - 1` to :math:`t`.

    .. math::

        &\text{if } \mathrm{ESS}(W_{t-1}) < \kappa N:\ A \sim \mathrm{resample}(\tilde p),
          \ \bar w^i = \frac{W_{t-1}^{A^i}}{N \tilde p^{A^i}};
          \quad\text{else } A^i = i,\ \bar w^i = W_{t-1}^i \\
        &x_t^i \sim q_t(\cdot \mid x_{t-1}^{A^i}, y_t), \qquad
          G_t^i = \frac{f(x_t^i \mid x_{t-1}^{A^i})\, g(y_t \mid x_t^i)}
                       {q_t(x_t^i \mid x_{t-1}^{A^i}, y_t)} \\
        &\hat Z_t = \hat Z_{t-1} \sum_i \bar w^i G_t^i, \qquad
          W_t^i \propto \bar w^i G_t^i

    where :math:`\tilde p = \mathrm{softmax}(\log W_{t-1} / \tau)` (:math:`\tau = 1`
    without annealing, and then :math:`\bar w^i = 1/N`).

    Parameters
    ----------
    key : PRNG key
        Split into one key for resampling and one for the move.
    state : FilterState
        The filter at :math:`t - 1`.
    model : StateSpaceModel
    t : int or Array
        Current time index (:math:`\ge 1`); may be traced.
    observation : Array, shape (k,)
        :math:`y_t`.
    resampling : str
        Name of a scheme in :data:`~posteriorlab.core.smc.resampling.RESAMPLING_SCHEMES`.
    proposal : {"bootstrap", "guided"}
    ess_threshold : float or Array
        :math:`\kappa`: resample when :math:`\mathrm{ESS}_{t-1} < \kappa N`.
    annealing : AnnealingSettings
        Entropic annealing of the resampling probabilities (off by default).
    horizon : int or Array
        Number of time steps :math:`T` of the run; the annealing schedules use the
        progress :math:`t / T`.

    Returns
    -------
    state : FilterState
    info : FilterInfo
    """
    scheme = _resampling_scheme(resampling)
    _check_proposal(model, proposal)
    key_resample, key_move = jax.random.split(key)
    log_weights = state.log_weights
    num_particles = log_weights.shape[0]

    resample = effective_sample_size(log_weights) < ess_threshold * num_particles
    temperature = annealing_temperature(log_weights, t / horizon, *annealing)
    ancestors, carried_log_weights = jax.lax.cond(
        resample,
        lambda: _resample(key_resample, log_weights, temperature, scheme),
        lambda: (jnp.arange(num_particles, dtype=jnp.int32), log_weights),
    )

    x_prev = state.particles[ancestors]
    observation = jnp.asarray(observation)
    particles, log_ratio = _propose(key_move, model, t, x_prev, observation, proposal)
    log_potentials = log_ratio + model.log_prob_observation(t, particles, observation)
    return _reweight(
        particles,
        carried_log_weights,
        log_potentials,
        state.log_evidence,
        ancestors,
        resample,
        jnp.where(resample, temperature, 1.0).astype(log_weights.dtype),
    )


def _strongly_typed(tree: Any) -> Any:
    """Arrays with a fixed dtype, so a Python float and an array share one compilation."""
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=jnp.result_type(leaf)), tree)


def run(
    key: Array,
    model: StateSpaceModel,
    observations: ArrayLike,
    num_particles: int,
    *,
    resampling: str = "systematic",
    proposal: str = "bootstrap",
    ess_threshold: ArrayLike = 0.5,
    annealing: AnnealingSettings = NO_ANNEALING,
    record: Callable[[FilterInfo], Any] | None = None,
) -> Any:
    r"""Run a particle filter over a whole sequence of observations (compiled).

    Calls :func:`init` on :math:`y_0` and :func:`step` on :math:`y_1, \dots, y_{T-1}`
    inside one ``jax.lax.scan``, and returns the history of :class:`FilterInfo`.

    What recompiles: ``num_particles``, the number of observations :math:`T`,
    ``resampling``, ``proposal`` and ``record`` fix the compiled program. The model's
    parameters, ``ess_threshold`` and every field of ``annealing`` are traced values:
    changing them reuses it, so sliders stay live. ``run`` can be vmapped over keys,
    over parameters or over models to run many replicates at once.

    Parameters
    ----------
    key : PRNG key
    model : StateSpaceModel
        A model from :mod:`posteriorlab.core.smc.models`.
    observations : Array, shape (T, k)
        :math:`y_{0:T-1}`; for a univariate series ``y`` pass ``y[:, None]``.
    num_particles : int
        :math:`N`.
    resampling : str
        ``"systematic"`` (default), ``"stratified"``, ``"residual"`` or ``"multinomial"``.
    proposal : {"bootstrap", "guided"}
        ``"guided"`` uses the model's locally optimal proposal.
    ess_threshold : float or Array
        Resample when :math:`\mathrm{ESS} < \text{ess\_threshold} \cdot N`: 0 never,
        1 whenever the weights are unequal, 0.5 by default.
    annealing : AnnealingSettings
        Entropic annealing (off by default); see the module docstring.
    record : callable, optional
        Applied to each step's :class:`FilterInfo` to keep only part of it, e.g. a
        function returning ``info.log_evidence`` when running hundreds of replicates,
        so that the :math:`T \times N` particles are never stored. Define it once, at
        module level: it is part of the compiled program, and a new lambda at every
        call would recompile.

    Returns
    -------
    FilterInfo, or what ``record`` returns, stacked along a leading time axis of length T.

    Raises
    ------
    ValueError
        For an unknown scheme or proposal, a guided proposal on a model without one,
        ``num_particles < 1`` or observations that are not ``(T, k)``.
    """
    observations = jnp.asarray(observations)
    if observations.ndim != 2 or observations.shape[0] < 1:
        raise ValueError(
            f"observations must have shape (T, k) with T >= 1, got {observations.shape}; "
            "for a univariate series y pass y[:, None]."
        )
    if num_particles < 1:
        raise ValueError(f"num_particles must be at least 1, got {num_particles}.")
    _resampling_scheme(resampling)
    _check_proposal(model, proposal)
    return _run_compiled(
        key,
        _strongly_typed(model),
        observations,
        num_particles,
        resampling,
        proposal,
        _strongly_typed(ess_threshold),
        _strongly_typed(annealing),
        record,
    )


@partial(jax.jit, static_argnames=("num_particles", "resampling", "proposal", "record"))
def _run_compiled(
    key,
    model,
    observations,
    num_particles,
    resampling,
    proposal,
    ess_threshold,
    annealing,
    record,
):
    keep = (lambda info: info) if record is None else record
    num_steps = observations.shape[0]
    key_init, key_steps = jax.random.split(key)
    state, first_info = init(key_init, model, observations[0], num_particles, proposal)

    def advance(state, inputs):
        step_key, t, observation = inputs
        state, info = step(
            step_key,
            state,
            model,
            t,
            observation,
            resampling=resampling,
            proposal=proposal,
            ess_threshold=ess_threshold,
            annealing=annealing,
            horizon=num_steps,
        )
        return state, keep(info)

    step_keys = jax.random.split(key_steps, num_steps - 1)
    _, later = jax.lax.scan(advance, state, (step_keys, jnp.arange(1, num_steps), observations[1:]))
    return jax.tree.map(
        lambda first, rest: jnp.concatenate([first[None], rest]), keep(first_info), later
    )


def trace_lineages(ancestors: ArrayLike) -> Array:
    r"""Ancestral lineages of the final particles.

    Entry ``[t, i]`` is the index at time :math:`t` of the ancestor of final particle
    :math:`i`: the last row is ``arange(N)`` and, going backwards,
    :math:`B_{t-1}^i = A_t^{B_t^i}`.

    Parameters
    ----------
    ancestors : Array of int, shape (T, N)
        ``FilterInfo.ancestors`` from :func:`run`; row 0 is not used.

    Returns
    -------
    Array of int, shape (T, N)
    """
    ancestors = jnp.asarray(ancestors)
    final = jnp.arange(ancestors.shape[1], dtype=ancestors.dtype)

    def back_one_step(index_now, ancestors_now):
        index_before = ancestors_now[index_now]
        return index_before, index_before

    _, earlier = jax.lax.scan(back_one_step, final, ancestors[1:], reverse=True)
    return jnp.concatenate([earlier, final[None]])


def count_surviving_lineages(ancestors: ArrayLike) -> Array:
    r"""Number of distinct ancestors, at each time, of the final particles.

    It equals :math:`N` at the last time and can only shrink going back in time
    (lineages merge, never split), so it is non-decreasing in :math:`t`. A count
    of 1 at time :math:`t` means all final particles descend from one particle at
    :math:`t`: the paths have coalesced.

    Parameters
    ----------
    ancestors : Array of int, shape (T, N)
        ``FilterInfo.ancestors`` from :func:`run`.

    Returns
    -------
    Array of int, shape (T,)
        Values in :math:`1, \dots, N`.
    """
    lineages = trace_lineages(ancestors)
    num_particles = lineages.shape[1]

    def count_distinct(indices):
        return jnp.zeros(num_particles, dtype=bool).at[indices].set(True).sum()

    return jax.vmap(count_distinct)(lineages)
