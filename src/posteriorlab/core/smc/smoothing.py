r"""Particle smoothing: from a forward particle system to laws of whole trajectories.

Overview
--------
A particle filter approximates each *filtering* law :math:`p(x_t \mid y_{0:t})` by
weighted particles :math:`\{(\xi_t^i, W_t^i)\}_{i=1}^N`. Smoothing asks about the past
in the light of *all* the data: the marginals :math:`p(x_t \mid y_{0:T})` or
expectations of *additive functionals*

.. math::

    H_T(x_{0:T}) = h_0(x_0) + \sum_{t=1}^{T} h_t(x_{t-1}, x_t),
    \qquad \text{e.g. } \sum_t x_t,\quad \sum_t x_{t-1} x_t^\top,

which is what the EM algorithm and the Fisher-identity score need. (Time runs over the
``T`` observations ``0..T-1`` in the arrays; here :math:`T` is the last index.) This
module offers three smoothers of increasing quality, all reading only the filter output
(particles, normalised log-weights and ancestors).

The path (genealogy) smoother
    Follow each final particle's ancestral line back to time 0 and give the whole path
    the particle's final weight. It is free, but resampling makes lines coalesce: going
    back far enough, all :math:`N` paths share a handful of ancestors (*path degeneracy*),
    so early marginals are estimated from very few distinct points.

The backward decomposition
    Given the data, the states form a Markov chain backwards in time, with kernel

    .. math::

        p(x_{t-1} \mid x_t, y_{0:T}) \propto
        p(x_{t-1} \mid y_{0:t-1})\, f(x_t \mid x_{t-1}).

    Replacing the filter by its particles gives the *backward kernel* on indices,

    .. math::

        \Lambda_t(i, \ell) = \frac{W_{t-1}^\ell f(\xi_t^i \mid \xi_{t-1}^\ell)}
                                  {\sum_{m} W_{t-1}^m f(\xi_t^i \mid \xi_{t-1}^m)},

    which reuses *all* particles at :math:`t-1`, not only the ancestor. It involves the
    filtering weights and the transition density only, so it is valid whatever the
    proposal of the filter and whether or not it resampled at a given step.

FFBSm (forward filtering, backward smoothing), :math:`O(N^2)` per step
    Start from :math:`w_{T|T} = W_T` and push the smoothing weights backwards through
    :math:`\Lambda`:
    :math:`w_{t-1|T}^\ell = \sum_i w_{t|T}^i \Lambda_t(i, \ell)`. A pair term
    :math:`E[h_t(x_{t-1}, x_t) \mid y_{0:T}]` is the double sum
    :math:`\sum_{i,\ell} w_{t|T}^i \Lambda_t(i,\ell)\, h_t(\xi_{t-1}^\ell, \xi_t^i)`.

PaRIS (Olsson & Westerborn, 2017), linear cost and online
    For an additive functional, carry one statistic per particle,
    :math:`\tau_t^i \approx E[H_t \mid x_t = \xi_t^i, y_{0:t}]`, and update it with
    :math:`\tilde N` indices :math:`J^{i,1..\tilde N}` drawn from
    :math:`\Lambda_t(i, \cdot)`:

    .. math::

        \tau_t^i = \frac{1}{\tilde N} \sum_{j=1}^{\tilde N}
            \bigl[\tau_{t-1}^{J^{i,j}} + h_t(\xi_{t-1}^{J^{i,j}}, \xi_t^i)\bigr],
        \qquad
        \widehat{E}[H_t \mid y_{0:t}] = \sum_i W_t^i \tau_t^i .

    The estimate is available at every :math:`t` (online), memory does not grow with
    :math:`t`, and :math:`\tilde N = 2` suffices; :math:`\tilde N = 1` is refused, as the
    statistics then collapse onto single lines, like the path smoother.

Drawing from the backward kernel without paying :math:`O(N)` per draw
    If the transition density is bounded, :math:`f \le \bar\varepsilon`, accept–reject
    gives exact draws: propose :math:`\ell \sim \mathrm{Cat}(W_{t-1})`, accept with
    probability :math:`f(\xi_t^i \mid \xi_{t-1}^\ell) / \bar\varepsilon`. Each trial
    costs :math:`O(1)`, but the expected number of trials,
    :math:`\bar\varepsilon / \sum_\ell W_{t-1}^\ell f(\xi_t^i \mid \xi_{t-1}^\ell)`, is
    large for particles in the tails. The *hybrid* rule (Dau & Chopin, 2022) caps the
    trials and draws the remaining indices exactly from the :math:`O(N)` weights
    :math:`\Lambda_t(i,\cdot)`: the result is still an exact draw, as rejection leaves
    the law of the eventual draw unchanged. For a Gaussian transition with covariance
    :math:`Q` in dimension :math:`d`, :math:`\bar\varepsilon = (2\pi)^{-d/2}|Q|^{-1/2}`.
    Here the trials run as vectorised rounds (one proposal for every pending draw, over
    only the pending draws once few are left) and the exact draws in chunks of rows, so
    the cost follows the number of draws that actually need each route.

Bias and cost
    ============  =====================  ===============================================
    smoother      cost per step          quality
    ============  =====================  ===============================================
    genealogy     :math:`O(N)`           degenerate for early times
    FFBSm         :math:`O(N^2)`         consistent; reference for the others
    PaRIS         :math:`O(N \tilde N)`  consistent; variance above FFBSm's by a term
                                         that shrinks as :math:`\tilde N` grows
    ============  =====================  ===============================================

    All three are self-normalised, hence biased by :math:`O(1/N)`; their standard
    deviation is :math:`O(1/\sqrt N)`.

Additive functionals
    An :class:`AdditiveFunctional` holds :math:`h_0` and :math:`h_t`, written for *one*
    state (shape ``(d,)``) and vectorised here. Values may be arrays of any fixed shape.
    Ready-made: ``sum_of_states`` (:math:`\sum_t x_t`, shape ``(d,)``),
    ``sum_of_lag_one_products`` (:math:`\sum_t x_{t-1} x_t^\top`, shape ``(d, d)``)
    and :func:`marginal_means_functional` (:math:`\sum_s e_s \otimes x_s`, shape
    ``(T, d)``, whose expectation stacks every smoothed mean, in one linear-cost pass).

Compilation
    The public functions are jitted. Model parameters, particles, weights,
    ``max_trials`` and the density bound are traced, so changing them reuses the
    compiled code; the particle count, the number of steps, ``num_backward`` and the
    functional (hashed by identity: build it once, not in a loop) compile anew.

Recommended import::

    from posteriorlab.core.smc import smoothing
    result = smoothing.paris(key, model, info, smoothing.sum_of_states)
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from posteriorlab.core.smc.filtering import FilterInfo, trace_lineages

__all__ = [
    "AdditiveFunctional",
    "GenealogyPaths",
    "MarginalMoments",
    "ParisResult",
    "ffbsm_additive",
    "ffbsm_marginals",
    "genealogy_smoother",
    "marginal_means_functional",
    "marginal_moments",
    "paris",
    "sum_of_lag_one_products",
    "sum_of_states",
]


# --------------------------------------------------------------------------------------
# Additive functionals
# --------------------------------------------------------------------------------------


class AdditiveFunctional(NamedTuple):
    r"""An additive functional :math:`H(x_{0:T}) = h_0(x_0) + \sum_{t\ge1} h_t(x_{t-1}, x_t)`.

    Attributes
    ----------
    initial
        ``initial(x) -> value``: :math:`h_0(x_0)` for one state ``x`` of shape ``(d,)``.
    increment
        ``increment(t, x_prev, x) -> value``: :math:`h_t(x_{t-1}, x_t)` for one pair of
        states of shape ``(d,)``; ``t`` is the (traced) time index of ``x``. It must
        return the same shape and dtype as ``initial``.
    """

    initial: Callable[[jax.Array], jax.Array]
    increment: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


sum_of_states = AdditiveFunctional(
    initial=lambda x: x,
    increment=lambda t, x_prev, x: x,
)
"""The functional :math:`\\sum_t x_t`, of shape ``(d,)``."""

sum_of_lag_one_products = AdditiveFunctional(
    initial=lambda x: jnp.zeros((x.shape[0], x.shape[0]), x.dtype),
    increment=lambda t, x_prev, x: jnp.outer(x_prev, x),
)
"""The functional :math:`\\sum_{t\\ge1} x_{t-1} x_t^\\top`, of shape ``(d, d)``."""


def marginal_means_functional(num_steps: int) -> AdditiveFunctional:
    r"""The functional :math:`\sum_s e_s \otimes x_s`, whose expectation stacks all means.

    Its value is the ``(num_steps, d)`` array whose row :math:`s` is :math:`x_s`, so its
    smoothing expectation is the array of every smoothed mean
    :math:`E[x_s \mid y_{0:T}]`, obtained by PaRIS at linear cost in :math:`N`. The
    online PaRIS estimate at time :math:`t` holds :math:`E[x_s \mid y_{0:t}]` in rows
    :math:`s \le t` and zeros in the rows :math:`s > t`.

    Parameters
    ----------
    num_steps
        The number ``T`` of observations the smoother will run on. It must not be
        smaller: a time index past the last row is silently dropped (JAX scatter).

    Returns
    -------
    AdditiveFunctional

    Raises
    ------
    ValueError
        If ``num_steps`` is not a positive integer.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(
            f"num_steps must be a positive int, the number T of observations; got "
            f"{num_steps!r}. Pass observations.shape[0]."
        )

    def place(t, x):
        return jnp.zeros((num_steps, *x.shape), x.dtype).at[t].set(x)

    return AdditiveFunctional(
        initial=lambda x: place(0, x),
        increment=lambda t, x_prev, x: place(t, x),
    )


