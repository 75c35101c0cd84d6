"""What a lab calls: checks with clear messages, padding, one compilation, filtering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.transformer import inference
from posteriorlab.core.transformer.inference import TransformerInputError

from .helpers import SMALL, observations, one_d_prior, perturbed, two_d_prior, untrained


@pytest.fixture(scope="module")
def model():
    return untrained()


@pytest.fixture(scope="module")
def noisy_model():
    return perturbed()


def five_component_prior():
    return gmm.from_covariances(
        jnp.full(5, 0.2), jnp.arange(10.0).reshape(5, 2), jnp.broadcast_to(jnp.eye(2), (5, 2, 2))
    )


def test_too_many_components(model):
    with pytest.raises(TransformerInputError, match=r"K = 5 .* at most 4.*--max-components 5"):
        inference.posterior(model, five_component_prior(), jnp.zeros((0, 2)), [], 0.5)


def test_wrong_dimension(model):
    prior = gmm.from_covariances([1.0], [[0.0, 0.0, 0.0]], [jnp.eye(3)])
    with pytest.raises(TransformerInputError, match="d = 3 dimensions.*d = 1 or d = 2"):
        inference.posterior(model, prior, jnp.zeros((0, 3)), [], 0.5)


def test_covariance_not_positive_definite(model):
    with pytest.raises(TransformerInputError, match="not positive definite"):
        inference.prior_from_covariances(model, [1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    broken = two_d_prior()._replace(chol_covs=two_d_prior().chol_covs.at[1, 0, 0].set(-1.0))
    with pytest.raises(TransformerInputError, match=r"chol_covs\[1\].*positive"):
        inference.posterior(model, broken, jnp.zeros((0, 2)), [], 0.5)


def test_bad_observations(model):
    prior = two_d_prior()
    rows, values = observations(2, SMALL.max_observations + 1)
    with pytest.raises(TransformerInputError, match="at most 8"):
        inference.posterior(model, prior, rows, values, 0.5)
    rows, values = observations(2, 3)
    with pytest.raises(TransformerInputError, match="noise_sd"):
        inference.posterior(model, prior, rows, values, 0.0)
    with pytest.raises(TransformerInputError, match="non-finite"):
        inference.posterior(model, prior, rows, values.at[0].set(jnp.nan), 0.5)
    with pytest.raises(TransformerInputError, match=r"rows \(n, 2\)"):
        inference.posterior(model, prior, rows, values[:2], 0.5)
    with pytest.raises(TransformerInputError, match=r"rows \(n, 1\)"):
        inference.posterior(model, one_d_prior(), rows, values, 0.5)


def test_prior_from_covariances_accepts_a_good_prior(model):
    prior = inference.prior_from_covariances(model, [0.4, 0.6], [[0.0], [1.0]], [[[1.0]], [[2.0]]])
    assert prior.means.shape == (2, 1)


def test_one_compilation_for_every_size(noisy_model):
    before = inference.padded_posterior._cache_size()
    for prior in (two_d_prior(), one_d_prior()):
        dim = prior.means.shape[1]
        for count in (0, 1, 5):
            inference.posterior(noisy_model, prior, *observations(dim, count), noise_sd=0.7)
        for noise_sd in (0.2, 1.9):
            inference.posterior(noisy_model, prior, *observations(dim, 2), noise_sd=noise_sd)
    assert inference.padded_posterior._cache_size() - before == 1


def test_masked_observation_equals_a_missing_one(noisy_model):
    prior = two_d_prior()
    rows, values = observations(2, 4)
    masked = inference.posterior(
        noisy_model, prior, rows, values, 0.5, observation_mask=jnp.array([1, 1, 0, 1], bool)
    )
    kept = jnp.array([0, 1, 3])
    missing = inference.posterior(noisy_model, prior, rows[kept], values[kept], 0.5)
    for a, b in zip(masked, missing, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_output_keeps_the_prior_shape(noisy_model):
    for prior in (two_d_prior(), one_d_prior()):
        num_components, dim = prior.means.shape
        result = inference.posterior(noisy_model, prior, *observations(dim, 3), 0.5)
        assert result.means.shape == (num_components, dim)
        assert result.chol_covs.shape == (num_components, dim, dim)
        np.testing.assert_allclose(jnp.sum(jnp.exp(result.log_weights)), 1.0, rtol=1e-12)


def test_sequential_is_the_network_applied_repeatedly(noisy_model):
    prior = two_d_prior()
    rows, values = observations(2, 6)
    steps = inference.sequential_posteriors(
        noisy_model, prior, rows.reshape(3, 2, 2), values.reshape(3, 2), 0.5
    )
    current = prior
    for t in range(3):
        current = inference.posterior(noisy_model, current, rows[2 * t : 2 * t + 2],
                                      values[2 * t : 2 * t + 2], 0.5)
        for a, b in zip(jax.tree.map(lambda leaf, t=t: leaf[t], steps), current, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_sequential_untrained_keeps_the_prior(model):
    prior = one_d_prior()
    rows, values = observations(1, 6)
    steps = inference.sequential_posteriors(
        model, prior, rows.reshape(3, 2, 1), values.reshape(3, 2), 0.5
    )
    assert steps.means.shape == (3, 2, 1)
    np.testing.assert_allclose(steps.means, jnp.broadcast_to(prior.means, (3, 2, 1)), atol=1e-12)
