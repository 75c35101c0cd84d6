"""The network's structure: valid output, symmetries, zero-init identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.transformer import inference
from posteriorlab.core.transformer.model import apply

from .helpers import SMALL, observations, one_d_prior, perturbed, two_d_prior, untrained


def padded_problem(prior, rows, values, noise_sd=0.5, config=SMALL):
    padded_prior, component_mask = inference.pad_prior(prior, config.max_components)
    data = inference.pad_observations(rows, values, noise_sd, None, config.max_observations)
    return padded_prior, component_mask, *data


def run_one(model, *problem):
    batched = jax.tree.map(lambda a: a[None], problem)
    return jax.tree.map(lambda a: a[0], apply(model, *batched))


@pytest.fixture(scope="module")
def noisy_model():
    return perturbed()


def test_output_is_a_valid_mixture(noisy_model):
    problem = padded_problem(two_d_prior(), *observations(2, 5))
    result = run_one(noisy_model, *problem)
    assert result.log_weights.shape == (4,)
    assert result.means.shape == (4, 2)
    assert result.chol_covs.shape == (4, 2, 2)
    weights = np.exp(np.asarray(result.log_weights))
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
    assert weights[3] == 0.0  # the padded component
    covs = np.asarray(gmm.covariances(result))[:3]
    assert np.all(np.linalg.eigvalsh(covs) > 0)
    np.testing.assert_array_equal(np.triu(np.asarray(result.chol_covs), 1), 0.0)
    # The perturbed network does change the prior (so the symmetry tests below bite).
    assert not np.allclose(result.means[:3], two_d_prior().means, atol=1e-3)


def test_permuting_components_permutes_the_output(noisy_model):
    prior = two_d_prior()
    problem = padded_problem(prior, *observations(2, 5))
    order = jnp.array([2, 0, 3, 1])  # the padded slot moves too
    permuted_prior = jax.tree.map(lambda a: a[order], problem[0])
    permuted = (permuted_prior, problem[1][order], *problem[2:])
    direct = run_one(noisy_model, *problem)
    swapped = run_one(noisy_model, *permuted)
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(swapped), strict=True):
        np.testing.assert_allclose(np.asarray(a)[order], b, rtol=1e-10, atol=1e-12)


def test_observation_order_does_not_matter(noisy_model):
    problem = padded_problem(two_d_prior(), *observations(2, 5))
    order = jnp.array([4, 7, 0, 2, 6, 1, 3, 5])  # real and padded slots interleaved
    shuffled = (*problem[:2], *(a[order] for a in problem[2:]))
    direct = run_one(noisy_model, *problem)
    reordered = run_one(noisy_model, *shuffled)
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(reordered), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_padded_observations_are_ignored(noisy_model):
    rows, values = observations(2, 5)
    problem = padded_problem(two_d_prior(), rows, values)
    garbage_rows = problem[2].at[5:].set(7.0)
    garbage_values = problem[3].at[5:].set(-3.0)
    garbage = (*problem[:2], garbage_rows, garbage_values, *problem[4:])
    for a, b in zip(jax.tree.leaves(run_one(noisy_model, *problem)),
                    jax.tree.leaves(run_one(noisy_model, *garbage)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("count", [0, 3])
@pytest.mark.parametrize("prior", [two_d_prior(), one_d_prior()], ids=["2d", "1d"])
def test_untrained_network_returns_the_prior(prior, count):
    model = untrained()
    dim = prior.means.shape[1]
    result = inference.posterior(model, prior, *observations(dim, count), noise_sd=0.5)
    np.testing.assert_allclose(result.log_weights, prior.log_weights, atol=1e-12)
    np.testing.assert_array_equal(result.means, prior.means)
    np.testing.assert_allclose(result.chol_covs, prior.chol_covs, rtol=1e-15)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        untrained(SMALL._replace(num_heads=3))
