r"""The exact posterior of a distance observation, by quadrature in polar coordinates.

For the likelihood :math:`y_j = \lVert x\rVert + \sigma_j\varepsilon_j`
(:mod:`posteriorlab.core.transformer.likelihoods`, ``"norm"``) there is no closed-form
posterior, but in one or two dimensions there is no need for one: the posterior density

.. math::

    p(x \mid y) = \frac{p(x)\, L(\lVert x\rVert)}{Z}, \qquad
    L(r) = \prod_j \mathcal{N}(y_j;\, r,\, \sigma_j^2),

is known pointwise, and only the evidence :math:`Z = p(y)` is an integral. Because the
likelihood depends on :math:`x` only through its length, polar coordinates
:math:`x = r u` (:math:`r \ge 0`, :math:`u` a unit vector) split it:

.. math::

    Z = \int_0^\infty L(r)\, \rho(r)\, dr, \qquad
    \rho(r) = r^{d-1} \oint p(r u)\, du ,

where :math:`\rho` is the prior density of the radius. In 2-D the circle integral is a
sum over :data:`NUM_ANGLES` equally spaced angles: the integrand is smooth and periodic,
so this rule converges geometrically (the error of a Gaussian bump of angular width
:math:`w` is about :math:`e^{-2\pi^2 w^2/h^2}` for a spacing :math:`h`). In 1-D the
"circle" is the two points :math:`u = \pm 1`, and :math:`\rho(r) = p(r) + p(-r)`.

The radius integral runs over a window that holds the posterior mass. A coarse
midpoint pass over :math:`[0, R]`, with :math:`R` the farthest prior mean plus
:data:`PRIOR_REACH` times the largest component scale (the prior has no mass beyond),
finds where :math:`\log[L(r)\rho(r)]` is within :data:`WINDOW_NATS` of its maximum; a
fine pass, the :data:`NUM_RADII`-point Gauss--Legendre rule, covers that window, one
coarse spacing wider on either side. The likelihood in :math:`r` is a single Gaussian
bump of width :math:`\sigma/\sqrt n` around the mean distance observed and the prior's
radial density varies on the scale of its components, so the fine pass resolves both.
Gauss--Legendre rather than the midpoint rule because in 2-D the integrand
:math:`L(r)\rho(r) \propto r` does not vanish to all orders at :math:`r = 0`, where the
midpoint rule would leave an error of order :math:`\Delta r^2`; Gauss--Legendre
converges geometrically for such smooth integrands. The errors are far below the
differences between methods the labs and benchmarks show (the tests ask for
:math:`10^{-7}` nats against independent integrators).

The result is a set of nodes :math:`x_m = r_i u_k` with normalised masses
:math:`w_m \propto p(x_m) L(r_i)\, r_i^{d-1}\, \omega_i\, \Delta u` (:math:`\omega_i` the
Gauss--Legendre weights) -- a discrete
posterior whose weighted average is the posterior mean and whose nodes, drawn by their
masses, are draws from the posterior up to the grid's resolution -- and
:math:`\log Z`, which makes the log-density :func:`log_density` exact at any point.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from posteriorlab.core import gmm
from posteriorlab.core.smc import resampling
from posteriorlab.core.transformer import likelihoods

__all__ = [
    "NUM_ANGLES",
    "NUM_COARSE_RADII",
    "NUM_RADII",
    "PRIOR_REACH",
    "WINDOW_NATS",
    "QuadraturePosterior",
    "norm_posterior",
    "log_density",
    "mean",
    "sample",
]

NUM_ANGLES = 256
"""Angles of the 2-D circle rule."""
NUM_COARSE_RADII = 256
"""Radii of the pass that finds the window."""
NUM_RADII = 512
"""Radii of the fine (Gauss--Legendre) pass inside the window."""
PRIOR_REACH = 8.0
"""The prior is taken to end this many component scales beyond its farthest mean."""
WINDOW_NATS = 40.0
"""The window keeps every radius whose log-integrand is within this of the maximum."""


class QuadraturePosterior(NamedTuple):
    """The posterior as weighted quadrature nodes, and the evidence.

    Attributes
    ----------
    points : Array, shape (M, d)
        Nodes :math:`x_m = r_i u_k`.
    log_weights : Array, shape (M,)
        Normalised log-masses (``logsumexp(log_weights) == 0``).
    log_evidence : Array, shape ()
        :math:`\\log Z = \\log p(y)`.
    """

    points: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array


def _directions(dim: int, dtype):
    """Unit vectors of the circle rule and the log of the measure each carries."""
    if dim == 1:
        return jnp.array([[1.0], [-1.0]], dtype), 0.0
    angles = 2.0 * math.pi * jnp.arange(NUM_ANGLES, dtype=dtype) / NUM_ANGLES
    return jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1), math.log(2.0 * math.pi / NUM_ANGLES)


def _log_radius_likelihood(radii, values, noise_sd, observation_mask):
    """:math:`\\log L(r)` at every radius, shape ``(R,)``."""
    terms = jax.scipy.stats.norm.logpdf(values[None, :], radii[:, None], noise_sd[None, :])
    return jnp.sum(jnp.where(observation_mask[None, :], terms, 0.0), axis=-1)


def _log_integrand(prior, radii, values, noise_sd, observation_mask):
    """:math:`\\log[p(r u) L(r) r^{d-1} \\Delta u]` on radii x directions, shape ``(R, U)``,
    and the nodes ``(R, U, d)``."""
    dim = prior.means.shape[-1]
    directions, log_measure = _directions(dim, radii.dtype)
    points = radii[:, None, None] * directions[None, :, :]
    log_prior = gmm.log_prob(prior, points)
    log_radius = _log_radius_likelihood(radii, values, noise_sd, observation_mask)
    jacobian = (dim - 1) * jnp.log(radii)
    return log_prior + (log_radius + jacobian)[:, None] + log_measure, points


_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(NUM_RADII)


def _gauss_legendre(low, high):
    """Gauss--Legendre nodes on ``[low, high]`` and the log of their weights."""
    half = 0.5 * (high - low)
    nodes = low + half * (jnp.asarray(_LEGENDRE_NODES, half.dtype) + 1.0)
    return nodes, jnp.log(half * jnp.asarray(_LEGENDRE_WEIGHTS, half.dtype))


def _midpoints(low, high, count):
    """Midpoint-rule nodes on ``[low, high]`` and their spacing."""
    spacing = (high - low) / count
    return low + spacing * (jnp.arange(count, dtype=spacing.dtype) + 0.5), spacing


def _reach(prior) -> jax.Array:
    """Radius beyond which the prior has no mass: farthest mean plus PRIOR_REACH scales
    (a component's scale is bounded by the Frobenius norm of its factor)."""
    distance = jnp.linalg.norm(prior.means, axis=-1)
    scale = jnp.sqrt(jnp.sum(prior.chol_covs**2, axis=(-2, -1)))
    reach = jnp.where(jnp.isfinite(prior.log_weights), distance + PRIOR_REACH * scale, 0.0)
    return jnp.max(reach)


def norm_posterior(prior: gmm.GaussianMixture, values, noise_sd,
                   observation_mask) -> QuadraturePosterior:
    r"""The posterior of a 1-D or 2-D mixture prior given distance observations
    :math:`y_j = \lVert x\rVert + \sigma_j\varepsilon_j` (module docstring).

    Parameters
    ----------
    prior : GaussianMixture
        ``K`` components in ``d`` = 1 or 2 dimensions (a weight of zero is allowed).
    values, noise_sd : Array, shape (n,)
    observation_mask : bool Array, shape (n,)
        Observations with ``False`` are ignored.

    Returns
    -------
    QuadraturePosterior
        ``NUM_RADII * NUM_ANGLES`` nodes in 2-D, ``NUM_RADII * 2`` in 1-D.
    """
    dtype = prior.means.dtype
    args = (jnp.asarray(values, dtype), jnp.asarray(noise_sd, dtype),
            jnp.asarray(observation_mask, bool))  # fmt: skip
    reach = _reach(prior)
    coarse, coarse_spacing = _midpoints(jnp.zeros((), dtype), reach, NUM_COARSE_RADII)
    coarse_terms, _ = _log_integrand(prior, coarse, *args)
    per_radius = logsumexp(coarse_terms, axis=-1)
    inside = per_radius > jnp.max(per_radius) - WINDOW_NATS
    low = jnp.maximum(jnp.min(jnp.where(inside, coarse, jnp.inf)) - coarse_spacing, 0.0)
    high = jnp.minimum(jnp.max(jnp.where(inside, coarse, -jnp.inf)) + coarse_spacing, reach)
    radii, log_radius_weights = _gauss_legendre(low, high)
    terms, points = _log_integrand(prior, radii, *args)
    terms = (terms + log_radius_weights[:, None]).reshape(-1)
    log_evidence = logsumexp(terms)
    return QuadraturePosterior(
        points=points.reshape(-1, points.shape[-1]),
        log_weights=terms - log_evidence,
        log_evidence=log_evidence,
    )


def log_density(posterior: QuadraturePosterior, prior: gmm.GaussianMixture, values, noise_sd,
                observation_mask, x) -> jax.Array:
    r""":math:`\log p(x \mid y) = \log p(x) + \log L(\lVert x\rVert) - \log Z`, exact up
    to the quadrature of :math:`Z`; ``x`` has shape ``(..., d)``."""
    dim = prior.means.shape[-1]
    rows = jnp.ones((jnp.shape(values)[0], dim), prior.means.dtype)

    def one(point):
        return likelihoods.log_likelihood("norm", point, rows, values, noise_sd,
                                          observation_mask)  # fmt: skip

    x = jnp.asarray(x, prior.means.dtype)
    log_likelihood = jax.vmap(one)(x.reshape(-1, dim)).reshape(x.shape[:-1])
    return gmm.log_prob(prior, x) + log_likelihood - posterior.log_evidence


def mean(posterior: QuadraturePosterior) -> jax.Array:
    """Posterior mean :math:`\\sum_m w_m x_m`, shape ``(d,)``."""
    return jnp.exp(posterior.log_weights) @ posterior.points


def sample(key: jax.Array, posterior: QuadraturePosterior, num_samples: int) -> jax.Array:
    """Nodes drawn by their masses, shape ``(num_samples, d)`` (``num_samples`` static).

    By inverting the cumulative masses (multinomial resampling), which costs one sorted
    search per draw; a Gumbel-max draw would need a noise per draw *and* node.
    """
    index = resampling.multinomial(key, jnp.exp(posterior.log_weights), num_samples)
    return posterior.points[index]
