"""The distance likelihood: its simulation, and the polar quadrature that is its exact
posterior, against scipy's adaptive quadrature (an independent integrator) and the
closed-form radial law of an isotropic Gaussian (the Rice distribution)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from posteriorlab.core import gmm
from posteriorlab.core.transformer import evaluation, likelihoods, quadrature, simulate

from .helpers import one_d_prior, two_d_prior

norm_posterior = jax.jit(quadrature.norm_posterior)
sample_problems = jax.jit(simulate.sample_problems, static_argnums=(2, 3, 4, 5))


def numpy_density(prior):
    """The prior's density as a plain numpy function of a point (for scipy)."""
    weights = np.exp(np.asarray(prior.log_weights))
    means = np.asarray(prior.means)
    precisions = np.linalg.inv(np.asarray(gmm.covariances(prior)))
    scales = weights / np.sqrt(np.linalg.det(2 * math.pi * np.asarray(gmm.covariances(prior))))

    def density(point):
        centred = np.asarray(point, float) - means
        quadratic = np.einsum("ki,kij,kj->k", centred, precisions, centred)
        return float(scales @ np.exp(-0.5 * quadratic))

    return density


def radius_likelihood(values, noise_sd):
    return lambda r: float(np.prod(stats.norm.pdf(values, r, noise_sd)))


def data(values, noise_sd, padding=2):
    """Readings plus ``padding`` masked slots holding nonsense."""
    count = len(values)
    return (jnp.array([*values, 50.0] + [-9.0] * (padding - 1)),
            jnp.full((count + padding,), noise_sd),
            jnp.arange(count + padding) < count)  # fmt: skip


def rice_mixture_answer(weights, means, scales, values, noise_sd):
    """Evidence and posterior mean for a mixture of isotropic 2-D Gaussians, by 1-D
    adaptive quadrature over r: component k has radius law Rice(|mu_k| / s_k, scale s_k),
    and given r its direction is von Mises about mu_k with concentration
    kappa = r |mu_k| / s_k^2, so E[x | r, k] = r I1(kappa) / I0(kappa) mu_k / |mu_k|."""
    likelihood = radius_likelihood(values, noise_sd)
    evidence, first_moment = 0.0, np.zeros(2)
    centre = float(np.mean(values))
    edges = [0.0, max(centre - 1.0, 0.0), centre + 1.0, 30.0]  # the likelihood's bump inside
    for weight, mean, scale in zip(weights, means, scales, strict=True):
        distance = np.linalg.norm(mean)
        law = stats.rice(b=distance / scale, scale=scale)

        def integral(f, law=law):
            return sum(integrate.quad(lambda r: law.pdf(r) * likelihood(r) * f(r), a, b,
                                      epsabs=0.0, epsrel=1e-12, limit=200)[0]
                       for a, b in itertools.pairwise(edges))  # fmt: skip

        evidence += weight * integral(lambda r: 1.0)
        resultant = integral(lambda r, d=distance, s=scale: r * special.ive(1, r * d / s**2)
                             / special.ive(0, r * d / s**2))  # fmt: skip
        first_moment += weight * resultant * np.asarray(mean) / distance
    return evidence, first_moment / evidence


@pytest.mark.parametrize(
    ("values", "noise_sd"),
    [([2.1, 2.4, 1.9], 0.3), ([0.2], 1.5), ([6.5] * 12, 0.2)],
    ids=["ring", "vague", "sharp-and-far"],
)
def test_isotropic_mixture_matches_the_rice_law(values, noise_sd):
    weights, scales = [0.5, 0.3, 0.2], [0.8, 0.5, 1.2]
    means = [[-2.0, 0.3], [2.0, 1.0], [0.4, -2.5]]
    prior = gmm.from_covariances(weights, means, [s**2 * np.eye(2) for s in scales])
    posterior = norm_posterior(prior, *data(values, noise_sd))
    evidence, mean = rice_mixture_answer(weights, means, scales, values, noise_sd)
    assert float(posterior.log_evidence) == pytest.approx(math.log(evidence), abs=1e-7)
    np.testing.assert_allclose(quadrature.mean(posterior), mean, atol=1e-7)
    assert float(jax.scipy.special.logsumexp(posterior.log_weights)) == pytest.approx(0.0)


def test_correlated_mixture_matches_scipy():
    prior, values, noise_sd = two_d_prior(), [2.1, 2.4, 1.9], 0.3
    posterior = norm_posterior(prior, *data(values, noise_sd))
    density, likelihood = numpy_density(prior), radius_likelihood(values, noise_sd)

    def integrand(angle, r):
        return density([r * math.cos(angle), r * math.sin(angle)]) * likelihood(r) * r

    evidence, _ = integrate.dblquad(integrand, 1.0, 3.5, 0.0, 2 * math.pi, epsabs=0.0,
                                    epsrel=1e-9)  # fmt: skip
    assert float(posterior.log_evidence) == pytest.approx(math.log(evidence), abs=1e-7)


