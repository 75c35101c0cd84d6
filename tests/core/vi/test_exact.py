"""The exact targets: posterior and evidence against 2-D grid quadrature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.vi import exact


def regression():
    inputs = jnp.linspace(0.0, 2.0, 12)
    design = jnp.stack([jnp.ones_like(inputs), inputs], axis=1)
    prior = gmm.from_covariances([1.0], [[0.3, -0.2]], [[[1.0, 0.2], [0.2, 0.5]]])
    return exact.LinearRegression(design, 0.5 - inputs, jnp.asarray(0.4), prior)


def grid(center, half_width, size=701):
    xs = jnp.linspace(center[0] - half_width, center[0] + half_width, size)
    ys = jnp.linspace(center[1] - half_width, center[1] + half_width, size)
    points = jnp.stack(jnp.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return points, (xs[1] - xs[0]) * (ys[1] - ys[0])


def test_regression_evidence_and_posterior_match_quadrature():
    target = regression()
    posterior = target.posterior()
    points, cell = grid(np.asarray(gmm.mean(posterior)), 1.5)
    log_joint = jax.vmap(target)(points)
    log_evidence = jax.scipy.special.logsumexp(log_joint) + jnp.log(cell)
    assert float(target.log_evidence()) == pytest.approx(float(log_evidence), abs=1e-8)
    weights = jnp.exp(log_joint - log_evidence) * cell
    np.testing.assert_allclose(weights @ points, gmm.mean(posterior), atol=1e-8)
    centred = points - gmm.mean(posterior)
    np.testing.assert_allclose(
        (weights[:, None] * centred).T @ centred, gmm.covariance(posterior), atol=1e-8
    )


def test_mixture_target_is_normalised():
    mixture = gmm.from_covariances([0.6, 0.4], [[-1.0, 0.0], [1.5, 0.5]], [np.eye(2) * 0.3] * 2)
    target = exact.MixtureTarget(mixture)
    points, cell = grid((0.2, 0.2), 5.0)
    assert float(jnp.exp(jax.vmap(target)(points)).sum() * cell) == pytest.approx(1.0, abs=1e-8)
    assert float(target.log_evidence()) == 0.0


@pytest.mark.parametrize("observation", [5.0, 0.5, 20.0, -0.3, 100.0])
def test_cone_evidence_matches_scipy_quadrature(observation):
    from scipy import integrate, stats

    def density(u):  # r^2 = u ~ Exponential(mean 200), o ~ N(u, (0.1 + u/100)^2)
        return np.exp(-u / 200) / 200 * stats.norm.pdf(observation, u, 0.1 + u / 100)

    split = 3 * max(observation, 0.0) + 5
    near = integrate.quad(density, 0, split, points=[max(observation, 0.0)], limit=500)[0]
    reference = np.log(near + integrate.quad(density, split, np.inf)[0])
    cone = exact.NoisyCone.create(observation)
    assert float(cone.log_evidence()) == pytest.approx(reference, abs=1e-5)


def test_cone_evidence_is_the_papers_and_the_integral_of_its_density():
    cone = exact.NoisyCone.create(5.0, 10.0)
    assert float(cone.log_evidence()) == pytest.approx(-5.3232, abs=5e-5)
    from scipy import integrate

    # The 2-D density is rotation invariant: p(o) = 2 pi ∫ r p(x = r, y = 0, o) dr.
    def radial(r):
        return 2 * np.pi * r * float(jnp.exp(cone(jnp.array([r, 0.0]))))

    mass = integrate.quad(radial, 0.0, 4.0, points=[np.sqrt(5.0)], limit=500)[0]
    assert np.log(mass) == pytest.approx(float(cone.log_evidence()), abs=1e-6)