def _pairwise(functional: AdditiveFunctional, t, particles_prev, particles) -> jax.Array:
    """``h_t(particles_prev[..., l], particles[i])`` for every i and every row l.

    ``particles`` has shape ``(N, d)``; ``particles_prev`` has shape ``(M, d)`` (the same
    previous states for every i) or ``(N, M, d)`` (its own row for each i). Returns
    shape ``(N, M, *value_shape)``.
    """
    over_prev = jax.vmap(functional.increment, in_axes=(None, 0, None))
    prev_axis = 0 if particles_prev.ndim == 3 else None
    return jax.vmap(over_prev, in_axes=(None, prev_axis, 0))(t, particles_prev, particles)


def _weighted_sum(log_weights: jax.Array, values: jax.Array) -> jax.Array:
    """Contract ``exp(log_weights)`` with the leading axes of ``values``."""
    return jnp.tensordot(jnp.exp(log_weights), values, axes=log_weights.ndim)


# --------------------------------------------------------------------------------------
# Path (genealogy) smoother
# --------------------------------------------------------------------------------------


class GenealogyPaths(NamedTuple):
    """Ancestral lines of the final particles, with their weights.

    Attributes
    ----------
    paths
        Shape ``(T, N, d)``: ``paths[:, i]`` is the trajectory of final particle ``i``.
    log_weights
        Shape ``(N,)``: the normalised final filtering log-weights, one per path.
    """

    paths: jax.Array
    log_weights: jax.Array


