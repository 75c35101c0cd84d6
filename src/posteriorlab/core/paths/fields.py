r"""Exact density, score and velocity of a Gaussian path between two mixtures.

Take a source mixture :math:`x_0 \sim \sum_i \pi^0_i \mathcal{N}(\mu^0_i, \Sigma^0_i)`
(usually the single component :math:`\mathcal{N}(0, I)`), an independent data mixture
:math:`x_1 \sim \sum_j \pi^1_j \mathcal{N}(\mu^1_j, \Sigma^1_j)` and a schedule
:math:`(\alpha_t, \sigma_t)`. The point :math:`x_t = \sigma_t x_0 + \alpha_t x_1` is a
linear map of two independent Gaussians once the pair of components :math:`(i, j)` is
fixed, so the marginal at every time is again a mixture, one component per pair:

.. math::

    p_t(x) = \sum_{ij} \pi^0_i \pi^1_j\, \mathcal{N}(x;\, m_{ij}, C_{ij}),\qquad
    m_{ij} = \sigma_t \mu^0_i + \alpha_t \mu^1_j,\qquad
    C_{ij} = \sigma_t^2 \Sigma^0_i + \alpha_t^2 \Sigma^1_j .

Everything a sampler needs follows in closed form, with the *responsibilities*
:math:`w_{ij}(x) \propto \pi^0_i\pi^1_j\mathcal{N}(x; m_{ij}, C_{ij})` (computed in log
space):

* the score :math:`\nabla \log p_t(x) = -\sum_{ij} w_{ij}(x)\, C_{ij}^{-1}(x - m_{ij})`;
* the velocity, the conditional mean of :math:`\dot x_t = \dot\sigma_t x_0 + \dot\alpha_t
  x_1` given :math:`x_t = x`. Within one pair :math:`(x_t, \dot x_t)` is jointly
  Gaussian with :math:`\operatorname{Cov}(\dot x_t, x_t) = \tfrac12 \dot C_{ij}`, so

  .. math::

      u_t(x) = \sum_{ij} w_{ij}(x)\left[\dot m_{ij}
               + \tfrac12 \dot C_{ij}\, C_{ij}^{-1} (x - m_{ij})\right],\qquad
      \tfrac12 \dot C_{ij} = \sigma_t\dot\sigma_t \Sigma^0_i + \alpha_t\dot\alpha_t \Sigma^1_j ;

* the denoiser :math:`\mathbb{E}[x_1 \mid x_t = x] = \sum_{ij} w_{ij}(x)
  \left[\mu^1_j + \alpha_t \Sigma^1_j C_{ij}^{-1}(x - m_{ij})\right]`.

This "component form" never divides by :math:`\sigma_t` or :math:`\alpha_t`, so it is
finite at both ends of the path as long as the components have positive-definite
covariances. (The textbook form :math:`u = (\dot\sigma/\sigma)x + \dots` is not.)

Conditioning on an observation :math:`y = A x_1 + e` changes only the data mixture --
it becomes the posterior mixture of :func:`posteriorlab.core.gmm.condition_on_linear_gaussian`
-- because the path noise is independent of :math:`y` given :math:`x_1`. So the *guided*
velocity and score are these same formulas applied to the posterior; see
:func:`posterior_marginal` and :func:`observation_log_likelihood`.

Computing once per time step
----------------------------
Every field is linear in :math:`x` within a pair, so :func:`marginal` computes, once
per time :math:`t`, the per-pair precision :math:`C^{-1}`, the velocity gain
:math:`\tfrac12\dot C C^{-1}` and the denoiser gain :math:`\alpha_t\Sigma^1 C^{-1}`
(tiny :math:`d \times d` matrices). Evaluating a field at ten thousand particles is then
a few elementwise passes over the particles, which XLA fuses (see ``_PairTerms``). All
values are traced, so moving a mean, a weight or a schedule parameter never recompiles.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from posteriorlab.core import gmm
from posteriorlab.core.paths.schedules import PathCoefficients, Schedule, coefficients

_LOG_2PI = math.log(2.0 * math.pi)


class PathMarginal(NamedTuple):
    r"""The marginal :math:`p_t` at one time, with the gains its fields need.

    One entry per (source, data) component pair, ``P = K0 * K1`` of them.
    """

    log_weights: jax.Array
    r"""``(P,)`` :math:`\log \pi^0_i \pi^1_j`."""
    means: jax.Array
    """``(P, d)`` :math:`m_{ij}`."""
    precisions: jax.Array
    """``(P, d, d)`` :math:`C_{ij}^{-1}`."""
    log_normalizers: jax.Array
    r"""``(P,)`` :math:`-\tfrac12 \log\det(2\pi C_{ij})`."""
    mean_rates: jax.Array
    r"""``(P, d)`` :math:`\dot m_{ij}`."""
    velocity_gains: jax.Array
    r"""``(P, d, d)`` :math:`\tfrac12 \dot C_{ij} C_{ij}^{-1}`."""
    data_means: jax.Array
    r"""``(P, d)`` :math:`\mu^1_j`."""
    data_gains: jax.Array
    r"""``(P, d, d)`` :math:`\alpha_t \Sigma^1_j C_{ij}^{-1}`."""


def standard_normal(dim: int, dtype=None) -> gmm.GaussianMixture:
    r"""The usual source :math:`\mathcal{N}(0, I_d)` as a one-component mixture."""
    dtype = dtype or jnp.result_type(float)
    return gmm.GaussianMixture(
        log_weights=jnp.zeros((1,), dtype),
        means=jnp.zeros((1, dim), dtype),
        chol_covs=jnp.eye(dim, dtype=dtype)[None],
    )


def marginal(
    schedule: Schedule, target: gmm.GaussianMixture, t, source: gmm.GaussianMixture | None = None
) -> PathMarginal:
    r"""The exact marginal :math:`p_t` of the path from ``source`` to ``target``.

    Parameters
    ----------
    schedule : a schedule from :mod:`posteriorlab.core.paths.schedules`
    target : GaussianMixture
        The data distribution :math:`p_1` (``K1`` components in ``d`` dimensions).
    t : scalar
        Time in :math:`[0, 1]`; traced.
    source : GaussianMixture, optional
        The noise distribution (``K0`` components); :math:`\mathcal{N}(0, I)` if omitted.

    Returns
    -------
    PathMarginal
    """
    if source is None:
        source = standard_normal(target.means.shape[-1], target.means.dtype)
    return _pair_marginal(coefficients(schedule, t), source, target)


def _pair_marginal(c: PathCoefficients, source, target) -> PathMarginal:
    num_source, num_target = source.means.shape[0], target.means.shape[0]
    dim = target.means.shape[-1]
    source_covs = jnp.repeat(gmm.covariances(source), num_target, axis=0)
    target_covs = jnp.tile(gmm.covariances(target), (num_source, 1, 1))
    source_means = jnp.repeat(source.means, num_target, axis=0)
    data_means = jnp.tile(target.means, (num_source, 1))
    log_weights = (source.log_weights[:, None] + target.log_weights[None, :]).reshape(-1)

    covs = c.sigma**2 * source_covs + c.alpha**2 * target_covs
    chol = jnp.linalg.cholesky(covs)
    eye = jnp.broadcast_to(jnp.eye(dim, dtype=covs.dtype), covs.shape)
    chol_inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    precisions = jnp.swapaxes(chol_inv, -1, -2) @ chol_inv
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    half_cov_rate = c.sigma * c.sigma_dot * source_covs + c.alpha * c.alpha_dot * target_covs
    return PathMarginal(
        log_weights=log_weights,
        means=c.sigma * source_means + c.alpha * data_means,
        precisions=precisions,
        log_normalizers=-half_log_det - 0.5 * dim * _LOG_2PI,
        mean_rates=c.sigma_dot * source_means + c.alpha_dot * data_means,
        velocity_gains=half_cov_rate @ precisions,
        data_means=data_means,
        data_gains=c.alpha * target_covs @ precisions,
    )


def as_mixture(path_marginal: PathMarginal) -> gmm.GaussianMixture:
    """The marginal :math:`p_t` as a :class:`~posteriorlab.core.gmm.GaussianMixture`."""
    covs = jnp.linalg.inv(path_marginal.precisions)
    return gmm.GaussianMixture(
        path_marginal.log_weights, path_marginal.means, jnp.linalg.cholesky(covs)
    )


# --------------------------------------------------------------------------------------
# Fields at points
# --------------------------------------------------------------------------------------


_UNROLLED_MAX_DIM = 8
"""Up to this dimension the small per-pair matrix products are written out (see below)."""


class _PairTerms(NamedTuple):
    """The per-pair terms at ``n`` points, one ``(P, n)`` array per coordinate.

    The long axis (the points) is the minor one and each ``d x d`` product is written
    out as ``d^2`` elementwise products of ``(P, n)`` arrays, so XLA fuses a whole field
    evaluation into a few vectorised loops. With the points first and ``(P, d)``
    trailing, or with the products as batched ``dot_general`` kernels, the same formulas
    run 2 to 5 times slower on CPU (see ``bench/paths.py``).
    """

    log_joint: jax.Array  # (P, n) log pi_p + log N(x; m_p, C_p)
    residuals: list  # d arrays (P, n): x - m_p
    whitened: list  # d arrays (P, n): C_p^{-1} (x - m_p)
    batch_shape: tuple  # the leading shape of x, restored by _mix


def _matvec(a, v: list) -> list:
    """``a_p v_p`` for matrices ``a`` ``(P, d, d)`` and ``v`` given as d arrays ``(P, n)``."""
    dim = len(v)
    if dim > _UNROLLED_MAX_DIM:  # d^2 written-out products would bloat the program
        return list(jnp.einsum("pij,jpn->ipn", a, jnp.stack(v)))
    return [sum(a[:, i, j, None] * v[j] for j in range(dim)) for i in range(dim)]


def _pair_terms(m: PathMarginal, x) -> _PairTerms:
    x = jnp.asarray(x)
    dim = x.shape[-1]
    points = jnp.reshape(x, (-1, dim)).T  # (d, n)
    residuals = [points[i] - m.means[:, i, None] for i in range(dim)]
    whitened = _matvec(m.precisions, residuals)
    quadratic = sum(r * z for r, z in zip(residuals, whitened, strict=True))
    log_joint = (m.log_weights + m.log_normalizers)[:, None] - 0.5 * quadratic
    return _PairTerms(log_joint, residuals, whitened, x.shape[:-1])


def _responsibilities(terms: _PairTerms) -> jax.Array:
    return jax.nn.softmax(terms.log_joint, axis=0)


def _per_pair(offsets, gains, terms: _PairTerms) -> list:
    """``offsets_p + gains_p (x - m_p)`` as d arrays ``(P, n)``."""
    products = _matvec(gains, terms.residuals)
    return [offsets[:, i, None] + product for i, product in enumerate(products)]


def _mix(terms: _PairTerms, w, per_pair: list) -> jax.Array:
    r""":math:`\sum_p w_p(x)\, v_p(x)`, back in the points' shape ``(..., d)``."""
    mixed = jnp.stack([jnp.sum(w * v, axis=0) for v in per_pair], axis=-1)  # (n, d)
    return mixed.reshape(*terms.batch_shape, len(per_pair))


