"""The oracles the network is measured against."""

import jax
import jax.numpy as jnp
import numpy as np

from posteriorlab.core import gmm
from posteriorlab.core.transformer import exact, inference, simulate

from .helpers import observations, one_d_prior, two_d_prior


def assert_same_mixture(a, b, atol=1e-10):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=atol)


def test_stacked_masked_oracle_matches_one_observation_at_a_time():
    prior = two_d_prior()
    rows, values = observations(2, 6)
    noise_sd = jnp.array([0.3, 0.5, 1.0, 0.2, 2.0, 0.7])
    mask = jnp.array([True, False, True, True, False, True])
    stacked = exact.exact_posterior(prior, rows, values, noise_sd, mask)
    one_by_one = prior
    for j in np.flatnonzero(mask):
        one_by_one = gmm.condition_on_linear_gaussian(
            one_by_one, rows[j], noise_sd[j] ** 2, values[j]
        )
    assert_same_mixture(stacked, one_by_one)


def test_no_observations_leave_the_prior():
    prior = two_d_prior()
    rows, values = observations(2, 3)
    result = exact.exact_posterior(prior, rows, values, jnp.ones(3), jnp.zeros(3, bool))
    assert_same_mixture(result, prior, atol=1e-12)


def test_padded_1d_problem_has_the_1d_posterior():
    prior = one_d_prior()
    rows, values = observations(1, 4)
    padded_prior, _ = inference.pad_prior(prior, 2)
    padded_rows = jnp.pad(rows, ((0, 0), (0, 1)))
    noise_sd, mask = jnp.full(4, 0.4), jnp.ones(4, bool)
    padded = exact.exact_posterior(padded_prior, padded_rows, values, noise_sd, mask)
    direct = exact.exact_posterior(prior, rows, values, noise_sd, mask)
    assert_same_mixture(exact.first_coordinate(padded), direct)
    # The unseen coordinate stays an independent standard normal.
    np.testing.assert_allclose(padded.means[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(padded.chol_covs[:, 1], [[0.0, 1.0]] * 2, atol=1e-12)


def test_identity_likelihood_as_scalar_rows():
    prior = two_d_prior()
    points = jnp.array([[0.5, 1.0], [1.5, 0.2], [-0.3, 0.9]])
    rows, values = inference.expand_vector_observations(jnp.eye(2), points)
    assert rows.shape == (6, 2)
    scalar = exact.exact_posterior(prior, rows, values, jnp.full(6, 0.5), jnp.ones(6, bool))
    vector = prior
    for point in points:
        vector = gmm.condition_on_linear_gaussian(vector, jnp.eye(2), 0.25, point)
    assert_same_mixture(scalar, vector)


def test_sequential_oracle_equals_conditioning_on_all_data():
    prior = two_d_prior()
    rows, values = observations(2, 6)
    noise_sd, mask = jnp.full(6, 0.6), jnp.ones(6, bool)
    steps = exact.sequential_posteriors(
        prior, rows.reshape(3, 2, 2), values.reshape(3, 2), noise_sd.reshape(3, 2),
        mask.reshape(3, 2),
    )
    final = jax.tree.map(lambda a: a[-1], steps)
    assert_same_mixture(final, exact.exact_posterior(prior, rows, values, noise_sd, mask))


def test_importance_sampling_matches_the_exact_posterior_mean():
    prior = two_d_prior()
    rows, values = observations(2, 2)
    noise_sd = 0.8

    def log_likelihood(x):
        residual = values - rows @ x
        return jnp.sum(-0.5 * (residual / noise_sd) ** 2)

    weighted = exact.importance_sample(jax.random.key(5), prior, log_likelihood, 40_000)
    weights = jnp.exp(weighted.log_weights)
    estimate = weights @ weighted.particles
    truth = gmm.mean(exact.exact_posterior(prior, rows, values, jnp.full(2, noise_sd),
                                           jnp.ones(2, bool)))
    # Self-normalised IS: standard error ~ sqrt(sum_i w_i^2 (x_i - mean)^2).
    standard_error = jnp.sqrt(weights**2 @ (weighted.particles - estimate) ** 2)
    z = 4.0  # two coordinates, false-failure rate about 1e-4
    assert float(weighted.effective_sample_size) > 1000
    np.testing.assert_array_less(jnp.abs(estimate - truth), z * standard_error)


def test_simulated_problems_are_valid():
    problems = simulate.sample_problems(jax.random.key(0), simulate.MetaPrior(), 256, 4, 8)
    assert problems.prior.means.shape == (256, 4, 2)
    weights = jnp.exp(problems.prior.log_weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(weights > 0, problems.component_mask)
    diagonal = jnp.diagonal(problems.prior.chol_covs, axis1=-2, axis2=-1)
    assert bool(jnp.all(diagonal > 0))
    one_d = problems.is_1d
    assert 0 < int(one_d.sum()) < 256
    np.testing.assert_array_equal(problems.rows[one_d][..., 1], 0.0)
    np.testing.assert_array_equal(problems.prior.means[one_d][..., 1], 0.0)
    assert bool(jnp.all(problems.noise_sd >= 0.2 - 1e-12))
    assert bool(jnp.all(problems.noise_sd <= 2.0 + 1e-12))
    assert bool(jnp.all(jnp.abs(problems.prior.means) <= 4.0))