@jax.jit
def genealogy_smoother(info: FilterInfo) -> GenealogyPaths:
    r"""The path smoother: trace every final particle's ancestral line back to time 0.

    With :math:`a_t^i` the index at time :math:`t` of the ancestor of final particle
    :math:`i`, the smoothing law is approximated by
    :math:`\sum_i W_T^i \delta_{(\xi_0^{a_0^i}, \ldots, \xi_T^{a_T^i})}`. At the last
    step this is the filter itself; earlier, the paths coalesce (path degeneracy).

    Parameters
    ----------
    info
        The stacked output of :func:`posteriorlab.core.smc.filtering.run`.

    Returns
    -------
    GenealogyPaths
        The ``(T, N, d)`` paths and the ``(N,)`` final log-weights.
    """
    lineages = trace_lineages(info.ancestors)
    paths = jnp.take_along_axis(info.particles, lineages[..., None], axis=1)
    return GenealogyPaths(paths=paths, log_weights=info.log_weights[-1])


# --------------------------------------------------------------------------------------
# The backward kernel and FFBSm
# --------------------------------------------------------------------------------------


class _Step(NamedTuple):
    """The forward particle system around one step ``t >= 1``, as the backward kernel sees it.

    Stacked over ``t = 1..T-1`` by :func:`_steps`, so that a scan slices one at a time.
    """

    t: jax.Array  # () int, the time index of `particles`
    log_weights_prev: jax.Array  # (N,) normalised filtering log-weights at t-1
    particles_prev: jax.Array  # (N, d) particles at t-1
    particles: jax.Array  # (N, d) particles at t