def log_prob(m: PathMarginal, x) -> jax.Array:
    r""":math:`\log p_t(x)` at points ``x`` of shape ``(..., d)``."""
    terms = _pair_terms(m, x)
    return logsumexp(terms.log_joint, axis=0).reshape(terms.batch_shape)


def score(m: PathMarginal, x) -> jax.Array:
    r"""The score :math:`\nabla_x \log p_t(x) = -\sum w_{ij}(x) C_{ij}^{-1}(x - m_{ij})`."""
    terms = _pair_terms(m, x)
    return -_mix(terms, _responsibilities(terms), terms.whitened)


def velocity(m: PathMarginal, x) -> jax.Array:
    r"""The marginal velocity :math:`u_t(x) = \mathbb{E}[\dot x_t \mid x_t = x]`.

    :math:`u_t(x) = \sum w_{ij}(x)[\dot m_{ij} + \tfrac12\dot C_{ij} C_{ij}^{-1}(x - m_{ij})]`.
    """
    terms = _pair_terms(m, x)
    per_pair = _per_pair(m.mean_rates, m.velocity_gains, terms)
    return _mix(terms, _responsibilities(terms), per_pair)


def velocity_and_score(m: PathMarginal, x) -> tuple[jax.Array, jax.Array]:
    """Both fields at once, sharing the responsibilities (what an SDE step needs)."""
    terms = _pair_terms(m, x)
    w = _responsibilities(terms)
    per_pair = _per_pair(m.mean_rates, m.velocity_gains, terms)
    return _mix(terms, w, per_pair), -_mix(terms, w, terms.whitened)