def test_one_d_evidence_matches_scipy():
    prior = one_d_prior()
    values, noise_sd = [1.8, 2.2], 0.4
    posterior = norm_posterior(prior, *data(values, noise_sd))
    density, likelihood = numpy_density(prior), radius_likelihood(values, noise_sd)
    evidence, _ = integrate.quad(lambda x: density([x]) * likelihood(abs(x)), -20.0, 20.0,
                                 points=[-2.0, 0.0, 2.0], epsabs=0.0, epsrel=1e-11, limit=200)
    assert float(posterior.log_evidence) == pytest.approx(math.log(evidence), abs=1e-8)
    assert posterior.points.shape == (quadrature.NUM_RADII * 2, 1)


def test_log_density_integrates_to_one_and_draws_follow_the_masses():
    prior = two_d_prior()
    readings = data([2.1, 2.4, 1.9], 0.3)
    posterior = norm_posterior(prior, *readings)
    axis = np.linspace(-5.0, 5.0, 401)
    grid = np.stack(np.meshgrid(axis, axis), -1)
    density = np.exp(np.asarray(quadrature.log_density(posterior, prior, *readings, grid)))
    assert density.sum() * (axis[1] - axis[0]) ** 2 == pytest.approx(1.0, abs=1e-6)
    draws = np.asarray(quadrature.sample(jax.random.key(0), posterior, 20_000))
    # 20,000 independent draws: their mean is within 4.5 standard errors (two-sided
    # false-failure rate about 7e-6 per coordinate).
    error = draws.std(axis=0, ddof=1) / math.sqrt(draws.shape[0])
    assert np.all(np.abs(draws.mean(axis=0) - quadrature.mean(posterior)) < 4.5 * error)


def test_distance_problems_observe_the_distance():
    problems = sample_problems(jax.random.key(5), simulate.MetaPrior(), 256, 4, 6,
                                        "norm")  # fmt: skip
    rows = np.asarray(problems.rows)
    is_1d = np.asarray(problems.is_1d)
    np.testing.assert_array_equal(rows[is_1d], np.broadcast_to([1.0, 0.0], rows[is_1d].shape))
    np.testing.assert_array_equal(rows[~is_1d], 1.0)
    distance = np.where(is_1d, np.abs(problems.truth[:, 0]),
                        np.linalg.norm(problems.truth, axis=-1))  # fmt: skip
    residuals = (np.asarray(problems.values) - distance[:, None]) / np.asarray(problems.noise_sd)
    # Standardised residuals are N(0, 1): 1536 of them, mean within 4.5 / sqrt(1536) and
    # variance within 4.5 * sqrt(2 / 1536) of one (normal approximation, about 7e-6 each).
    assert abs(residuals.mean()) < 4.5 / math.sqrt(residuals.size)
    assert abs(residuals.var() - 1.0) < 4.5 * math.sqrt(2.0 / residuals.size)


def test_reference_of_one_d_problems_is_the_marginal_quadrature():
    problems = sample_problems(jax.random.key(8), simulate.MetaPrior(), 6, 4, 5, "norm")
    scores = evaluation.reference_log_density_of_truth(problems, "norm")
    for b in range(6):
        problem = jax.tree.map(lambda a, b=b: a[b], problems)
        dim = 1 if problem.is_1d else 2
        prior = gmm.GaussianMixture(problem.prior.log_weights, problem.prior.means[:, :dim],
                                    problem.prior.chol_covs[:, :dim, :dim])  # fmt: skip
        readings = (problem.values, problem.noise_sd, problem.observation_mask)
        posterior = norm_posterior(prior, *readings)
        expected = quadrature.log_density(posterior, prior, *readings, problem.truth[:dim])
        assert float(scores[b]) == pytest.approx(float(expected), abs=1e-10)


def test_distance_is_differentiable_at_the_origin():
    rows = likelihoods.distance_rows(2, 2)
    gradient = jax.grad(lambda x: likelihoods.log_likelihood(
        "norm", x, rows, jnp.array([0.5, 0.7]), jnp.array([0.3, 0.3]), jnp.ones(2, bool)
    ))(jnp.zeros(2))  # fmt: skip
    np.testing.assert_array_equal(gradient, 0.0)


def test_kernel_density_is_silvermans_estimate():
    particles = np.asarray(jax.random.normal(jax.random.key(4), (500, 2))) * [1.0, 0.5]
    log_weights = np.asarray(jax.random.normal(jax.random.key(6), (500,)))
    weights = np.exp(log_weights) / np.exp(log_weights).sum()
    centre = weights @ particles
    covariance = (particles - centre).T @ ((particles - centre) * weights[:, None])
    bandwidth = (4.0 / (4.0 * (1.0 / np.sum(weights**2)))) ** (1.0 / 6.0)
    points = np.array([[0.0, 0.0], [1.5, -0.3], [-2.0, 1.0]])
    expected = [np.log(sum(w * stats.multivariate_normal(x, bandwidth**2 * covariance).pdf(p)
                           for w, x in zip(weights, particles, strict=True))) for p in points]
    estimate = evaluation.kernel_density_log_prob(jnp.asarray(particles),
                                                  jnp.asarray(log_weights), points)
    np.testing.assert_allclose(estimate, expected, rtol=1e-7)
