r"""Kinetic energy of Gaussian paths, data separation, and the kinetic-optimal schedule.

A schedule :math:`(\alpha_t, \sigma_t)` turns noise :math:`x_0 \sim \mathcal{N}(0, I_d)`
into data :math:`x_1 \sim q` along :math:`x_t = \sigma_t x_0 + \alpha_t x_1`. Every
schedule with the same end points reaches the same data, but some make the particles
travel further than others. This module measures how far, and finds the schedule that
travels least.

The kinetic energy
------------------
The marginal velocity :math:`u_t(x) = \mathbb{E}[\dot x_t \mid x_t = x]` moves the
density :math:`p_t`; its *kinetic energy* is the mean squared speed, summed over time,

.. math::

    \mathrm{KE} = \int_0^1 \mathbb{E}\,\lVert u_t(x_t) \rVert^2 \,\mathrm{d}t .

A path with lower kinetic energy has straighter, slower trajectories, which an ODE
solver with a fixed step budget tends to follow more easily (not always; the paths lab
shows a counter-example).

For a Gaussian path the expectation collapses to a scalar function of the data. The
velocity of one pair :math:`(x_0, x_1)` is :math:`\dot\sigma x_0 + \dot\alpha x_1`, and
:math:`\mathbb{E}\lVert \mathbb{E}[v \mid x_t]\rVert^2 = \mathbb{E}\lVert v\rVert^2 -
\mathbb{E}\operatorname{tr}\operatorname{Cov}[v \mid x_t]`. Given :math:`x_t`, the noise
is :math:`x_0 = (x_t - \alpha x_1)/\sigma`, so all the remaining uncertainty of
:math:`v` is that of :math:`x_1`, multiplied by
:math:`\dot\alpha - \dot\sigma\alpha/\sigma = (\sigma\dot\alpha - \alpha\dot\sigma)/\sigma`.
With :math:`m = \mathbb{E}\lVert x_1\rVert^2`,

.. math::

    \mathrm{KE} = \int_0^1 \Big[ d\,\dot\sigma_t^2 + m\,\dot\alpha_t^2
          - V\!\big(\tfrac{\alpha_t}{\sigma_t}\big)\,
            \frac{(\sigma_t\dot\alpha_t - \alpha_t\dot\sigma_t)^2}{\sigma_t^2} \Big]
          \,\mathrm{d}t,
    \qquad
    V(s) = \mathbb{E}\operatorname{tr}\operatorname{Cov}[x_1 \mid x_0 + s\,x_1],

because :math:`x_t / \sigma_t = x_0 + s\, x_1` carries the same information as
:math:`x_t`. The data enter only through the number :math:`m` and the function
:math:`V` of the signal-to-noise ratio :math:`s`: how much of :math:`x_1` is still
unknown after seeing it through noise of unit size at strength :math:`s`.

Polar coordinates and data separation
-------------------------------------
Rescale the data so that :math:`m = d` (:func:`normalize`). On the
:math:`(\sigma, \alpha)` half-plane write :math:`\sigma = r\cos\theta,\ \alpha =
r\sin\theta`, so that :math:`s = \tan\theta`. Then :math:`\dot\sigma^2 + \dot\alpha^2 =
\dot r^2 + r^2\dot\theta^2` and the integrand becomes

.. math::

    d\,\big[\dot r^2 + \lambda(\theta)\, r^2 \dot\theta^2\big],
    \qquad
    \lambda(\theta) = 1 - \frac{(1 + s^2)\, V(s)}{d}, \quad s = \tan\theta,

the *data separation function*. It lies in :math:`[0, 1]`: the posterior covariance is
never larger than that of the best linear estimate, :math:`d/(1+s^2)`, which is what
Gaussian data :math:`\mathcal{N}(0, I)` achieve (:math:`\lambda \equiv 0`), while
perfectly separated data, whose :math:`x_1` is revealed by any noisy look,
have :math:`\lambda \equiv 1`. Changing the *scale* :math:`r` costs the full
:math:`d\dot r^2`; turning the *angle* costs only as much as the data are separated
at that angle.

Kinetic-optimal paths: straight lines on a cone
-----------------------------------------------
Minimising the kinetic energy between the end points is a shortest-path problem for
the metric :math:`d\,[\mathrm{d}r^2 + \lambda(\theta)\, r^2\, \mathrm{d}\theta^2]`. Measure
angles by how much they cost,

.. math::

    \varphi(\theta) = \int_0^\theta \sqrt{\lambda(\vartheta)}\,\mathrm{d}\vartheta,
    \qquad \Phi = \varphi(\pi/2) \le \pi/2 ,

and the metric becomes :math:`d\,[\mathrm{d}r^2 + r^2\,\mathrm{d}\varphi^2]`: the flat
plane in polar coordinates :math:`(r, \varphi)`, cut down to a wedge of opening
:math:`\Phi` (a cone, unrolled). Shortest paths in the flat plane are straight chords
traversed at constant speed. The chord from the noise end :math:`(r, \varphi) = (1, 0)`
to the data end :math:`(1, \Phi)` costs

.. math::

    \mathrm{KE}_{\mathrm{KO}} = d\,\lVert P_1 - P_0 \rVert^2 = 4d\sin^2(\Phi/2),

and the schedule is read off the chord: at time :math:`t` the point
:math:`P_t = (1-t)P_0 + tP_1` has radius :math:`r_t` and polar angle :math:`\psi_t`,
the data angle is :math:`\theta_t = \varphi^{-1}(\psi_t)`, and
:math:`(\sigma_t, \alpha_t) = r_t(\cos\theta_t, \sin\theta_t)`. Perfectly separated data
(:math:`\Phi = \pi/2`) give the straight line :math:`\sigma = 1 - t,\ \alpha = t` (Cond-OT);
Gaussian data (:math:`\Phi = 0`) make turning free and the quarter circle (cosine) costs
nothing.

Data that are not normalized. If :math:`c = \sqrt{m/d}`, the path of the data with
schedule :math:`(\sigma, \alpha)` is the path of the normalized data :math:`x_1/c` with
schedule :math:`(\sigma, c\alpha)`. So the data end sits at radius :math:`c`, the chord
runs from :math:`(1, 0)` to :math:`(c, \Phi)`, costs
:math:`d\,(1 + c^2 - 2c\cos\Phi)`, and :math:`\alpha_t = r_t\sin\theta_t / c`.

These formulas follow Shaul, Chen, Nickel, Le and Lipman, *On Kinetic Optimal
Probability Paths for Generative Models* (ICML 2023): the kinetic energy depends on the
data only through a data separation function, and the optimal paths solve a 1-D
problem. The derivation and the chord construction written here are our own reading of
those claims.

How the numbers are computed
----------------------------
*The posterior spread, angle by angle.* For a mixture target,
:math:`x_\theta = \cos\theta\, x_0 + \sin\theta\, x_1` is again a mixture, with
components :math:`\mathcal{N}(\sin\theta\,\mu_j,\ C_j)`,
:math:`C_j = \cos^2\theta\, I + \sin^2\theta\, \Sigma_j`. Given :math:`x_\theta = z` and
the component :math:`j`, :math:`x_1` is Gaussian with covariance
:math:`P_j = \cos^2\theta\,\Sigma_j C_j^{-1}` and mean :math:`b_j(z)`, and the
responsibilities :math:`w_j(z)` weigh the components, so

.. math::

    \operatorname{tr}\operatorname{Cov}[x_1 \mid z]
    = \sum_j w_j(z) \operatorname{tr} P_j + \sum_j w_j(z) \lVert b_j(z) - \bar b(z)\rVert^2 ,

a sum of non-negative terms: the spread *within* the components plus the spread
*between* their means. (The shortcut :math:`m - \mathbb{E}\lVert \mathbb{E}[x_1\mid z]
\rVert^2` subtracts two nearly equal numbers at high signal-to-noise ratio and can turn
:math:`\lambda` negative.) Everything is divided by :math:`\cos^2\theta` analytically, with
:math:`b_j - \sin\theta\, z = \cos^2\theta\, C_j^{-1}\big(\mu_j + \sin\theta(\Sigma_j - I)z\big)`
and :math:`I - \Sigma_j C_j^{-1} = \cos^2\theta\,(I - \Sigma_j) C_j^{-1}`, so that
:math:`\lambda(\theta)` comes out directly, finite and accurate up to
:math:`\theta = \pi/2`, where :math:`s = \infty`.

*The expectation over* :math:`z` is a sum over the components :math:`k` of
:math:`\mathbb{E}_{z \sim \mathcal{N}(\sin\theta\,\mu_k, C_k)}`, each taken by tensor
Gauss--Hermite quadrature, :math:`z = \sin\theta\,\mu_k + L_k\xi_n` with
:math:`L_k L_k^\top = C_k` and fixed nodes :math:`\xi_n` (a constant table, ``num_nodes``
per axis, so :math:`\text{num\_nodes}^d` points: meant for :math:`d \le 2`). The result
is deterministic and smooth in the mixture's parameters. The responsibilities switch
from one component to the next over a width that shrinks as the components separate, so
the quadrature converges slower than for a smooth integrand; the tests measure its
error against a finer rule and against Monte Carlo.

*The kinetic energy* of any schedule is the integral of the polar integrand
:math:`d[\dot r^2 + \lambda(\theta) (r\dot\theta)^2]` (in the normalized picture), whose
two terms are each finite even where :math:`\dot\sigma_t \to \infty` (linear-VP and VP
at :math:`t = 1`): the raw form above would subtract two huge numbers there. The time
integral uses Gauss--Legendre nodes in :math:`u` with :math:`t = (1 - \cos\pi u)/2`,
which crowds nodes at both ends and turns square-root behaviour at the ends into smooth
behaviour in :math:`u`.

*The kinetic-optimal schedule.* :math:`\lambda` is evaluated on a grid of angles,
:math:`\sqrt{\lambda}` is taken piecewise linear, so :math:`\varphi` is piecewise
quadratic and its inverse is the root of a quadratic on each cell. Where
:math:`\lambda = 0` (always at :math:`\theta = \pi/2` for mixtures with full-rank
covariances, and at :math:`\theta = 0` for centred data) the angle would turn infinitely
fast; the rate :math:`\sqrt{\lambda}` is therefore floored smoothly as
:math:`\sqrt{\lambda + \epsilon^2}` with :math:`\epsilon = 10^{-3}`, which changes
:math:`\Phi` by about :math:`10^{-5}` on the canonical mixture and keeps every slope
finite. The schedule is tabulated at times crowded towards both ends and handed to
:class:`~posteriorlab.core.paths.schedules.Tabulated` with exact slopes from the chain
rule, :math:`\dot\theta = \dot\psi / \sqrt{\lambda(\theta)}`.

Sample quality
--------------
:func:`energy_distance` compares two samples without any density, and
:func:`mean_log_prob` and :func:`target_mean_log_prob` compare the average
log-likelihood of generated samples with the exact value
:math:`\mathbb{E}_p \log p` (the negative entropy of the target).

Everything here is pure JAX and jitted; the mixture's values are traced, so editing a
mean, weight or covariance never recompiles -- only a new number of components,
dimension or grid size does.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from posteriorlab.core import gmm
from posteriorlab.core.paths import fields
from posteriorlab.core.paths.schedules import Schedule, Tabulated, coefficients

__all__ = [
    "NormalizedTarget",
    "SeparationProfile",
    "MonteCarloEstimate",
    "second_moment",
    "normalize",
    "posterior_covariance_trace",
    "data_separation",
    "separation_profile",
    "kinetic_energy_rate",
    "kinetic_energy",
    "kinetic_energy_monte_carlo",
    "kinetic_optimal_energy",
    "kinetic_optimal_schedule",
    "energy_distance",
    "mean_log_prob",
    "target_mean_log_prob",
]

NUM_NODES = 32
"""Default Gauss--Hermite nodes per axis (the tests quantify the resulting error)."""

NUM_ANGLES = 64
"""Default number of Chebyshev angles at which the data separation is computed."""

UNROLL_GRID = 1024
"""Size of the equally spaced angle grid on which the unrolled angle is tabulated."""

NUM_TIMES = 128
"""Default number of time nodes (kinetic-energy quadrature, kinetic-optimal table)."""

SEPARATION_FLOOR = 1e-3
r""":math:`\epsilon` in the floored turning rate :math:`\sqrt{\lambda + \epsilon^2}`."""


# --------------------------------------------------------------------------------------
# Constant quadrature tables (numpy, built once per size at trace time)
# --------------------------------------------------------------------------------------


@functools.cache
def _gauss_hermite_table(num_nodes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Tensor Gauss--Hermite rule for :math:`\mathbb{E}_{\xi \sim \mathcal{N}(0, I_d)} f(\xi)`.

    Nodes whose weight is below :math:`10^{-16}` of the largest are dropped: together
    they carry less than rounding error.
    """
    nodes_1d, weights_1d = hermegauss(num_nodes)
    weights_1d = weights_1d / math.sqrt(2.0 * math.pi)
    grids = np.meshgrid(*([nodes_1d] * dim), indexing="ij")
    weight_grids = np.meshgrid(*([weights_1d] * dim), indexing="ij")
    nodes = np.stack([g.reshape(-1) for g in grids], axis=-1)
    weights = np.prod(np.stack([w.reshape(-1) for w in weight_grids], axis=-1), axis=-1)
    keep = weights > 1e-16 * weights.max()
    return nodes[keep], weights[keep] / weights[keep].sum()