def expected_data(m: PathMarginal, x) -> jax.Array:
    r"""The denoiser :math:`\mathbb{E}[x_1 \mid x_t = x]`, the optimal one-shot guess of
    the data point a noisy sample came from (Tweedie's formula)."""
    terms = _pair_terms(m, x)
    per_pair = _per_pair(m.data_means, m.data_gains, terms)
    return _mix(terms, _responsibilities(terms), per_pair)


# --------------------------------------------------------------------------------------
# Posterior (guided) paths
# --------------------------------------------------------------------------------------


def posterior_marginal(
    schedule: Schedule,
    target: gmm.GaussianMixture,
    t,
    A,
    noise_cov,
    y,
    source: gmm.GaussianMixture | None = None,
) -> PathMarginal:
    r"""The marginal of the path to the posterior :math:`p(x_1 \mid y)`, with
    :math:`y = A x_1 + e,\ e \sim \mathcal{N}(0, R)`.

    Its velocity and score are the exact *guided* fields: sampling the probability-flow
    ODE of this marginal from noise yields exact posterior samples.
    """
    posterior = gmm.condition_on_linear_gaussian(target, A, noise_cov, y)
    return marginal(schedule, posterior, t, source)


def observation_log_likelihood(
    schedule: Schedule, target: gmm.GaussianMixture, t, A, noise_cov, y, x
) -> jax.Array:
    r""":math:`\log p_t(y \mid x_t = x)`: how well a noisy point predicts the observation.

    For the standard normal source, by Bayes' rule
    :math:`p_t(y \mid x) = p(y)\, p_t(x \mid y) / p_t(x)`, so the guided score is the
    prior score plus :math:`\nabla_x \log p_t(y \mid x)` -- the decomposition that
    diffusion-guidance methods approximate and that is exact here.
    """
    prior = marginal(schedule, target, t)
    posterior = posterior_marginal(schedule, target, t, A, noise_cov, y)
    log_evidence = gmm.log_marginal_likelihood(target, A, noise_cov, y)
    return log_evidence + log_prob(posterior, x) - log_prob(prior, x)


def start_distribution(
    schedule: Schedule, target: gmm.GaussianMixture, source: gmm.GaussianMixture | None = None
) -> gmm.GaussianMixture:
    r"""The exact :math:`p_0` of the path, where samplers start.

    For schedules with :math:`\alpha_0 = 0, \sigma_0 = 1` it is the source itself; for
    VP (:math:`\alpha_0 \approx 0.007`) and VE (:math:`\alpha_0 = 1`) it contains a
    little or all of the data.
    """
    return as_mixture(marginal(schedule, target, 0.0, source))