def _steps(info: FilterInfo) -> _Step:
    """The :class:`_Step` of every ``t = 1..T-1``, stacked along a leading axis."""
    return _Step(
        t=jnp.arange(1, info.particles.shape[0]),
        log_weights_prev=info.log_weights[:-1],
        particles_prev=info.particles[:-1],
        particles=info.particles[1:],
    )


def _log_backward_kernel(model, step: _Step, particles: jax.Array) -> jax.Array:
    r"""The matrix :math:`\log \Lambda_t(i, \ell)` for given states, rows normalised over ``ℓ``.

    Row ``i`` is the backward law of the index at :math:`t-1` given the state
    ``particles[i]`` at :math:`t`:
    :math:`\Lambda_t(i,\ell) \propto W_{t-1}^\ell f(x_t^i \mid \xi_{t-1}^\ell)`.
    ``particles`` is ``(B, d)``, usually ``step.particles``; the result is ``(B, N)``.
    """
    log_joint = step.log_weights_prev[None, :] + model.log_prob_transition(
        step.t, step.particles_prev[None, :, :], particles[:, None, :]
    )
    return log_joint - logsumexp(log_joint, axis=1, keepdims=True)


@jax.jit
def ffbsm_marginals(model, info: FilterInfo) -> jax.Array:
    r"""Log smoothing weights of every particle, by the FFBSm backward recursion.

    A reverse ``jax.lax.scan`` from :math:`w_{T|T} = W_T`:

    .. math::

        \log w_{t-1|T}^\ell = \log W_{t-1}^\ell + \operatorname{LSE}_i \Bigl[
            \log w_{t|T}^i + \log f(\xi_t^i \mid \xi_{t-1}^\ell)
            - \operatorname{LSE}_m \bigl(\log W_{t-1}^m + \log f(\xi_t^i \mid \xi_{t-1}^m)\bigr)
        \Bigr].

    Cost :math:`O(N^2)` transition-density evaluations per step. The pairs
    ``(info.particles[t], weights[t])`` approximate :math:`p(x_t \mid y_{0:T})`; see
    :func:`marginal_moments` for their means and variances.

    Parameters
    ----------
    model
        The state-space model the filter ran on; uses ``log_prob_transition``.
    info
        The stacked output of :func:`posteriorlab.core.smc.filtering.run`.

    Returns
    -------
    jax.Array
        Shape ``(T, N)``: normalised log smoothing weights; the last row is the final
        filtering log-weights.
    """

    def backward(log_smoothing_next, step):
        log_kernel = _log_backward_kernel(model, step, step.particles)
        log_smoothing = logsumexp(log_smoothing_next[:, None] + log_kernel, axis=0)
        return log_smoothing, log_smoothing

    last = info.log_weights[-1]
    _, earlier = jax.lax.scan(backward, last, _steps(info), reverse=True)
    return jnp.concatenate([earlier, last[None]])


