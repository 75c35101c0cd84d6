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