@functools.cache
def _time_quadrature_table(num_times: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Nodes and weights for :math:`\int_0^1 f(t)\,\mathrm{d}t`, crowded at both ends.

    Gauss--Legendre in :math:`u \in [0, 1]` with :math:`t = (1 - \cos \pi u)/2`,
    :math:`\mathrm{d}t = \tfrac{\pi}{2}\sin(\pi u)\,\mathrm{d}u`.
    """
    nodes_u, weights_u = leggauss(num_times)
    u = 0.5 * (nodes_u + 1.0)
    times = 0.5 * (1.0 - np.cos(np.pi * u))
    weights = 0.5 * weights_u * 0.5 * np.pi * np.sin(np.pi * u)
    return times, weights


def _gauss_hermite(num_nodes: int, dim: int, dtype) -> tuple[jax.Array, jax.Array]:
    nodes, weights = _gauss_hermite_table(num_nodes, dim)
    return jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype)


def _float_dtype(target: gmm.GaussianMixture):
    return jnp.result_type(target.means.dtype, float)


# --------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------


class NormalizedTarget(NamedTuple):
    r"""A mixture rescaled to :math:`\mathbb{E}\lVert x\rVert^2 = d`, and the factor used."""

    target: gmm.GaussianMixture
    """The rescaled mixture (means and Cholesky factors times ``scale``)."""
    scale: jax.Array
    r""":math:`\sqrt{d / \mathbb{E}\lVert x\rVert^2}`; the data were multiplied by it."""


def second_moment(target: gmm.GaussianMixture) -> jax.Array:
    r""":math:`m = \mathbb{E}\lVert x\rVert^2 = \sum_k \pi_k(\lVert\mu_k\rVert^2 +
    \operatorname{tr}\Sigma_k)`, with :math:`\operatorname{tr}\Sigma_k = \lVert L_k\rVert_F^2`."""
    per_component = jnp.sum(target.means**2, axis=-1) + jnp.sum(target.chol_covs**2, axis=(-2, -1))
    return gmm.weights(target) @ per_component


@jax.jit
def normalize(target: gmm.GaussianMixture) -> NormalizedTarget:
    r"""Rescale a mixture so that :math:`\mathbb{E}\lVert x\rVert^2 = d`.

    Every draw is multiplied by :math:`a = \sqrt{d/m}`, :math:`m = \mathbb{E}\lVert
    x\rVert^2`: means become :math:`a\mu_k` and covariances :math:`a^2\Sigma_k`. This is
    the scale on which the data separation function and the polar picture of the module
    docstring are defined.

    Parameters
    ----------
    target : GaussianMixture

    Returns
    -------
    NormalizedTarget
        ``(target, scale)``; unpacks like a tuple.
    """
    dim = target.means.shape[-1]
    scale = jnp.sqrt(dim / second_moment(target))
    rescaled = target._replace(means=scale * target.means, chol_covs=scale * target.chol_covs)
    return NormalizedTarget(rescaled, scale)


# --------------------------------------------------------------------------------------
# Posterior spread and data separation
# --------------------------------------------------------------------------------------


class _Spread(NamedTuple):
    """Posterior spread at one angle, both already divided by ``cos(angle)**2``."""

    remaining: jax.Array  # E tr Cov[x1 | x_theta] / cos^2 = (1 + s^2) V(s)
    resolved: jax.Array  # d - remaining, computed without the subtraction


def _posterior_spread(
    target: gmm.GaussianMixture, angle, nodes: jax.Array, node_weights: jax.Array
) -> _Spread:
    r""":math:`(1+s^2)V(s)` and :math:`d - (1+s^2)V(s)` at :math:`s = \tan(\text{angle})`.

    The formulas are those of "How the numbers are computed" in the module docstring.
    The quadrature points of component :math:`k` are :math:`z = \sin\theta\,\mu_k +
    L_k\xi` for the standard normal nodes :math:`\xi`, and everything evaluated at them
    is an affine function of :math:`\xi`: the whitened residual
    :math:`L_j^{-1}(z - \sin\theta\,\mu_j)` under component :math:`j` and the scaled
    posterior mean :math:`e_j(z) = (b_j(z) - \sin\theta\, z)/\cos\theta`. So each is one
    small :math:`(d \times d)` matrix per pair :math:`(k, j)` times the node table.

    ``nodes`` has shape ``(d, N)`` (one column per node).
    """
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    means = target.means
    eye = jnp.eye(means.shape[-1], dtype=means.dtype)
    covs = gmm.covariances(target)  # Sigma_j
    mixed_covs = cos**2 * eye + sin**2 * covs  # C_j
    chol = jnp.linalg.cholesky(mixed_covs)
    chol_inv = jax.scipy.linalg.solve_triangular(
        chol, jnp.broadcast_to(eye, mixed_covs.shape), lower=True
    )
    precisions = jnp.swapaxes(chol_inv, -1, -2) @ chol_inv  # C_j^{-1}
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)

    # tr(Sigma_j C_j^{-1}) and tr((I - Sigma_j) C_j^{-1}) = (d - tr(Sigma_j C_j^{-1})) / cos^2.
    within = jnp.einsum("jab,jba->j", covs, precisions)
    within_resolved = jnp.einsum("jab,jba->j", eye - covs, precisions)
    # e_j(z) = cos C_j^{-1} mu_j + sin cos C_j^{-1} (Sigma_j - I) z.
    mean_offsets = cos * jnp.einsum("jab,jb->ja", precisions, means)
    mean_gains = sin * cos * precisions @ (covs - eye)

    # The affine maps xi -> (whitened residual, e_j) for every pair (k, j).
    whiten_gains = chol_inv[None, :] @ chol[:, None]  # (K, J, d, d)
    whiten_offsets = sin * jnp.einsum("jab,kjb->kja", chol_inv, means[:, None] - means[None])
    mean_gains_xi = mean_gains[None, :] @ chol[:, None]
    mean_offsets_xi = mean_offsets[None] + sin * jnp.einsum("jab,kb->kja", mean_gains, means)

    whitened = jnp.einsum("kjab,bn->kjan", whiten_gains, nodes) + whiten_offsets[..., None]
    log_joint = (target.log_weights - half_log_det)[None, :, None] - 0.5 * jnp.sum(
        whitened**2, axis=2
    )
    responsibilities = jax.nn.softmax(log_joint, axis=1)  # (K, J, N): w_j(z_kn)
    scaled_means = jnp.einsum("kjab,bn->kjan", mean_gains_xi, nodes) + mean_offsets_xi[..., None]
    average = jnp.sum(responsibilities[:, :, None] * scaled_means, axis=1, keepdims=True)
    between = jnp.sum(responsibilities * jnp.sum((scaled_means - average) ** 2, axis=2), axis=1)

    remaining = jnp.einsum("kjn,j->kn", responsibilities, within) + between
    resolved = cos**2 * jnp.einsum("kjn,j->kn", responsibilities, within_resolved) - between
    component_weights = gmm.weights(target)
    return _Spread(
        remaining=component_weights @ (remaining @ node_weights),
        resolved=component_weights @ (resolved @ node_weights),
    )


def _spread_at_angles(target, angles, num_nodes: int) -> _Spread:
    nodes, node_weights = _gauss_hermite(num_nodes, target.means.shape[-1], _float_dtype(target))
    return jax.vmap(_posterior_spread, in_axes=(None, 0, None, None))(
        target, angles, nodes.T, node_weights
    )


@functools.partial(jax.jit, static_argnames="num_nodes")
def posterior_covariance_trace(
    target: gmm.GaussianMixture, snr, *, num_nodes: int = NUM_NODES
) -> jax.Array:
    r"""The posterior spread :math:`V(s) = \mathbb{E}\operatorname{tr}
    \operatorname{Cov}[x_1 \mid x_0 + s\,x_1]`, :math:`x_0 \sim \mathcal{N}(0, I)`.

    :math:`V(0) = \operatorname{tr}\operatorname{Cov}[x_1]`; :math:`V` decreases to 0 as
    :math:`s \to \infty` (``snr = inf`` is allowed). Computed as
    :math:`\cos^2\theta \cdot (1+s^2)V(s)` with :math:`\theta = \arctan s`, by
    Gauss--Hermite quadrature (module docstring).

    Parameters
    ----------
    target : GaussianMixture
        The data :math:`x_1` (not normalized here).
    snr : array_like
        Signal-to-noise ratios :math:`s \ge 0`, any shape.
    num_nodes : int
        Gauss--Hermite nodes per axis.

    Returns
    -------
    Array, same shape as ``snr``
    """
    snr = jnp.asarray(snr, _float_dtype(target))
    angles = jnp.arctan(snr).reshape(-1)
    spread = _spread_at_angles(target, angles, num_nodes)
    return (jnp.cos(angles) ** 2 * spread.remaining).reshape(snr.shape)


def _separation(normalized_target, angles, num_nodes: int) -> jax.Array:
    """Unclipped lambda at the angles (a vector) of a target already normalized."""
    dim = normalized_target.means.shape[-1]
    return _spread_at_angles(normalized_target, angles, num_nodes).resolved / dim


@functools.partial(jax.jit, static_argnames="num_nodes")
def data_separation(
    target: gmm.GaussianMixture, angles, *, num_nodes: int = NUM_NODES
) -> jax.Array:
    r"""The data separation function :math:`\lambda(\theta) = 1 - (1+s^2)V(s)/d`,
    :math:`s = \tan\theta`, of the *normalized* target, by quadrature at each angle.

    0 where the noisy data look Gaussian, 1 where a noisy look reveals :math:`x_1`.
    The target is normalized first (:func:`normalize`), so any mixture may be passed.

    Parameters
    ----------
    target : GaussianMixture
    angles : array_like
        :math:`\theta \in [0, \pi/2]`, any shape.
    num_nodes : int
        Gauss--Hermite nodes per axis.

    Returns
    -------
    Array, same shape as ``angles``, clipped to :math:`[0, 1]` (quadrature error can
    step outside by rounding amounts).
    """
    normalized, _ = normalize(target)
    angles = jnp.asarray(angles, _float_dtype(target))
    separation = _separation(normalized, angles.reshape(-1), num_nodes).reshape(angles.shape)
    return jnp.clip(separation, 0.0, 1.0)


# --------------------------------------------------------------------------------------
# The separation profile: lambda as a Chebyshev series in the angle
# --------------------------------------------------------------------------------------


@functools.cache
def _chebyshev_table(num_angles: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Chebyshev--Lobatto angles on :math:`[0, \pi/2]` and the matrix that maps values
    there to the coefficients of the interpolating Chebyshev series (a DCT-I)."""
    index = np.arange(num_angles)
    cosines = np.cos(np.pi * np.outer(index, index) / (num_angles - 1))
    angles = 0.25 * np.pi * (1.0 + cosines[1])  # from pi/2 down to 0
    end_halved = np.ones(num_angles)
    end_halved[[0, -1]] = 0.5
    transform = (2.0 / (num_angles - 1)) * end_halved[:, None] * cosines * end_halved[None, :]
    return angles, transform


def _chebyshev_basis(angles, num_terms: int) -> jax.Array:
    r""":math:`T_k(x) = \cos(k \arccos x)` at :math:`x = 4\theta/\pi - 1`, shape (..., terms)."""
    x = jnp.clip(4.0 * angles / jnp.pi - 1.0, -1.0, 1.0)
    return jnp.cos(jnp.arccos(x)[..., None] * jnp.arange(num_terms, dtype=x.dtype))


class SeparationProfile(NamedTuple):
    r"""The data separation of a target, ready for kinetic energies and the KO schedule."""

    chebyshev_coefficients: jax.Array
    r"""``(M,)`` :math:`\lambda(\theta) = \sum_k a_k T_k(4\theta/\pi - 1)`, interpolating
    the quadrature values at ``M`` Chebyshev angles (unclipped)."""
    angles: jax.Array
    r"""``(A,)`` a fine, equally spaced grid :math:`\theta_i` from 0 to :math:`\pi/2`."""
    separation: jax.Array
    r"""``(A,)`` :math:`\lambda(\theta_i)`, clipped to :math:`[0, 1]`."""
    turning_rates: jax.Array
    r"""``(A,)`` :math:`\varphi'(\theta_i) = \sqrt{\lambda(\theta_i) + \epsilon^2}`."""
    unrolled_angles: jax.Array
    r"""``(A,)`` :math:`\varphi(\theta_i)`, the trapezoid rule on the rates."""
    opening: jax.Array
    r""":math:`\Phi = \varphi(\pi/2)`, the opening of the unrolled cone."""
    data_radius: jax.Array
    r""":math:`c = \sqrt{m/d}`: where the data end sits in the normalized picture."""


def _profile_separation(profile: SeparationProfile, angles) -> jax.Array:
    """Unclipped lambda at any angles, from the Chebyshev series."""
    num_terms = profile.chebyshev_coefficients.shape[0]
    return _chebyshev_basis(angles, num_terms) @ profile.chebyshev_coefficients


@functools.partial(jax.jit, static_argnames=("num_angles", "num_nodes"))
def separation_profile(
    target: gmm.GaussianMixture, *, num_angles: int = NUM_ANGLES, num_nodes: int = NUM_NODES
) -> SeparationProfile:
    r"""The data separation :math:`\lambda` of ``target`` and the unrolled angle
    :math:`\varphi(\theta) = \int_0^\theta \sqrt{\lambda + \epsilon^2}`.

    :math:`\lambda` is smooth in :math:`\theta`, so it is computed by quadrature at only
    ``num_angles`` Chebyshev angles (crowded at both ends, where it changes fastest for
    narrow components) and interpolated by the Chebyshev series through them, which
    converges exponentially in ``num_angles``. The series is tabulated on
    :data:`UNROLL_GRID` equally spaced angles; between them the rate
    :math:`\sqrt{\lambda + \epsilon^2}` is read as linear, so the trapezoid values of
    :math:`\varphi` are exact for that reading and its inverse is a quadratic root on each
    cell (:func:`kinetic_optimal_schedule`).

    Parameters
    ----------
    target : GaussianMixture
        Any mixture; it is normalized first.
    num_angles : int
        Chebyshev angles at which the quadrature runs.
    num_nodes : int
        Gauss--Hermite nodes per axis.

    Returns
    -------
    SeparationProfile
    """
    dtype = _float_dtype(target)
    normalized, scale = normalize(target)
    chebyshev_angles, transform = _chebyshev_table(num_angles)
    values = _separation(normalized, jnp.asarray(chebyshev_angles, dtype), num_nodes)
    coefficients_ = jnp.asarray(transform, dtype) @ values
    angles = jnp.linspace(0.0, 0.5 * jnp.pi, UNROLL_GRID, dtype=dtype)
    separation = jnp.clip(_chebyshev_basis(angles, num_angles) @ coefficients_, 0.0, 1.0)
    rates = jnp.sqrt(separation + SEPARATION_FLOOR**2)
    cells = 0.5 * (rates[1:] + rates[:-1]) * jnp.diff(angles)
    unrolled = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(cells)])
    return SeparationProfile(
        coefficients_, angles, separation, rates, unrolled, unrolled[-1], 1.0 / scale
    )


