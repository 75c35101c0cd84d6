r"""Gaussian mixtures: the exact world of the labs.

A Gaussian mixture with :math:`K` components in :math:`d` dimensions has density

.. math::

    p(x) = \sum_{k=1}^{K} \pi_k \, \mathcal{N}(x;\, \mu_k, \Sigma_k),
    \qquad \pi_k \ge 0, \quad \sum_k \pi_k = 1 .

Mixtures matter to posteriorlab because they are closed under the operations a
teaching app wants to show exactly. The most important one is Bayes' rule with a
linear-Gaussian observation :math:`y = A x + e`, :math:`e \sim \mathcal{N}(0, R)`:
each component is conditioned on :math:`y` as an ordinary Gaussian, and the
weights are re-scored by how well each component predicted :math:`y`,

.. math::

    \pi'_k \propto \pi_k \, \mathcal{N}(y;\, A\mu_k,\; A\Sigma_k A^\top + R),
    \qquad
    p(y) = \sum_k \pi_k \, \mathcal{N}(y;\, A\mu_k,\; A\Sigma_k A^\top + R).

So the posterior is again a mixture and the evidence :math:`p(y)` is a finite sum.
SMC, VI and the distribution transformer are all drawn against this answer.

How a mixture is stored
-----------------------
:class:`GaussianMixture` is a ``NamedTuple`` and therefore a JAX pytree. It holds

* ``log_weights`` ``(K,)`` -- :math:`\log \pi_k`, normalised so that their
  ``logsumexp`` is zero. Weights live in log space because the re-scoring above
  multiplies tiny numbers: for an observation far from every component the
  likelihoods underflow to zero in linear space, while their logarithms stay
  perfectly representable.
* ``means`` ``(K, d)`` -- :math:`\mu_k`.
* ``chol_covs`` ``(K, d, d)`` -- lower-triangular :math:`L_k` with positive
  diagonal and :math:`\Sigma_k = L_k L_k^\top`.

Storing the Cholesky factor rather than :math:`\Sigma_k` buys three things.
Sampling is :math:`\mu_k + L_k \varepsilon`. The log-density needs
:math:`(x-\mu)^\top\Sigma^{-1}(x-\mu) = \lVert L^{-1}(x-\mu)\rVert^2`, one
triangular solve and no matrix inverse, and
:math:`\log\det\Sigma = 2\sum_i \log L_{ii}`. And a factor is a covariance that is
positive definite by construction, so nothing downstream can meet an indefinite
matrix.

Checked and unchecked construction
----------------------------------
:func:`from_covariances` is for people: it looks at the concrete numbers (in Python,
outside any ``jax.jit``) and raises a :class:`ValueError` that names the offending
value and suggests a fix -- a negative weight, weights that do not sum to one, a
covariance that is not symmetric positive definite, shapes that do not agree.
:func:`from_covariances_unchecked` does the same arithmetic with no checks, so it
can run on traced values inside ``jit`` (for example when a dashboard slider moves a
mean). Every other function here is pure JAX: safe under ``jit``, ``vmap`` and
``grad``; the mixture's *values* are traced arrays, so changing a weight or a mean
never recompiles -- only a change of ``K`` or ``d`` does.

Example
-------
>>> import jax.numpy as jnp
>>> from posteriorlab.core import gmm
>>> prior = gmm.from_covariances(
...     weights=[0.5, 0.3, 0.2],
...     means=[[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]],
...     covariances=[0.25 * jnp.eye(2), [[0.5, 0.2], [0.2, 0.3]], 0.1 * jnp.eye(2)],
... )
>>> A, R, y = jnp.array([[1.0, 0.5]]), jnp.array([[0.25]]), jnp.array([0.8])
>>> posterior = gmm.condition_on_linear_gaussian(prior, A, R, y)
>>> float(gmm.log_marginal_likelihood(prior, A, R, y))  # doctest: +ELLIPSIS
-3.4785...
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

__all__ = [
    "GaussianMixture",
    "from_covariances",
    "from_covariances_unchecked",
    "weights",
    "covariances",
    "component_log_prob",
    "log_prob",
    "sample",
    "mean",
    "covariance",
    "component_log_evidence",
    "log_marginal_likelihood",
    "condition_on_linear_gaussian",
]

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture(NamedTuple):
    r"""A mixture :math:`\sum_k \pi_k \mathcal{N}(\mu_k, L_k L_k^\top)` as a pytree.

    Attributes
    ----------
    log_weights : Array, shape (K,)
        :math:`\log \pi_k`, normalised (``logsumexp(log_weights) == 0``). A weight of
        zero is ``-inf``.
    means : Array, shape (K, d)
        Component means :math:`\mu_k`.
    chol_covs : Array, shape (K, d, d)
        Lower-triangular Cholesky factors :math:`L_k` with positive diagonal, so that
        component ``k`` has covariance :math:`\Sigma_k = L_k L_k^\top`.
    """

    log_weights: jax.Array
    means: jax.Array
    chol_covs: jax.Array


# --------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------


def from_covariances(weights, means, covariances, *, atol: float = 1e-6) -> GaussianMixture:
    r"""Build a mixture from weights, means and covariances, checking every value.

    Use this where numbers come from a person (a notebook cell, a lab's parameters).
    The checks run in Python on concrete values, so this function cannot be called
    inside ``jax.jit``; there, use :func:`from_covariances_unchecked`.

    Parameters
    ----------
    weights : array_like, shape (K,)
        Mixture weights :math:`\pi_k`: finite, non-negative, summing to one within
        ``atol``.
    means : array_like, shape (K, d)
        Component means.
    covariances : array_like, shape (K, d, d)
        Symmetric positive-definite component covariances :math:`\Sigma_k`.
    atol : float, default 1e-6
        Tolerance for :math:`|\sum_k \pi_k - 1|` and for the symmetry check
        :math:`\max|\Sigma_k - \Sigma_k^\top| \le \mathrm{atol}\cdot\max(1, \max|\Sigma_k|)`.

    Returns
    -------
    GaussianMixture
        With ``log_weights = log(weights)`` and ``chol_covs = cholesky(covariances)``.

    Raises
    ------
    ValueError
        Naming the bad value and suggesting a fix, when the weights are negative, not
        finite or do not sum to one; when the shapes disagree; or when a covariance is
        not symmetric positive definite.
    """
    weights_np = _concrete(weights, "weights")
    means_np = _concrete(means, "means")
    covariances_np = _concrete(covariances, "covariances")
    _check_weights(weights_np, atol)
    _check_shapes(weights_np, means_np, covariances_np)
    _check_covariances(covariances_np, atol)
    if not np.all(np.isfinite(means_np)):
        bad = np.argwhere(~np.isfinite(means_np))[0]
        raise ValueError(
            f"means[{bad[0]}] = {means_np[bad[0]]} is not finite; every component mean "
            "must be a finite vector."
        )
    return from_covariances_unchecked(weights_np, means_np, covariances_np)


def from_covariances_unchecked(weights, means, covariances) -> GaussianMixture:
    r"""Build a mixture with no value checks; safe on traced values inside ``jit``.

    The weights are normalised, :math:`\log\pi_k = \log w_k - \log\sum_j w_j`, and the
    covariances are factorised, :math:`L_k = \operatorname{chol}(\Sigma_k)`. Invalid
    input is not reported: a covariance that is not positive definite gives ``nan``
    factors, a negative weight gives a ``nan`` log-weight. Check concrete values with
    :func:`from_covariances` before they reach a jitted function.

    Parameters
    ----------
    weights : array_like, shape (K,)
        Non-negative weights; they need not sum to one.
    means : array_like, shape (K, d)
        Component means.
    covariances : array_like, shape (K, d, d)
        Symmetric positive-definite covariances.

    Returns
    -------
    GaussianMixture
    """
    weights = _as_float(weights)
    log_weights = jnp.log(weights) - jnp.log(jnp.sum(weights))
    return GaussianMixture(
        log_weights=log_weights,
        means=_as_float(means),
        chol_covs=jnp.linalg.cholesky(_as_float(covariances)),
    )


def weights(mixture: GaussianMixture) -> jax.Array:
    r"""Mixture weights :math:`\pi_k = \exp(\log\pi_k)`, shape ``(K,)``."""
    return jnp.exp(mixture.log_weights)


def covariances(mixture: GaussianMixture) -> jax.Array:
    r"""Component covariances :math:`\Sigma_k = L_k L_k^\top`, shape ``(K, d, d)``."""
    chol = mixture.chol_covs
    return chol @ jnp.swapaxes(chol, -1, -2)


# --------------------------------------------------------------------------------------
# Density and sampling
# --------------------------------------------------------------------------------------


def component_log_prob(mixture: GaussianMixture, x) -> jax.Array:
    r"""Log-density of every component at ``x``, without the weights.

    .. math::

        \log \mathcal{N}(x;\, \mu_k, L_k L_k^\top)
        = -\tfrac12 \lVert z_k \rVert^2 - \sum_i \log (L_k)_{ii} - \tfrac d2 \log 2\pi,
        \qquad z_k = L_k^{-1}(x - \mu_k),

    where :math:`z_k` comes from one triangular solve.

    Parameters
    ----------
    mixture : GaussianMixture
    x : array_like, shape (..., d)
        Points; leading axes are batch axes.

    Returns
    -------
    Array, shape (..., K)
    """
    dim = mixture.means.shape[-1]
    x = _as_float(x)
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"x has shape {x.shape} but the mixture lives in d = {dim} dimensions; pass "
            f"points with shape (..., {dim}) (a single point is a vector of length {dim})."
        )
    batch_shape = x.shape[:-1]
    points = x.reshape(-1, dim)
    per_component = jax.vmap(_gaussian_log_prob, in_axes=(None, 0, 0))(
        points, mixture.means, mixture.chol_covs
    )  # (K, n)
    return per_component.T.reshape(*batch_shape, mixture.means.shape[0])


def log_prob(mixture: GaussianMixture, x) -> jax.Array:
    r"""Log-density of the mixture, :math:`\log p(x) = \operatorname{LSE}_k
    [\log\pi_k + \log\mathcal{N}(x;\mu_k,\Sigma_k)]`.

    The sum over components is a ``logsumexp``, so points far from every component get
    a finite, very negative value instead of ``log(0)``.

    Parameters
    ----------
    mixture : GaussianMixture
    x : array_like, shape (..., d)

    Returns
    -------
    Array, shape (...)
    """
    return logsumexp(mixture.log_weights + component_log_prob(mixture, x), axis=-1)


def sample(key: jax.Array, mixture: GaussianMixture, num_samples: int) -> jax.Array:
    r"""Draw independent samples by ancestral sampling.

    First a component :math:`k \sim \mathrm{Categorical}(\pi)`, then
    :math:`x = \mu_k + L_k \varepsilon` with :math:`\varepsilon \sim \mathcal{N}(0, I_d)`.

    Parameters
    ----------
    key : PRNG key
    mixture : GaussianMixture
    num_samples : int
        A shape, hence static under ``jit``
        (``jax.jit(sample, static_argnames="num_samples")``).

    Returns
    -------
    Array, shape (num_samples, d)
    """
    key_component, key_noise = jax.random.split(key)
    dim = mixture.means.shape[-1]
    component = jax.random.categorical(key_component, mixture.log_weights, shape=(num_samples,))
    noise = jax.random.normal(key_noise, (num_samples, dim), dtype=mixture.means.dtype)
    return mixture.means[component] + jnp.einsum("nij,nj->ni", mixture.chol_covs[component], noise)


# --------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------


def mean(mixture: GaussianMixture) -> jax.Array:
    r"""Mixture mean :math:`m = \sum_k \pi_k \mu_k`, shape ``(d,)``."""
    return weights(mixture) @ mixture.means


def covariance(mixture: GaussianMixture) -> jax.Array:
    r"""Mixture covariance by the law of total covariance, shape ``(d, d)``.

    .. math::

        \operatorname{Cov}[x]
        = \sum_k \pi_k \Sigma_k + \sum_k \pi_k (\mu_k - m)(\mu_k - m)^\top :

    the average covariance within a component,
    :math:`\mathbb{E}[\operatorname{Cov}(x \mid k)]`, plus the covariance of the
    component means, :math:`\operatorname{Cov}(\mathbb{E}[x \mid k])`.

    The spread of the means is computed around :math:`m` rather than as
    :math:`\sum_k\pi_k\mu_k\mu_k^\top - mm^\top`, which would cancel catastrophically
    for components far from the origin.
    """
    w = weights(mixture)
    centred = mixture.means - mean(mixture)
    within = jnp.einsum("k,kij->ij", w, covariances(mixture))
    between = jnp.einsum("k,ki,kj->ij", w, centred, centred)
    return within + between


# --------------------------------------------------------------------------------------
# Linear-Gaussian observations
# --------------------------------------------------------------------------------------


def component_log_evidence(mixture: GaussianMixture, A, noise_cov, y) -> jax.Array:
    r"""How well each component predicts the observation :math:`y = A x + e`.

    Under component :math:`k`, :math:`y \sim \mathcal{N}(A\mu_k, S_k)` with
    :math:`S_k = A\Sigma_k A^\top + R = (AL_k)(AL_k)^\top + R`, so

    .. math::

        \log p(y \mid k) = \log \mathcal{N}(y;\, A\mu_k,\, S_k),

    computed from the Cholesky factor of :math:`S_k`.

    Parameters
    ----------
    mixture : GaussianMixture
        The prior, ``d`` dimensions.
    A : array_like, shape (m, d)
        Observation matrix. A vector of length ``d`` is read as one row.
    noise_cov : array_like, shape (m, m)
        Observation noise covariance :math:`R`, positive definite. A scalar means
        :math:`R\, I_m`.
    y : array_like, shape (m,)
        The observation. A scalar is read as ``m = 1``.

    Returns
    -------
    Array, shape (K,)
    """
    A, noise_cov, y = _observation_arrays(mixture, A, noise_cov, y)

    def one_component(mean_k, chol_k):
        a_chol = A @ chol_k
        chol_s = jnp.linalg.cholesky(a_chol @ a_chol.T + noise_cov)
        return _gaussian_log_prob(y[None, :], A @ mean_k, chol_s)[0]

    return jax.vmap(one_component)(mixture.means, mixture.chol_covs)


def log_marginal_likelihood(mixture: GaussianMixture, A, noise_cov, y) -> jax.Array:
    r"""Log-evidence :math:`\log p(y) = \operatorname{LSE}_k[\log\pi_k + \log
    \mathcal{N}(y;\, A\mu_k,\, A\Sigma_kA^\top + R)]`.

    Arguments as in :func:`component_log_evidence`; returns a scalar.
    """
    return logsumexp(mixture.log_weights + component_log_evidence(mixture, A, noise_cov, y))


def condition_on_linear_gaussian(mixture: GaussianMixture, A, noise_cov, y) -> GaussianMixture:
    r"""Exact posterior of a mixture prior given :math:`y = Ax + e`, :math:`e\sim\mathcal{N}(0,R)`.

    Component by component, this is the Kalman update:

    .. math::

        S_k = A\Sigma_kA^\top + R, \quad
        K_k = \Sigma_kA^\top S_k^{-1}, \quad
        \mu'_k = \mu_k + K_k(y - A\mu_k), \quad
        \Sigma'_k = \Sigma_k - K_k S_k K_k^\top,

    and the weights are re-scored by each component's evidence,
    :math:`\log\pi'_k = \log\pi_k + \log\mathcal{N}(y; A\mu_k, S_k) - \log p(y)`.

    The subtraction in :math:`\Sigma'_k` can lose positive definiteness when the
    observation is very precise, so the factor :math:`L'_k` is obtained without it (the
    "array" square-root form). With :math:`C_R = \operatorname{chol}(R)`, the matrix

    .. math::

        U = \begin{pmatrix} C_R & A L_k \\ 0 & L_k \end{pmatrix},
        \qquad
        UU^\top = \begin{pmatrix} S_k & A\Sigma_k \\ \Sigma_kA^\top & \Sigma_k \end{pmatrix},

    has a lower-triangular factor :math:`T` (:math:`TT^\top = UU^\top`, from a QR
    decomposition of :math:`U^\top`) whose blocks are
    :math:`T_{11} = \operatorname{chol}(S_k)`, :math:`T_{21} = K_k T_{11}` and
    :math:`T_{22} = L'_k`. Then, with :math:`v = T_{11}^{-1}(y - A\mu_k)`,
    :math:`\mu'_k = \mu_k + T_{21} v` and
    :math:`\log\mathcal{N}(y; A\mu_k, S_k) = -\tfrac12\lVert v\rVert^2 - \sum_i\log
    (T_{11})_{ii} - \tfrac m2\log 2\pi`. :math:`L'_k` is a factor of a positive-definite
    matrix by construction, whatever the conditioning of :math:`R`.

    Parameters
    ----------
    mixture : GaussianMixture
        The prior, ``d`` dimensions.
    A : array_like, shape (m, d)
        Observation matrix (a vector of length ``d`` is one row).
    noise_cov : array_like, shape (m, m)
        Noise covariance :math:`R`, positive definite (a scalar means :math:`R\,I_m`).
    y : array_like, shape (m,)
        The observation (a scalar when ``m = 1``).

    Returns
    -------
    GaussianMixture
        The posterior :math:`p(x \mid y)`, same ``K`` and ``d`` as the prior.
    """
    A, noise_cov, y = _observation_arrays(mixture, A, noise_cov, y)
    num_obs, dim = A.shape
    chol_noise = jnp.linalg.cholesky(noise_cov)

    def one_component(mean_k, chol_k):
        upper = jnp.concatenate([chol_noise, A @ chol_k], axis=1)
        lower = jnp.concatenate([jnp.zeros((dim, num_obs), chol_k.dtype), chol_k], axis=1)
        pre_array = jnp.concatenate([upper, lower], axis=0)  # U, (m + d, m + d)
        _, r = jnp.linalg.qr(pre_array.T)  # U^T = Q r, so U U^T = r^T r
        signs = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(r.dtype)
        post_array = r.T * signs[None, :]  # T: lower triangular, positive diagonal
        chol_s = post_array[:num_obs, :num_obs]
        gain_times_chol_s = post_array[num_obs:, :num_obs]
        post_chol = post_array[num_obs:, num_obs:]
        whitened = solve_triangular(chol_s, y - A @ mean_k, lower=True)
        log_evidence = _log_normal_whitened(whitened, chol_s)
        return log_evidence, mean_k + gain_times_chol_s @ whitened, post_chol

    log_evidence, post_means, post_chols = jax.vmap(one_component)(mixture.means, mixture.chol_covs)
    unnormalised = mixture.log_weights + log_evidence
    return GaussianMixture(
        log_weights=unnormalised - logsumexp(unnormalised),
        means=post_means,
        chol_covs=post_chols,
    )


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _as_float(value) -> jax.Array:
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.result_type(float))
    return value


def _log_normal_whitened(whitened, chol) -> jax.Array:
    """log N given the whitened residual z = chol^{-1}(x - mean) (last axis is d)."""
    dim = chol.shape[-1]
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * jnp.sum(whitened**2, axis=-1) - half_log_det - 0.5 * dim * _LOG_2PI


def _gaussian_log_prob(points, mean_k, chol_k) -> jax.Array:
    """log N(points; mean_k, chol_k chol_k^T) for points of shape (n, d)."""
    whitened = solve_triangular(chol_k, (points - mean_k).T, lower=True).T
    return _log_normal_whitened(whitened, chol_k)


def _observation_arrays(mixture: GaussianMixture, A, noise_cov, y):
    """Promote (A, R, y) to shapes (m, d), (m, m), (m,) and check them (static shapes)."""
    dim = mixture.means.shape[-1]
    A = _as_float(A)
    if A.ndim == 1:
        A = A[None, :]
    if A.ndim != 2 or A.shape[1] != dim:
        raise ValueError(
            f"A has shape {A.shape} but the mixture lives in d = {dim} dimensions; A must "
            f"have shape (m, {dim}) so that y = A @ x has m entries."
        )
    num_obs = A.shape[0]
    noise_cov = _as_float(noise_cov)
    if noise_cov.ndim == 0:
        noise_cov = noise_cov * jnp.eye(num_obs, dtype=noise_cov.dtype)
    if noise_cov.shape != (num_obs, num_obs):
        raise ValueError(
            f"noise_cov has shape {noise_cov.shape} but A has m = {num_obs} rows; the "
            f"noise covariance must be ({num_obs}, {num_obs}) (or a scalar variance, "
            "read as variance * identity)."
        )
    y = _as_float(y)
    if y.ndim == 0:
        y = y[None]
    if y.shape != (num_obs,):
        raise ValueError(
            f"y has shape {y.shape} but A has m = {num_obs} rows; the observation must "
            f"be a vector of length {num_obs}. For many observations, use jax.vmap over y."
        )
    return A, noise_cov, y


def _concrete(value, name: str) -> np.ndarray:
    if isinstance(value, jax.core.Tracer) or any(
        isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value)
    ):
        raise ValueError(
            f"{name} is a traced value: from_covariances checks concrete numbers and cannot "
            "run inside jax.jit or jax.vmap. Check the values once outside, or use "
            "from_covariances_unchecked inside the transformed function."
        )
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name} could not be read as an array of numbers ({error}); pass a nested "
            "list or an array of floats."
        ) from None


def _check_weights(weights: np.ndarray, atol: float) -> None:
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(
            f"weights has shape {weights.shape}; it must be a non-empty vector (K,) with "
            "one weight per component, e.g. weights=[0.5, 0.5]."
        )
    if not np.all(np.isfinite(weights)):
        index = int(np.argmax(~np.isfinite(weights)))
        raise ValueError(
            f"weights[{index}] = {weights[index]} is not finite; weights must be finite "
            "numbers >= 0 that sum to one."
        )
    if np.any(weights < 0):
        index = int(np.argmax(weights < 0))
        raise ValueError(
            f"weights[{index}] = {weights[index]:g} is negative; mixture weights are "
            "probabilities and must be >= 0 (use 0 to switch a component off)."
        )
    total = float(np.sum(weights))
    if abs(total - 1.0) > atol:
        hint = (
            "no component has positive weight; give at least one a positive weight"
            if total == 0
            else "divide them by their sum, weights / sum(weights), if they are relative sizes"
        )
        raise ValueError(
            f"weights {np.array2string(weights, precision=6)} sum to {total:.8g}, not 1 "
            f"(tolerance {atol:g}); {hint}."
        )


def _check_shapes(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> None:
    num_components = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != num_components:
        raise ValueError(
            f"means has shape {means.shape} but there are K = {num_components} weights; "
            f"means must have shape ({num_components}, d), one row per component (for a "
            "1-D mixture write each mean as a length-1 list, e.g. [[0.0], [1.0]])."
        )
    dim = means.shape[1]
    if dim == 0:
        raise ValueError("means has shape (K, 0); a mixture needs at least one dimension.")
    expected = (num_components, dim, dim)
    if covariances.shape != expected:
        raise ValueError(
            f"covariances has shape {covariances.shape} but K = {num_components} components "
            f"in d = {dim} dimensions need shape {expected}, one (d, d) matrix per "
            "component (for a 1-D mixture write each variance as [[v]])."
        )


def _check_covariances(covariances: np.ndarray, atol: float) -> None:
    for index, cov in enumerate(covariances):
        if not np.all(np.isfinite(cov)):
            raise ValueError(
                f"covariances[{index}] = {cov.tolist()} has entries that are not finite; "
                "a covariance must be a finite symmetric positive-definite matrix."
            )
        scale = max(1.0, float(np.max(np.abs(cov))))
        asymmetry = float(np.max(np.abs(cov - cov.T)))
        if asymmetry > atol * scale:
            raise ValueError(
                f"covariances[{index}] = {cov.tolist()} is not symmetric "
                f"(max |C - C^T| = {asymmetry:.3g}); a covariance equals its transpose. "
                "Symmetrise it with (C + C.T) / 2 if the asymmetry is round-off."
            )
        eigenvalues = np.linalg.eigvalsh(cov)
        factor_ok = True
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            factor_ok = False
        if eigenvalues[0] <= 0 or not factor_ok:
            raise ValueError(
                f"covariances[{index}] = {cov.tolist()} is not positive definite: its "
                f"smallest eigenvalue is {eigenvalues[0]:.3g} (eigenvalues "
                f"{np.array2string(eigenvalues, precision=4)}). Every direction needs "
                "positive variance; build it as B @ B.T + eps * I, shrink the "
                "off-diagonal entries, or add a small jitter to the diagonal."
            )
