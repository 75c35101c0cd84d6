r"""The answers the network is measured against.

Linear-Gaussian data: exact
---------------------------
Independent scalar observations :math:`y_j = a_j^\top x + \sigma_j\varepsilon_j` are one
vector observation :math:`y = Ax + e` with the rows :math:`a_j` stacked into :math:`A`
and :math:`R = \operatorname{diag}(\sigma_j^2)`, so the exact posterior is one call of
:func:`posteriorlab.core.gmm.condition_on_linear_gaussian`. A padded (masked)
observation is made harmless by setting its row and value to zero: then
:math:`p(y_j = 0 \mid x) = \mathcal{N}(0; 0, \sigma_j^2)` is the same for every
:math:`x`, and a constant factor of the likelihood changes nothing in the posterior.

Posteriors are compared by the log-density they give the true parameter. On problems
drawn from the meta-prior,

.. math::

    \mathbb{E}\bigl[\log p(x \mid y) - \log q(x \mid y)\bigr]
    = \mathbb{E}_{y}\, \mathrm{KL}\bigl(p(\cdot \mid y) \,\|\, q(\cdot \mid y)\bigr) \ge 0,

because :math:`x \mid y` *is* distributed as the exact posterior: the gap in nats
between the exact and the learned posterior's score of the truth is an average forward
KL divergence, estimated without sampling either posterior (:func:`log_density_gap`).

Sequential data
---------------
With batches of data arriving one after the other, the posterior after batch
:math:`t` is the prior for batch :math:`t + 1`. For a mixture prior and
linear-Gaussian data the exact filter keeps :math:`K` components at every step, so a
network that maps :math:`K` components to :math:`K` can in principle be exact too
(:func:`sequential_posteriors`).

Any likelihood: importance sampling
-----------------------------------
For a likelihood without a closed form (here :math:`y = \lVert x\rVert + \sigma
\varepsilon`, or any log-likelihood function) the reference is self-normalised
importance sampling from the prior: draw :math:`x_i \sim p`, weight
:math:`\log w_i = \log p(y \mid x_i)`, and read expectations off the weighted particles
(:func:`importance_sample`). Its effective sample size
:math:`(\sum w_i)^2 / \sum w_i^2` says how far to trust it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from posteriorlab.core import gmm

__all__ = [
    "exact_posterior",
    "sequential_posteriors",
    "first_coordinate",
    "log_density",
    "log_density_gap",
    "WeightedParticles",
    "importance_sample",
]


def exact_posterior(prior: gmm.GaussianMixture, rows, values, noise_sd, observation_mask):
    r"""The exact posterior of one problem given masked scalar observations.

    Parameters
    ----------
    prior : GaussianMixture
        ``K`` components in ``d`` dimensions.
    rows : Array, shape (n, d)
    values : Array, shape (n,)
    noise_sd : Array, shape (n,)
    observation_mask : bool Array, shape (n,)
        Observations with ``False`` are ignored (see the module docstring).

    Returns
    -------
    GaussianMixture
        Same ``K`` and ``d`` as the prior.
    """
    keep = observation_mask.astype(rows.dtype)
    return gmm.condition_on_linear_gaussian(
        prior, rows * keep[:, None], jnp.diag(noise_sd**2), values * keep
    )


def sequential_posteriors(prior: gmm.GaussianMixture, rows, values, noise_sd, observation_mask):
    """Exact posteriors after each of ``T`` batches, each posterior the next prior.

    Parameters
    ----------
    prior : GaussianMixture
    rows : Array, shape (T, n, d)
    values, noise_sd : Array, shape (T, n)
    observation_mask : bool Array, shape (T, n)

    Returns
    -------
    GaussianMixture
        Stacked over batches: ``log_weights (T, K)``, ``means (T, K, d)``,
        ``chol_covs (T, K, d, d)``.
    """

    def step(current, batch):
        updated = exact_posterior(current, *batch)
        return updated, updated

    _, posteriors = jax.lax.scan(step, prior, (rows, values, noise_sd, observation_mask))
    return posteriors


def first_coordinate(mixture: gmm.GaussianMixture) -> gmm.GaussianMixture:
    r"""The marginal of :math:`x_1`: means ``[:, :1]``, factors ``[:, :1, :1]``.

    Exact for a lower-triangular factor, since :math:`(LL^\top)_{11} = L_{11}^2`.
    """
    return gmm.GaussianMixture(
        mixture.log_weights, mixture.means[..., :1], mixture.chol_covs[..., :1, :1]
    )


def log_density(mixture: gmm.GaussianMixture, point, is_1d) -> jax.Array:
    """Log-density of a padded 2-D mixture at ``point (2,)``; of the first coordinate's
    marginal when ``is_1d`` (a 1-D problem)."""
    full = gmm.log_prob(mixture, point)
    marginal = gmm.log_prob(first_coordinate(mixture), point[:1])
    return jnp.where(is_1d, marginal, full)


def log_density_gap(exact: gmm.GaussianMixture, approximate: gmm.GaussianMixture, truth,
                    is_1d) -> jax.Array:
    r""":math:`\log p(x \mid y) - \log q(x \mid y)` at the true parameter, per problem.

    Arguments are batched (leading axis ``B``); returns shape ``(B,)``. Its mean over
    problems from the meta-prior estimates the average forward KL (module docstring).
    """
    return jax.vmap(log_density)(exact, truth, is_1d) - jax.vmap(log_density)(
        approximate, truth, is_1d
    )


class WeightedParticles(NamedTuple):
    """Self-normalised importance sampling output.

    Attributes
    ----------
    particles : Array, shape (N, d)
    log_weights : Array, shape (N,)
        Normalised: ``logsumexp(log_weights) == 0``.
    log_evidence : Array, shape ()
        :math:`\\log \\frac1N \\sum_i p(y \\mid x_i)`, an estimate of :math:`\\log p(y)`.
    effective_sample_size : Array, shape ()
    """

    particles: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array
    effective_sample_size: jax.Array


def importance_sample(
    key: jax.Array,
    prior: gmm.GaussianMixture,
    log_likelihood: Callable[[jax.Array], jax.Array],
    num_particles: int,
) -> WeightedParticles:
    r"""Weight ``num_particles`` prior draws by the likelihood.

    Parameters
    ----------
    key : PRNG key
    prior : GaussianMixture
    log_likelihood : callable
        ``x (d,) -> log p(y | x)``; vmapped over the particles.
    num_particles : int
        Static.

    Returns
    -------
    WeightedParticles
    """
    particles = gmm.sample(key, prior, num_particles)
    unnormalised = jax.vmap(log_likelihood)(particles)
    total = logsumexp(unnormalised)
    log_weights = unnormalised - total
    return WeightedParticles(
        particles=particles,
        log_weights=log_weights,
        log_evidence=total - jnp.log(num_particles),
        effective_sample_size=jnp.exp(-logsumexp(2.0 * log_weights)),
    )