# --------------------------------------------------------------------------------------
# Kinetic energy of a schedule
# --------------------------------------------------------------------------------------


def _polar_rates(coeffs, data_radius):
    """Angle, squared radial speed and squared turning speed (r theta_dot)^2 in the
    normalized picture, where the data coefficient is ``data_radius * alpha``."""
    sigma, sigma_dot = coeffs.sigma, coeffs.sigma_dot
    alpha, alpha_dot = data_radius * coeffs.alpha, data_radius * coeffs.alpha_dot
    radius_sq = sigma**2 + alpha**2
    radial_sq = (sigma * sigma_dot + alpha * alpha_dot) ** 2 / radius_sq
    turning_sq = (sigma * alpha_dot - alpha * sigma_dot) ** 2 / radius_sq
    return jnp.arctan2(alpha, sigma), radial_sq, turning_sq


@functools.partial(jax.jit, static_argnames=("num_angles", "num_nodes"))
def kinetic_energy_rate(
    schedule: Schedule,
    target: gmm.GaussianMixture,
    t,
    *,
    num_angles: int = NUM_ANGLES,
    num_nodes: int = NUM_NODES,
) -> jax.Array:
    r"""The integrand of the kinetic energy, :math:`\mathbb{E}\lVert u_t(x_t)\rVert^2`.

    .. math::

        \mathbb{E}\lVert u_t(x_t)\rVert^2
        = d\,\dot\sigma^2 + m\,\dot\alpha^2
          - V(\alpha/\sigma)\,(\sigma\dot\alpha - \alpha\dot\sigma)^2/\sigma^2
        = d\,\big[\dot r^2 + \lambda(\theta)\,(r\dot\theta)^2\big],

    the second form in the normalized picture :math:`(\sigma, c\,\alpha) =
    r(\cos\theta, \sin\theta)`, :math:`c = \sqrt{m/d}`. It is the one evaluated: both of
    its terms stay finite where :math:`\dot\sigma` does not (:math:`t \to 1` for VP).
    :math:`\lambda` comes from the Chebyshev series of :func:`separation_profile`.

    Parameters
    ----------
    schedule : a schedule from :mod:`posteriorlab.core.paths.schedules`
        Evaluated through :func:`~posteriorlab.core.paths.schedules.coefficients`, i.e.
        at :math:`\min(t, 1 - 10^{-6})`.
    target : GaussianMixture
    t : array_like
        Times, any shape.
    num_angles, num_nodes : int
        As in :func:`separation_profile`.

    Returns
    -------
    Array, same shape as ``t``
    """
    profile = separation_profile(target, num_angles=num_angles, num_nodes=num_nodes)
    t = jnp.asarray(t, _float_dtype(target))
    coeffs = coefficients(schedule, t.reshape(-1))
    angle, radial_sq, turning_sq = _polar_rates(coeffs, profile.data_radius)
    separation = _profile_separation(profile, angle)
    dim = target.means.shape[-1]
    return (dim * (radial_sq + separation * turning_sq)).reshape(t.shape)


