r"""Measuring a trained network against the exact posterior on held-out problems.

Held-out problems are fresh draws from the meta-prior with a key the trainer never uses
(training keys are ``fold_in(key(seed), step)``; evaluation uses ``key(eval_seed)``
split into batches). On each problem the truth :math:`x` is scored by the exact
posterior :math:`p` and by the network :math:`q`; the mean of

.. math::

    g = \log p(x \mid y) - \log q(x \mid y)

estimates the average forward KL, :math:`\mathbb{E}_y\,\mathrm{KL}(p \,\|\, q) \ge 0`
(:mod:`posteriorlab.core.transformer.exact`), and its Monte Carlo standard error is
:math:`\hat s / \sqrt{N}` with :math:`\hat s` the sample standard deviation of
:math:`g` over the :math:`N` independent problems. :func:`reverse_kl` estimates the
other direction, :math:`\mathrm{KL}(q \,\|\, p)`, for one problem by sampling
:math:`q`.

The exact posterior is the closed form for linear-Gaussian data and the polar quadrature
of :mod:`posteriorlab.core.transformer.quadrature` for distance data
(:func:`reference_log_density_of_truth`); which one is read off the network's
:attr:`~posteriorlab.core.transformer.model.ModelConfig.likelihood`.

Particle answers (importance sampling, SMC) have no density to score the truth with;
:func:`kernel_density_log_prob` gives them one, a weighted Gaussian kernel density
estimate

.. math::

    \hat q(x) = \sum_i W^i\, \mathcal{N}(x;\, x^i,\, h^2 \hat\Sigma), \qquad
    h = \Bigl(\frac{4}{(d + 2)\, \mathrm{ESS}}\Bigr)^{1/(d+4)},

with :math:`\hat\Sigma` the weighted covariance of the particles and Silverman's
bandwidth computed from the effective sample size. It over-smooths multimodal clouds
(a ring is blurred inwards and outwards by :math:`h\hat\Sigma^{1/2}`), which costs
the particle methods some nats that more particles buy back.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from posteriorlab.core import gmm
from posteriorlab.core.smc import tempering
from posteriorlab.core.transformer import exact, quadrature, simulate
from posteriorlab.core.transformer.model import DistributionTransformer, apply
from posteriorlab.core.transformer.training import exact_log_density_of_truth

__all__ = [
    "Evaluation",
    "evaluate",
    "kernel_density_log_prob",
    "norm_log_density_of_truth",
    "reference_log_density_of_truth",
    "reverse_kl",
]


class Evaluation(NamedTuple):
    """Held-out accuracy (nats; floats).

    Attributes
    ----------
    mean_log_density_gap : float
        Mean of :math:`\\log p(x\\mid y) - \\log q(x\\mid y)` over the problems.
    standard_error : float
        Its Monte Carlo standard error.
    mean_log_q : float
        Mean :math:`\\log q(x \\mid y)` (the network's score of the truth).
    mean_log_exact : float
        Mean :math:`\\log p(x \\mid y)` (the exact posterior's score of the truth).
    num_problems : int
    """

    mean_log_density_gap: float
    standard_error: float
    mean_log_q: float
    mean_log_exact: float
    num_problems: int


def norm_log_density_of_truth(problem: simulate.Problems) -> jax.Array:
    """:math:`\\log p(x \\mid y)` of the truth of *one* padded distance problem, by
    quadrature: of the 2-D posterior, or of the first coordinate's for a 1-D problem."""
    data = (problem.values, problem.noise_sd, problem.observation_mask)

    def score(prior, truth):
        posterior = quadrature.norm_posterior(prior, *data)
        return quadrature.log_density(posterior, prior, *data, truth)

    return jax.lax.cond(
        problem.is_1d,
        lambda: score(exact.first_coordinate(problem.prior), problem.truth[:1]),
        lambda: score(problem.prior, problem.truth),
    )


def reference_log_density_of_truth(problems: simulate.Problems, likelihood: str) -> jax.Array:
    """:math:`\\log p(x \\mid y)` of the truths under the exact posterior, ``(B,)``: the
    closed form for ``"linear_gaussian"``, the quadrature for ``"norm"`` (one problem
    after another, so that a 1-D problem runs only the 1-D rule)."""
    if likelihood == "linear_gaussian":
        return exact_log_density_of_truth(problems)
    return jax.lax.map(norm_log_density_of_truth, problems)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _score_batch(key, model, meta, batch_size, model_sizes, likelihood):
    problems = simulate.sample_problems(key, meta, batch_size, *model_sizes, likelihood)
    posterior = apply(
        model, problems.prior, problems.component_mask, problems.rows, problems.values,
        problems.noise_sd, problems.observation_mask,
    )
    log_q = jax.vmap(exact.log_density)(posterior, problems.truth, problems.is_1d)
    return log_q, reference_log_density_of_truth(problems, likelihood)


def evaluate(
    key: jax.Array,
    model: DistributionTransformer,
    meta: simulate.MetaPrior | None = None,
    num_problems: int = 4096,
    batch_size: int = 512,
) -> Evaluation:
    """Score the network on ``num_problems`` held-out problems of its likelihood
    (module docstring).

    Parameters
    ----------
    key : PRNG key
        Use one the trainer never used, e.g. ``jax.random.key(eval_seed)``.
    model : DistributionTransformer
    meta : MetaPrior, optional
        The default ranges if omitted.
    num_problems : int
        Rounded up to a multiple of ``batch_size``.
    batch_size : int
        Problems per compiled batch (at most ``num_problems``).

    Returns
    -------
    Evaluation
    """
    meta = simulate.MetaPrior() if meta is None else meta
    batch_size = max(1, min(batch_size, num_problems))
    num_batches = max(1, math.ceil(num_problems / batch_size))
    sizes = (model.config.max_components, model.config.max_observations)
    scores = [
        _score_batch(batch_key, model, meta, batch_size, sizes, model.config.likelihood)
        for batch_key in jax.random.split(key, num_batches)
    ]
    log_q = jnp.concatenate([s[0] for s in scores])
    log_exact = jnp.concatenate([s[1] for s in scores])
    gap = log_exact - log_q
    count = gap.shape[0]
    return Evaluation(
        mean_log_density_gap=float(jnp.mean(gap)),
        standard_error=float(jnp.std(gap, ddof=1) / math.sqrt(count)),
        mean_log_q=float(jnp.mean(log_q)),
        mean_log_exact=float(jnp.mean(log_exact)),
        num_problems=int(count),
    )


def reverse_kl(key: jax.Array, approximate: gmm.GaussianMixture, exact_posterior:
               gmm.GaussianMixture, num_samples: int = 10_000):
    r"""Monte Carlo :math:`\mathrm{KL}(q \,\|\, p) = \mathbb{E}_q[\log q - \log p]` for one
    problem, with its standard error; returns ``(estimate, standard_error)``.

    Both mixtures must have the same dimension (crop a padded 1-D problem with
    :func:`~posteriorlab.core.transformer.exact.first_coordinate` first).
    """
    draws = gmm.sample(key, approximate, num_samples)
    terms = gmm.log_prob(approximate, draws) - gmm.log_prob(exact_posterior, draws)
    return jnp.mean(terms), jnp.std(terms, ddof=1) / jnp.sqrt(num_samples)


def kernel_density_log_prob(particles, log_weights, points) -> jax.Array:
    """Log-density of the weighted Gaussian kernel density estimate of the particles
    (module docstring) at ``points (..., d)``.

    Parameters
    ----------
    particles : Array, shape (N, d)
    log_weights : Array, shape (N,)
        Normalised or not.
    points : Array, shape (..., d)
    """
    dim = particles.shape[-1]
    log_weights = log_weights - logsumexp(log_weights)
    ess = jnp.exp(-logsumexp(2.0 * log_weights))
    bandwidth = (4.0 / ((dim + 2.0) * ess)) ** (1.0 / (dim + 4.0))
    chol = bandwidth * tempering.covariance_factor(particles, log_weights)
    kernels = gmm.GaussianMixture(log_weights, particles,
                                  jnp.broadcast_to(chol, (particles.shape[0], dim, dim)))
    return gmm.log_prob(kernels, points)