@partial(jax.jit, static_argnames="functional")
def ffbsm_additive(model, info: FilterInfo, functional: AdditiveFunctional) -> jax.Array:
    r"""FFBSm estimate of :math:`E[H(x_{0:T}) \mid y_{0:T}]` for an additive functional.

    With the smoothing weights :math:`w_{t|T}` of :func:`ffbsm_marginals`,

    .. math::

        \widehat{E}[H] = \sum_\ell w_{0|T}^\ell h_0(\xi_0^\ell)
        + \sum_{t \ge 1} \sum_{i, \ell} w_{t|T}^i \Lambda_t(i, \ell)\,
          h_t(\xi_{t-1}^\ell, \xi_t^i),

    the pair weights :math:`w_{t|T}^i \Lambda_t(i,\ell)` approximating
    :math:`p(x_{t-1}, x_t \mid y_{0:T})`. Cost :math:`O(N^2)` evaluations of both the
    transition density and :math:`h_t` per step (one step at a time in memory).

    Parameters
    ----------
    model
        The state-space model the filter ran on; uses ``log_prob_transition``.
    info
        The stacked output of :func:`posteriorlab.core.smc.filtering.run`.
    functional
        The additive functional :math:`H`.

    Returns
    -------
    jax.Array
        The estimate, with the shape of the functional's values.
    """
    log_smoothing = ffbsm_marginals(model, info)

    def pair_term(inputs):
        log_smoothing_t, step = inputs
        log_pair = log_smoothing_t[:, None] + _log_backward_kernel(model, step, step.particles)
        values = _pairwise(functional, step.t, step.particles_prev, step.particles)
        return _weighted_sum(log_pair, values)

    pair_terms = jax.lax.map(pair_term, (log_smoothing[1:], _steps(info)))
    initial_values = jax.vmap(functional.initial)(info.particles[0])
    return _weighted_sum(log_smoothing[0], initial_values) + jnp.sum(pair_terms, axis=0)


class MarginalMoments(NamedTuple):
    """Weighted means and variances of a particle approximation, per time step.

    Attributes
    ----------
    means, variances
        Shape ``(T, d)`` each; ``variances`` are per coordinate.
    """

    means: jax.Array
    variances: jax.Array


@jax.jit
def marginal_moments(particles: jax.Array, log_weights: jax.Array) -> MarginalMoments:
    r"""Means and variances of weighted particles, e.g. FFBSm's smoothing marginals.

    :math:`\hat m_t = \sum_i w_t^i \xi_t^i` and
    :math:`\hat v_t = \sum_i w_t^i (\xi_t^i - \hat m_t)^2` (coordinate-wise).

    Parameters
    ----------
    particles
        Shape ``(T, N, d)``.
    log_weights
        Shape ``(T, N)``, normalised at each ``t`` (smoothing or filtering weights).

    Returns
    -------
    MarginalMoments
        Means and variances of shape ``(T, d)``, e.g. for drawing mean ± 2 sd bands.
    """
    weights = jnp.exp(log_weights)
    means = jnp.einsum("tn,tnd->td", weights, particles)
    variances = jnp.einsum("tn,tnd->td", weights, (particles - means[:, None, :]) ** 2)
    return MarginalMoments(means=means, variances=variances)


# --------------------------------------------------------------------------------------
# PaRIS
# --------------------------------------------------------------------------------------


class ParisResult(NamedTuple):
    r"""Online PaRIS estimates of an additive functional, and the cost of the draws.

    Attributes
    ----------
    estimates
        Shape ``(T, *value_shape)``: at each ``t``, the estimate of
        :math:`E[H_t(x_{0:t}) \mid y_{0:t}]` (the functional summed up to ``t``).
    estimate
        Shape ``value_shape``: the final estimate of :math:`E[H(x_{0:T}) \mid y_{0:T}]`,
        equal to ``estimates[-1]``.
    num_proposals
        Shape ``(T,)``, int32: accept–reject proposals made at each step (0 at ``t=0``);
        divide by ``N * num_backward`` for the mean number of trials per draw.
    num_exact_draws
        Shape ``(T,)``, int32: backward indices drawn by the exact :math:`O(N)` fallback
        at each step, after ``max_trials`` rejections.
    """

    estimates: jax.Array
    estimate: jax.Array
    num_proposals: jax.Array
    num_exact_draws: jax.Array


def _log_transition_density_bound(model) -> jax.Array:
    r""":math:`\log\bar\varepsilon`, an upper bound of :math:`\log f_t(x \mid x_{t-1})`,
    from the model's ``log_transition_density_bound()`` method."""
    if not hasattr(model, "log_transition_density_bound"):
        raise TypeError(
            f"PaRIS draws backward indices by accept-reject, which needs an upper bound "
            f"on the transition density; {type(model).__name__} has no "
            f"`log_transition_density_bound()` method. Pass log_transition_bound explicitly "
            f"(for a Gaussian transition with standard deviation sigma: "
            f"-0.5 * log(2 * pi * sigma**2)), or use ffbsm_additive."
        )
    return jnp.asarray(model.log_transition_density_bound())