@functools.partial(jax.jit, static_argnames=("num_times", "num_angles", "num_nodes"))
def kinetic_energy(
    schedule: Schedule,
    target: gmm.GaussianMixture,
    *,
    num_times: int = NUM_TIMES,
    num_angles: int = NUM_ANGLES,
    num_nodes: int = NUM_NODES,
) -> jax.Array:
    r"""The kinetic energy :math:`\int_0^1 \mathbb{E}\lVert u_t(x_t)\rVert^2\,\mathrm{d}t`
    of a schedule for the path from :math:`\mathcal{N}(0, I)` to ``target``.

    The integrand is :func:`kinetic_energy_rate`; the time integral is Gauss--Legendre in
    :math:`u` with :math:`t = (1-\cos\pi u)/2` (``num_times`` nodes), exact up to
    quadrature error for smooth schedules and for square-root behaviour at the ends.
    A schedule whose speed is not square integrable (polynomial with exponent below
    1/2) has infinite kinetic energy; the quadrature then returns a large, meaningless
    number.

    Parameters
    ----------
    schedule : a schedule from :mod:`posteriorlab.core.paths.schedules`
    target : GaussianMixture
    num_times : int
        Time nodes.
    num_angles, num_nodes : int
        As in :func:`separation_profile`.

    Returns
    -------
    Array, scalar
    """
    dtype = _float_dtype(target)
    times, weights = _time_quadrature_table(num_times)
    rate = kinetic_energy_rate(
        schedule, target, jnp.asarray(times, dtype), num_angles=num_angles, num_nodes=num_nodes
    )
    return rate @ jnp.asarray(weights, dtype)


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo average and its standard error; unpacks as ``(mean, standard_error)``."""

    mean: jax.Array
    standard_error: jax.Array


@functools.partial(jax.jit, static_argnames="num_samples")
def kinetic_energy_monte_carlo(
    key: jax.Array, schedule: Schedule, target: gmm.GaussianMixture, num_samples: int
) -> MonteCarloEstimate:
    r"""Monte Carlo kinetic energy: the average of :math:`\lVert u_t(x_t)\rVert^2`.

    Draw :math:`t \sim \mathcal{U}(0, 1)`, :math:`x_0 \sim \mathcal{N}(0, I)`,
    :math:`x_1 \sim` ``target``, set :math:`x_t = \sigma_t x_0 + \alpha_t x_1` and
    evaluate the exact velocity :func:`~posteriorlab.core.paths.fields.velocity`. An
    independent check of :func:`kinetic_energy` that uses none of its formulas.

    Parameters
    ----------
    key : PRNG key
    schedule : a schedule
    target : GaussianMixture
    num_samples : int
        Static (a shape).

    Returns
    -------
    MonteCarloEstimate
        The average and its standard error :math:`\hat s / \sqrt{n}`.
    """
    key_time, key_noise, key_data = jax.random.split(key, 3)
    dtype = _float_dtype(target)
    dim = target.means.shape[-1]
    times = jax.random.uniform(key_time, (num_samples,), dtype)
    noise = jax.random.normal(key_noise, (num_samples, dim), dtype)
    data = gmm.sample(key_data, target, num_samples)
    coeffs = coefficients(schedule, times)
    points = coeffs.sigma[:, None] * noise + coeffs.alpha[:, None] * data

    def speed_squared(t, x):
        return jnp.sum(fields.velocity(fields.marginal(schedule, target, t), x) ** 2)

    values = jax.vmap(speed_squared)(times, points)
    return MonteCarloEstimate(
        jnp.mean(values), jnp.std(values, ddof=1) / jnp.sqrt(jnp.asarray(num_samples, dtype))
    )


# --------------------------------------------------------------------------------------
# The kinetic-optimal schedule
# --------------------------------------------------------------------------------------


def _chord_cost(dim: int, data_radius, opening):
    r""":math:`d\,\lVert P_1 - P_0\rVert^2 = d(1 + c^2 - 2c\cos\Phi)`."""
    return dim * ((1.0 - data_radius) ** 2 + 2.0 * data_radius * (1.0 - jnp.cos(opening)))


@functools.partial(jax.jit, static_argnames=("num_angles", "num_nodes"))
def kinetic_optimal_energy(
    target: gmm.GaussianMixture, *, num_angles: int = NUM_ANGLES, num_nodes: int = NUM_NODES
) -> jax.Array:
    r"""The least kinetic energy of any schedule from :math:`(\sigma, \alpha) = (1, 0)` to
    :math:`(0, 1)`: :math:`d\,(1 + c^2 - 2c\cos\Phi)`, which is :math:`4d\sin^2(\Phi/2)`
    for normalized data (:math:`c = 1`).

    Written as :math:`d[(1-c)^2 + 2c(1 - \cos\Phi)]`, which keeps its digits when
    :math:`c \approx 1` and :math:`\Phi \approx 0`. Arguments as in
    :func:`separation_profile`.
    """
    profile = separation_profile(target, num_angles=num_angles, num_nodes=num_nodes)
    return _chord_cost(target.means.shape[-1], profile.data_radius, profile.opening)


def _unroll_inverse(profile: SeparationProfile, unrolled):
    r"""Solve :math:`\varphi(\theta) = \psi`; return :math:`\theta` and
    :math:`\varphi'(\theta)`.

    On the cell :math:`[\theta_i, \theta_i + h]` the rate is :math:`a + (b - a)u`,
    :math:`u \in [0, 1]`, so :math:`\varphi = \varphi_i + h(au + \tfrac12(b-a)u^2)`, and
    :math:`u = 2\tau / (a + \sqrt{a^2 + 2(b-a)\tau})` with :math:`\tau = (\psi -
    \varphi_i)/h` is its root, written without the cancellation of the textbook formula.
    """
    last_cell = profile.angles.shape[0] - 2
    cell = jnp.searchsorted(profile.unrolled_angles, unrolled, side="right") - 1
    cell = jnp.clip(cell, 0, last_cell)
    width = profile.angles[cell + 1] - profile.angles[cell]
    rate_left, rate_right = profile.turning_rates[cell], profile.turning_rates[cell + 1]
    tau = (unrolled - profile.unrolled_angles[cell]) / width
    discriminant = jnp.maximum(rate_left**2 + 2.0 * (rate_right - rate_left) * tau, 0.0)
    fraction = jnp.clip(2.0 * tau / (rate_left + jnp.sqrt(discriminant)), 0.0, 1.0)
    angle = profile.angles[cell] + fraction * width
    return angle, rate_left + (rate_right - rate_left) * fraction


def _crowded_times(num_times: int, dtype) -> jax.Array:
    r""":math:`t_j = (1 - \cos(\pi j/(G-1)))/2`: dense at both ends, where the
    kinetic-optimal path turns fastest."""
    u = np.linspace(0.0, 1.0, num_times)
    return jnp.asarray(0.5 * (1.0 - np.cos(np.pi * u)), dtype)


@functools.partial(jax.jit, static_argnames=("num_angles", "num_times", "num_nodes"))
def kinetic_optimal_schedule(
    target: gmm.GaussianMixture,
    *,
    num_angles: int = NUM_ANGLES,
    num_times: int = NUM_TIMES,
    num_nodes: int = NUM_NODES,
) -> Tabulated:
    r"""The kinetic-optimal schedule for ``target``: the chord in the unrolled cone.

    With :math:`c = \sqrt{m/d}` and the opening :math:`\Phi` of
    :func:`separation_profile`, the chord :math:`P_t = (1-t)(1, 0) + t\,c(\cos\Phi,
    \sin\Phi)` has radius :math:`r_t` and polar angle :math:`\psi_t`; then
    :math:`\theta_t = \varphi^{-1}(\psi_t)` and

    .. math::

        \sigma_t = r_t\cos\theta_t,\qquad \alpha_t = r_t\sin\theta_t / c,

    so :math:`(\sigma_0, \alpha_0) = (1, 0)` and :math:`(\sigma_1, \alpha_1) = (0, 1)`.
    The slopes come from the chain rule, :math:`\dot r = P\cdot\dot P/r`,
    :math:`\dot\psi = (P\times\dot P)/r^2`, :math:`\dot\theta = \dot\psi/\varphi'(\theta)`.
    At the first and last time the turning rate is replaced by its average over the
    adjacent cell, the secant :math:`\Delta\psi/\Delta\theta`: where :math:`\lambda`
    vanishes at an end (centred data at :math:`t = 0`, every full-rank mixture at
    :math:`t = 1`) the true slope is infinite, like :math:`\sigma_t \propto \sqrt{1-t}`.

    Parameters
    ----------
    target : GaussianMixture
        Any mixture (it need not be normalized).
    num_angles : int
        Angle grid of :func:`separation_profile`.
    num_times : int
        Table size; times :math:`(1 - \cos(\pi j/(G-1)))/2`, crowded at both ends.
    num_nodes : int
        Gauss--Hermite nodes per axis.

    Returns
    -------
    Tabulated
        A schedule like any other; its kinetic energy (:func:`kinetic_energy`) is
        :func:`kinetic_optimal_energy` up to the table's interpolation error.
    """
    profile = separation_profile(target, num_angles=num_angles, num_nodes=num_nodes)
    radius_end = profile.data_radius
    times = _crowded_times(num_times, profile.angles.dtype)

    start = jnp.array([1.0, 0.0], profile.angles.dtype)
    end = radius_end * jnp.stack([jnp.cos(profile.opening), jnp.sin(profile.opening)])
    velocity = end - start
    chord = start + times[:, None] * velocity  # (G, 2)
    radius = jnp.linalg.norm(chord, axis=-1)
    radius_dot = chord @ velocity / radius
    unrolled = jnp.clip(jnp.arctan2(chord[:, 1], chord[:, 0]), 0.0, profile.opening)
    unrolled_dot = (chord[:, 0] * velocity[1] - chord[:, 1] * velocity[0]) / radius**2

    angle, rate = _unroll_inverse(profile, unrolled)
    end_rates = (unrolled[jnp.array([1, -1])] - unrolled[jnp.array([0, -2])]) / (
        angle[jnp.array([1, -1])] - angle[jnp.array([0, -2])]
    )
    rate = rate.at[jnp.array([0, -1])].set(end_rates)
    angle_dot = unrolled_dot / rate

    cos, sin = jnp.cos(angle), jnp.sin(angle)
    sigmas = (radius * cos).at[0].set(1.0).at[-1].set(0.0)
    alphas = (radius * sin / radius_end).at[0].set(0.0).at[-1].set(1.0)
    sigma_slopes = radius_dot * cos - radius * sin * angle_dot
    alpha_slopes = (radius_dot * sin + radius * cos * angle_dot) / radius_end
    return Tabulated(times, alphas, sigmas, alpha_slopes, sigma_slopes)


# --------------------------------------------------------------------------------------
# Sample quality
# --------------------------------------------------------------------------------------


def _mean_distance(a: jax.Array, b: jax.Array, exclude_diagonal: bool) -> jax.Array:
    """Average Euclidean distance over pairs (a_i, b_j), one row of a at a time."""

    def row_sum(point):
        return jnp.sum(jnp.sqrt(jnp.sum((point - b) ** 2, axis=-1)))

    total = jnp.sum(jax.lax.map(row_sum, a, batch_size=256))
    pairs = a.shape[0] * (b.shape[0] - 1) if exclude_diagonal else a.shape[0] * b.shape[0]
    return total / pairs


@functools.partial(jax.jit, static_argnames="unbiased")
def energy_distance(samples, reference_samples, *, unbiased: bool = True) -> jax.Array:
    r"""The energy distance between two samples, a density-free two-sample statistic.

    .. math::

        \mathcal{E}(P, Q) = 2\,\mathbb{E}\lVert X - Y\rVert - \mathbb{E}\lVert X - X'\rVert
                          - \mathbb{E}\lVert Y - Y'\rVert \;\ge 0,

    with :math:`X, X' \sim P` and :math:`Y, Y' \sim Q` independent; it is zero only when
    :math:`P = Q`. Each expectation is an average over pairs. With ``unbiased=True``
    (the U-statistic) the within-sample averages skip the pairs :math:`(i, i)`, so the
    estimate is unbiased -- its mean is exactly 0 when both samples come from the same
    distribution, and one draw may be slightly negative. With ``unbiased=False`` (the
    V-statistic) they include them; the estimate is then never negative but is biased
    upwards by :math:`\mathbb{E}\lVert X-X'\rVert/n + \mathbb{E}\lVert Y-Y'\rVert/m`.

    Parameters
    ----------
    samples : array_like, shape (n, d)
    reference_samples : array_like, shape (m, d)
    unbiased : bool, default True

    Returns
    -------
    Array, scalar
    """
    samples = jnp.asarray(samples)
    reference_samples = jnp.asarray(reference_samples)
    across = _mean_distance(samples, reference_samples, exclude_diagonal=False)
    within = _mean_distance(samples, samples, exclude_diagonal=unbiased)
    within_reference = _mean_distance(reference_samples, reference_samples, unbiased)
    return 2.0 * across - within - within_reference


@jax.jit
def mean_log_prob(samples, target: gmm.GaussianMixture) -> jax.Array:
    r"""Average log-likelihood :math:`\frac1n\sum_i \log p(x_i)` of samples under the
    exact target; compare with :func:`target_mean_log_prob`."""
    return jnp.mean(gmm.log_prob(target, samples))


@functools.partial(jax.jit, static_argnames="num_nodes")
def target_mean_log_prob(target: gmm.GaussianMixture, *, num_nodes: int = NUM_NODES) -> jax.Array:
    r""":math:`\mathbb{E}_{x \sim p}\log p(x)`, the negative entropy of the target.

    Exact samples have this average log-likelihood; a sampler that collapses onto the
    modes scores higher, one that spreads too wide scores lower. Computed as
    :math:`\sum_k \pi_k\, \mathbb{E}_{\xi}\log p(\mu_k + L_k\xi)` by tensor
    Gauss--Hermite quadrature, exact for a single Gaussian
    (:math:`-\tfrac12\log\det(2\pi e\Sigma)`).

    Parameters
    ----------
    target : GaussianMixture
    num_nodes : int
        Gauss--Hermite nodes per axis.

    Returns
    -------
    Array, scalar
    """
    nodes, node_weights = _gauss_hermite(num_nodes, target.means.shape[-1], _float_dtype(target))
    points = target.means[:, None, :] + jnp.einsum("kij,nj->kni", target.chol_covs, nodes)
    return gmm.weights(target) @ (gmm.log_prob(target, points) @ node_weights)
