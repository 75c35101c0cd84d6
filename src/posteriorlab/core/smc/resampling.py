r"""Resampling: turning weighted particles into equally weighted ones.

A particle filter carries :math:`N` particles :math:`x^1, \dots, x^N` with normalised
weights :math:`W^1, \dots, W^N`. After a few steps most of the weight sits on a few
particles and the others are wasted computation. *Resampling* draws ancestor indices
:math:`A^1, \dots, A^M \in \{0, \dots, N-1\}` so that particle :math:`i` gets
:math:`O_i = \#\{m : A^m = i\}` offspring with

.. math::

    \mathbb{E}[O_i] = M W^i \qquad \text{(unbiasedness)},

and the offspring then carry equal weights :math:`1/M`. Heavy particles are copied,
light ones die out. Unbiasedness is what keeps the evidence estimate of the filter
unbiased; the schemes differ only in how much noise the counts :math:`O_i` add.

Every scheme here inverts the cumulative distribution of :math:`W`: given uniforms
:math:`U^1, \dots, U^M` in :math:`[0, 1)`, the ancestor of :math:`U^m` is the first
:math:`i` with :math:`W^0 + \dots + W^i > U^m`. They differ in the uniforms:

========================  =========================================================
scheme                    uniforms :math:`U^m`, :math:`m = 0, \dots, M-1`
========================  =========================================================
:func:`multinomial`       independent :math:`U(0, 1)`: :math:`O \sim \mathrm{Mult}(M, W)`
:func:`stratified`        :math:`(m + u_m)/M`, one independent :math:`u_m` per stratum
:func:`systematic`        :math:`(m + u)/M`, one :math:`u` shared by all strata
:func:`residual`          copy :math:`\lfloor M W^i \rfloor` times, then multinomial on the rest
========================  =========================================================

Multinomial resampling is the easiest to explain and the noisiest. Stratified and
residual resampling never have a larger variance. Systematic resampling gives each
particle :math:`\lfloor M W^i \rfloor` or :math:`\lfloor M W^i \rfloor + 1` offspring and
is usually the best in practice, though no theorem says it always is. If in doubt, use
systematic resampling, the default of :func:`posteriorlab.core.smc.filtering.run`.

All schemes have the signature ``scheme(key, weights, num_samples) -> ancestors``.
Shapes are static, so they run under ``jax.jit`` and ``jax.vmap``. The cumulative
sum is divided by its last entry and the indices are clipped to :math:`N-1`, because a
floating-point cumulative sum can end just below one.

Log-weights and their summaries
-------------------------------
Weights are stored as log-weights, which neither overflow nor underflow:
:func:`normalize` and :func:`effective_sample_size` take log-weights. The effective
sample size :math:`\mathrm{ESS} = 1 / \sum_i (W^i)^2` lies between 1 (one particle
carries all the weight) and :math:`N` (equal weights).

Entropic annealing
------------------
Entropic particle filtering (ePF) flattens the resampling distribution early in a
run, when the weights have collapsed, so that diversity is not lost before the later
observations arrive. It resamples from

.. math::

    \tilde p^i \propto (W^i)^{1/\tau}, \qquad \tau \ge 1,

with a temperature :math:`\tau` set by a schedule (:func:`ess_temperature`,
:func:`entropy_temperature`) and switched on only by a trigger
(:func:`annealing_temperature`): :math:`\tau = 1` (no annealing) unless
:math:`\mathrm{ESS}/N` is below a threshold and the run is still in its early phase.

Recommended import::

    from posteriorlab.core.smc import resampling

    ancestors = resampling.systematic(key, resampling.normalize(log_weights), num_samples)
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import entr, logsumexp
from jax.typing import ArrayLike

__all__ = [
    "ANNEALING_SCHEDULES",
    "RESAMPLING_SCHEMES",
    "annealing_temperature",
    "effective_sample_size",
    "entropy_temperature",
    "ess_temperature",
    "multinomial",
    "normalize",
    "normalized_entropy",
    "residual",
    "stratified",
    "systematic",
]


def normalize(log_weights: ArrayLike) -> Array:
    r"""Normalised weights :math:`W^i = e^{\ell^i} / \sum_j e^{\ell^j}` from log-weights.

    Computed with a log-sum-exp, so log-weights of any magnitude are safe.

    Parameters
    ----------
    log_weights : Array, shape (N,)
        Unnormalised log-weights :math:`\ell^i`; ``-inf`` means weight zero.

    Returns
    -------
    Array, shape (N,)
        Weights that sum to one.
    """
    log_weights = jnp.asarray(log_weights)
    return jnp.exp(log_weights - logsumexp(log_weights))


def effective_sample_size(log_weights: ArrayLike) -> Array:
    r"""Effective sample size :math:`1 / \sum_i (W^i)^2` of log-weights.

    It equals :math:`N` for equal weights and 1 when one particle has all the weight;
    it is :math:`\exp H_2(W)`, the exponential of the Rényi entropy of order 2. In log
    space: :math:`\log \mathrm{ESS} = 2\,\mathrm{LSE}(\ell) - \mathrm{LSE}(2\ell)`.

    Parameters
    ----------
    log_weights : Array, shape (N,)
        Unnormalised log-weights.

    Returns
    -------
    Array, shape ()
    """
    log_weights = jnp.asarray(log_weights)
    return jnp.exp(2.0 * logsumexp(log_weights) - logsumexp(2.0 * log_weights))


def normalized_entropy(log_weights: ArrayLike) -> Array:
    r"""Shannon entropy of the weights divided by its maximum, :math:`\log N`.

    .. math::

        H_n = -\frac{1}{\log N} \sum_i W^i \log W^i \in [0, 1],

    0 when one particle has all the weight, 1 for equal weights (and 1 when
    :math:`N = 1`, where the weights cannot be unequal).

    Parameters
    ----------
    log_weights : Array, shape (N,)
        Unnormalised log-weights.

    Returns
    -------
    Array, shape ()
    """
    num_particles = jnp.shape(log_weights)[0]
    if num_particles == 1:
        return jnp.ones((), dtype=jnp.result_type(log_weights, float))
    return jnp.sum(entr(normalize(log_weights))) / jnp.log(num_particles)


def _inverse_cdf(uniforms: Array, weights: ArrayLike) -> Array:
    """Ancestor of each uniform: the first index whose cumulative weight exceeds it."""
    cumulative = jnp.cumsum(jnp.asarray(weights))
    cumulative = cumulative / cumulative[-1]
    ancestors = jnp.searchsorted(cumulative, uniforms, side="right")
    return jnp.clip(ancestors, 0, cumulative.shape[0] - 1).astype(jnp.int32)


def _uniform(key: Array, shape: tuple[int, ...], weights: ArrayLike) -> Array:
    return jax.random.uniform(key, shape, dtype=jnp.result_type(weights, float))


def multinomial(key: Array, weights: ArrayLike, num_samples: int) -> Array:
    r"""Multinomial resampling: ``num_samples`` independent draws from :math:`W`.

    The offspring counts are :math:`O \sim \mathrm{Multinomial}(M, W)`, with variance
    :math:`M W^i (1 - W^i)`: the baseline every other scheme improves on. The indices
    come out in random (exchangeable) order.

    Parameters
    ----------
    key : PRNG key
    weights : Array, shape (N,)
        Normalised weights (non-negative, summing to one).
    num_samples : int
        Number :math:`M` of indices to draw; static.

    Returns
    -------
    Array of int32, shape (num_samples,)
        Ancestor indices in ``[0, N)``.
    """
    return _inverse_cdf(_uniform(key, (num_samples,), weights), weights)


def stratified(key: Array, weights: ArrayLike, num_samples: int) -> Array:
    r"""Stratified resampling: one uniform in each stratum :math:`[m/M, (m+1)/M)`.

    .. math:: U^m = \frac{m + u_m}{M}, \qquad u_m \sim U(0, 1) \text{ independent}.

    Unbiased, with count variance never above multinomial; each particle gets between
    :math:`\lfloor M W^i \rfloor - 1` and :math:`\lceil M W^i \rceil + 1` offspring.
    Indices come out sorted.

    Parameters
    ----------
    key : PRNG key
    weights : Array, shape (N,)
        Normalised weights.
    num_samples : int
        Number :math:`M` of indices to draw; static.

    Returns
    -------
    Array of int32, shape (num_samples,)
    """
    offsets = _uniform(key, (num_samples,), weights)
    return _inverse_cdf((jnp.arange(num_samples) + offsets) / num_samples, weights)


def systematic(key: Array, weights: ArrayLike, num_samples: int) -> Array:
    r"""Systematic resampling: one shared uniform shifted across all strata.

    .. math:: U^m = \frac{m + u}{M}, \qquad u \sim U(0, 1).

    Unbiased, and each particle gets :math:`\lfloor M W^i \rfloor` or
    :math:`\lfloor M W^i \rfloor + 1` offspring: the least noisy scheme in practice, and
    the recommended default. Indices come out sorted.

    Parameters
    ----------
    key : PRNG key
    weights : Array, shape (N,)
        Normalised weights.
    num_samples : int
        Number :math:`M` of indices to draw; static.

    Returns
    -------
    Array of int32, shape (num_samples,)
    """
    offset = _uniform(key, (), weights)
    return _inverse_cdf((jnp.arange(num_samples) + offset) / num_samples, weights)


def residual(key: Array, weights: ArrayLike, num_samples: int) -> Array:
    r"""Residual resampling: deterministic copies first, multinomial on what is left.

    Particle :math:`i` first gets :math:`\lfloor M W^i \rfloor` copies. The remaining
    :math:`R = M - \sum_i \lfloor M W^i \rfloor` indices are drawn independently from the
    residual weights :math:`(M W^i - \lfloor M W^i \rfloor)/R`. Unbiased, with count
    variance never above multinomial. The deterministic copies come first, in index
    order.

    Parameters
    ----------
    key : PRNG key
    weights : Array, shape (N,)
        Normalised weights.
    num_samples : int
        Number :math:`M` of indices to draw; static.

    Returns
    -------
    Array of int32, shape (num_samples,)
    """
    weights = jnp.asarray(weights)
    scaled = num_samples * weights / jnp.sum(weights)
    copies = jnp.floor(scaled)
    num_copied = jnp.sum(copies)
    leftover = scaled - copies
    # When nothing is left over (R = 0) the random part is unused; uniform weights keep it finite.
    leftover = jnp.where(num_copied < num_samples, leftover, jnp.ones_like(leftover))
    positions = jnp.arange(num_samples)
    copied_ancestors = jnp.searchsorted(jnp.cumsum(copies), positions, side="right")
    copied_ancestors = jnp.clip(copied_ancestors, 0, weights.shape[0] - 1).astype(jnp.int32)
    drawn_ancestors = multinomial(key, leftover, num_samples)
    return jnp.where(positions < num_copied, copied_ancestors, drawn_ancestors)


RESAMPLING_SCHEMES: dict[str, Callable[[Array, ArrayLike, int], Array]] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}
"""Resampling schemes by name, as chosen in the labs."""


def ess_temperature(ess_fraction: ArrayLike, progress: ArrayLike) -> Array:
    r"""Annealing temperature of the ESS schedule of entropic particle filtering.

    .. math::

        \tau = \max\!\left(1, \frac{1 - \pi}{\rho}\right)
             = \max\!\left(1, \frac{N}{\mathrm{ESS}}\left(1 - \frac{t}{T}\right)\right),

    where :math:`\rho = \mathrm{ESS}/N` and :math:`\pi = t/T` is the progress through
    the run. The more the weights have collapsed, the flatter the resampling; the
    effect fades linearly as the run proceeds.

    Parameters
    ----------
    ess_fraction : float or Array
        :math:`\rho \in (0, 1]`.
    progress : float or Array
        :math:`\pi \in [0, 1]`.

    Returns
    -------
    Array
        :math:`\tau \ge 1`.
    """
    return jnp.maximum(1.0, (1.0 - jnp.asarray(progress)) / jnp.asarray(ess_fraction))


def entropy_temperature(normalized_entropy: ArrayLike, progress: ArrayLike) -> Array:
    r"""Annealing temperature of the entropy schedule of entropic particle filtering.

    .. math:: \tau = \max\!\left(1, \frac{1}{H_n + (1 - H_n)\,\pi}\right),

    with :math:`H_n` the normalised Shannon entropy of the weights
    (:func:`normalized_entropy`) and :math:`\pi = t/T`. Equal weights (:math:`H_n = 1`)
    or the end of the run (:math:`\pi = 1`) give :math:`\tau = 1`.

    Parameters
    ----------
    normalized_entropy : float or Array
        :math:`H_n \in [0, 1]`.
    progress : float or Array
        :math:`\pi \in [0, 1]`.

    Returns
    -------
    Array
        :math:`\tau \ge 1`.
    """
    entropy = jnp.asarray(normalized_entropy)
    return jnp.maximum(1.0, 1.0 / (entropy + (1.0 - entropy) * jnp.asarray(progress)))


ANNEALING_SCHEDULES: dict[str, int] = {"none": 0, "ess": 1, "entropy": 2}
"""Integer id of each annealing schedule, as passed (traced) to :func:`annealing_temperature`."""


def annealing_temperature(
    log_weights: ArrayLike,
    progress: ArrayLike,
    schedule: ArrayLike,
    ess_trigger: ArrayLike = 0.5,
    early_phase: ArrayLike = 0.5,
) -> Array:
    r"""Temperature for resampling the current weights, with the ePF trigger rule.

    .. math::

        \tau = \begin{cases}
            \tau_{\text{schedule}} & \text{if } \mathrm{ESS}/N < \text{ess\_trigger}
                                     \text{ and } \pi < \text{early\_phase}, \\
            1 & \text{otherwise.}
        \end{cases}

    Every argument after ``log_weights`` may be traced, the schedule included: all
    schedules are computed and one is selected, so switching schedules in a lab never
    recompiles.

    Parameters
    ----------
    log_weights : Array, shape (N,)
        Log-weights about to be resampled.
    progress : float or Array
        :math:`\pi = t/T`, the fraction of the run done.
    schedule : int or Array
        0: no annealing, 1: :func:`ess_temperature`, 2: :func:`entropy_temperature`
        (see :data:`ANNEALING_SCHEDULES`). Any other id means no annealing.
    ess_trigger : float or Array
        Anneal only while :math:`\mathrm{ESS}/N` is below this.
    early_phase : float or Array
        Anneal only while :math:`\pi` is below this.

    Returns
    -------
    Array, shape ()
        :math:`\tau \ge 1`; resample from :math:`\mathrm{softmax}(\ell / \tau)`.
    """
    ess_fraction = effective_sample_size(log_weights) / jnp.shape(log_weights)[0]
    schedule = jnp.asarray(schedule)
    scheduled = jnp.select(
        [schedule == ANNEALING_SCHEDULES["ess"], schedule == ANNEALING_SCHEDULES["entropy"]],
        [
            ess_temperature(ess_fraction, progress),
            entropy_temperature(normalized_entropy(log_weights), progress),
        ],
        default=1.0,
    )
    triggered = (ess_fraction < ess_trigger) & (progress < early_phase)
    return jnp.where(triggered, scheduled, 1.0)