def _inverse_cdf(cdf: jax.Array, uniforms: jax.Array) -> jax.Array:
    """Indices ``i`` with ``cdf[i-1] <= u * cdf[-1] < cdf[i]``: categorical draws.

    ``side="right"`` never returns a zero-weight index; the clip guards against round-off.
    """
    indices = jnp.searchsorted(cdf, uniforms * cdf[-1], side="right")
    return jnp.clip(indices, 0, cdf.shape[0] - 1).astype(jnp.int32)


_NARROW_WIDTH = 64
"""Accept–reject rounds cover only the pending draws once at most this many are left."""

_EXACT_CHUNK_EVALUATIONS = 2**14
"""Transition densities evaluated per chunk of exact draws (at least 64 rows of N)."""


class _Draws(NamedTuple):
    """The ``M = N Ñ`` backward draws of one step, flattened (draw ``m`` is for particle
    ``m // Ñ``), while they are being drawn."""

    indices: jax.Array  # (M,) int32 ancestor indices, valid where not pending
    pending: jax.Array  # (M,) bool, draws not yet made
    num_rounds: jax.Array  # () int32, accept–reject proposals made by each pending draw
    num_proposals: jax.Array  # () int32, accept–reject proposals made in total


def _accept_reject_round(key, model, step: _Step, draws: _Draws, slots, log_bound) -> _Draws:
    r"""One proposal for every pending draw listed in ``slots``.

    ``slots`` holds flat draw ids, ``M`` marking an empty slot. Propose
    :math:`\ell \sim \mathrm{Cat}(W_{t-1})` and accept when
    :math:`\log U \le \log f(\xi_t^i \mid \xi_{t-1}^\ell) - \log\bar\varepsilon`.
    """
    num_draws = draws.indices.shape[0]
    num_backward = num_draws // step.particles.shape[0]
    ids = jnp.minimum(slots, num_draws - 1)
    active = (slots < num_draws) & draws.pending[ids]
    # One uniform to propose with and one to accept with, per slot; 1 - u lies in (0, 1].
    uniforms = jax.random.uniform(jax.random.fold_in(key, draws.num_rounds), (2, *slots.shape))
    cdf = jnp.cumsum(jnp.exp(step.log_weights_prev))
    proposals = _inverse_cdf(cdf, uniforms[0])
    log_density = model.log_prob_transition(
        step.t, step.particles_prev[proposals], step.particles[ids // num_backward]
    )
    log_uniform = jnp.log1p(-uniforms[1])
    accepted = active & (log_uniform <= log_density - log_bound)
    return _Draws(
        # Empty slots (id M) are dropped, so they never overwrite draw M - 1.
        indices=draws.indices.at[slots].set(
            jnp.where(accepted, proposals, draws.indices[ids]), mode="drop"
        ),
        pending=draws.pending.at[slots].set(draws.pending[ids] & ~accepted, mode="drop"),
        num_rounds=draws.num_rounds + 1,
        num_proposals=draws.num_proposals + jnp.sum(active, dtype=jnp.int32),
    )


def _pending_slots(draws: _Draws, width: int) -> jax.Array:
    """Flat ids of up to ``width`` pending draws, padded with the empty-slot id ``M``."""
    num_draws = draws.indices.shape[0]
    return jnp.nonzero(draws.pending, size=width, fill_value=num_draws)[0]


def _accept_reject(key, model, step: _Step, draws: _Draws, max_trials, log_bound) -> _Draws:
    """Accept–reject rounds until every draw is made or has made ``max_trials`` proposals.

    Wide rounds cover all ``M`` draws while many are pending; once at most
    ``_NARROW_WIDTH`` are, the rounds cover only those, so the long tail of
    low-acceptance draws costs O(64) per round instead of O(M).
    """
    width = min(draws.indices.shape[0], _NARROW_WIDTH)
    all_slots = jnp.arange(draws.indices.shape[0])

    def wide_round(draws):
        return _accept_reject_round(key, model, step, draws, all_slots, log_bound)

    def many_pending(draws):
        return (draws.num_rounds < max_trials) & (jnp.sum(draws.pending) > width)

    draws = jax.lax.while_loop(many_pending, wide_round, draws)
    narrow_slots = _pending_slots(draws, width)

    def narrow_round(draws):
        return _accept_reject_round(key, model, step, draws, narrow_slots, log_bound)

    def some_pending(draws):
        return (draws.num_rounds < max_trials) & jnp.any(draws.pending)

    return jax.lax.while_loop(some_pending, narrow_round, draws)


def _exact_fallback(key, model, step: _Step, draws: _Draws) -> jax.Array:
    r"""Make the still-pending draws exactly, a chunk of rows at a time.

    A draw for particle :math:`i` costs one row :math:`\Lambda_t(i, \cdot)`, :math:`O(N)`,
    so the cost is proportional to the number of pending draws, and nothing runs when
    none is. Returns the completed ``(M,)`` indices.
    """
    num_particles = step.particles.shape[0]
    rows_per_chunk = max(_NARROW_WIDTH, _EXACT_CHUNK_EVALUATIONS // num_particles)
    width = min(draws.indices.shape[0], rows_per_chunk)
    num_backward = draws.indices.shape[0] // num_particles

    def exact_chunk(state):
        draws, num_chunks = state
        slots = _pending_slots(draws, width)
        rows = jnp.minimum(slots, draws.indices.shape[0] - 1) // num_backward
        log_kernel = _log_backward_kernel(model, step, step.particles[rows])
        uniforms = jax.random.uniform(jax.random.fold_in(key, num_chunks), (width,))
        exact = jax.vmap(_inverse_cdf)(jnp.cumsum(jnp.exp(log_kernel), axis=1), uniforms)
        draws = draws._replace(
            indices=draws.indices.at[slots].set(exact, mode="drop"),
            pending=draws.pending.at[slots].set(False, mode="drop"),
        )
        return draws, num_chunks + 1

    def some_pending(state):
        return jnp.any(state[0].pending)

    start = (draws, jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(some_pending, exact_chunk, start)[0].indices


def _backward_indices(
    key, model, step: _Step, num_backward, max_trials, log_bound
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Hybrid backward draws: accept–reject, then exact draws for those that hit the cap.

    Returns the ``(N, Ñ)`` indices, the number of proposals and the number of exact
    draws.
    """
    key_accept_reject, key_exact = jax.random.split(key)
    num_draws = step.particles.shape[0] * num_backward
    start = _Draws(
        indices=jnp.zeros(num_draws, jnp.int32),
        pending=jnp.ones(num_draws, bool),
        num_rounds=jnp.zeros((), jnp.int32),
        num_proposals=jnp.zeros((), jnp.int32),
    )
    draws = _accept_reject(key_accept_reject, model, step, start, max_trials, log_bound)
    indices = _exact_fallback(key_exact, model, step, draws)
    num_exact = jnp.sum(draws.pending, dtype=jnp.int32)
    return indices.reshape(-1, num_backward), draws.num_proposals, num_exact


def _check_num_backward(num_backward) -> None:
    """Raise a ValueError unless ``num_backward`` is an int >= 2."""
    if not isinstance(num_backward, int) or num_backward < 2:
        raise ValueError(
            f"num_backward must be an int >= 2; got {num_backward!r}. With a single "
            f"backward draw per particle PaRIS degenerates like the path smoother; the "
            f"usual choice is num_backward=2."
        )


@partial(jax.jit, static_argnames=("functional", "num_backward"))
def paris(
    key: jax.Array,
    model,
    info: FilterInfo,
    functional: AdditiveFunctional,
    num_backward: int = 2,
    max_trials: int | jax.Array = 32,
    log_transition_bound: jax.Array | None = None,
) -> ParisResult:
    r"""PaRIS: online smoothing of an additive functional at linear cost.

    Start from :math:`\tau_0^i = h_0(\xi_0^i)`. At each :math:`t \ge 1`, draw for every
    particle :math:`i` the indices :math:`J^{i,1..\tilde N}` i.i.d. from the backward
    kernel :math:`\Lambda_t(i,\ell) \propto W_{t-1}^\ell f(\xi_t^i \mid \xi_{t-1}^\ell)`
    and set

    .. math::

        \tau_t^i = \frac{1}{\tilde N} \sum_{j=1}^{\tilde N}
            \bigl[\tau_{t-1}^{J^{i,j}} + h_t(\xi_{t-1}^{J^{i,j}}, \xi_t^i)\bigr],
        \qquad
        \widehat{E}[H_t \mid y_{0:t}] = \sum_i W_t^i \tau_t^i .

    Backward indices are drawn by the hybrid rule: accept–reject (proposal
    :math:`\mathrm{Cat}(W_{t-1})`, acceptance probability
    :math:`f(\xi_t^i \mid \xi_{t-1}^\ell)/\bar\varepsilon`), vectorised as rounds in
    which every pending draw makes one proposal; a draw still rejected after
    ``max_trials`` proposals is made exactly from :math:`\Lambda_t(i,\cdot)` at cost
    :math:`O(N)`. Both routes give the same law, so ``max_trials`` only trades cost.

    The kernel uses the filtering weights :math:`W_{t-1}` of ``info``, so the smoother is
    correct for any proposal and with adaptive resampling. It is biased by
    :math:`O(1/N)`, like every self-normalised estimate.

    Parameters
    ----------
    key
        PRNG key; split into one key per time step.
    model
        The state-space model the filter ran on; uses ``log_prob_transition``.
    info
        The stacked output of :func:`posteriorlab.core.smc.filtering.run`.
    functional
        The additive functional :math:`H` (see :class:`AdditiveFunctional`).
    num_backward
        :math:`\tilde N \ge 2`, backward draws per particle and step (static).
    max_trials
        Accept–reject proposals per draw before the exact fallback (may be traced);
        ``0`` or less makes every draw exactly, :math:`O(N^2 \tilde N)` per step. A
        round costs :math:`O(N \tilde N)` while many draws are pending and
        :math:`O(64)` once at most 64 are, and an exact draw :math:`O(N)`: the default
        32 rounds leave only the draws of particles in the far tails to the fallback.
    log_transition_bound
        :math:`\log\bar\varepsilon`, an upper bound of
        :math:`\log f_t(x_t \mid x_{t-1})` over all states and times (traced). By
        default the model's ``log_transition_density_bound()``, or else the peak of its
        Gaussian transition, :math:`-\tfrac d2 \log 2\pi - \tfrac12 \log|Q|`, from
        ``transition_cov`` or ``transition_var``. A value below the true supremum
        biases the draws.

    Returns
    -------
    ParisResult
        Online estimates ``(T, *value_shape)``, the final estimate, and per-step counts of
        proposals and exact draws.

    Raises
    ------
    ValueError
        If ``num_backward`` is not an int ``>= 2``.
    TypeError
        If no bound is given and the model provides none (see ``log_transition_bound``).
    """
    _check_num_backward(num_backward)
    if log_transition_bound is None:
        log_transition_bound = _log_transition_density_bound(model)

    def forward(statistics, inputs):
        key_t, step, log_weights = inputs
        indices, num_proposals, num_exact = _backward_indices(
            key_t, model, step, num_backward, max_trials, log_transition_bound
        )
        increments = _pairwise(functional, step.t, step.particles_prev[indices], step.particles)
        statistics = jnp.mean(statistics[indices] + increments, axis=1)
        return statistics, (_weighted_sum(log_weights, statistics), num_proposals, num_exact)

    initial_statistics = jax.vmap(functional.initial)(info.particles[0])
    keys = jax.random.split(key, info.particles.shape[0] - 1)
    inputs = (keys, _steps(info), info.log_weights[1:])
    _, (later, num_proposals, num_exact) = jax.lax.scan(forward, initial_statistics, inputs)
    estimates = jnp.concatenate(
        [_weighted_sum(info.log_weights[0], initial_statistics)[None], later]
    )
    no_draws = jnp.zeros((1,), jnp.int32)
    return ParisResult(
        estimates=estimates,
        estimate=estimates[-1],
        num_proposals=jnp.concatenate([no_draws, num_proposals]),
        num_exact_draws=jnp.concatenate([no_draws, num_exact]),
    )
