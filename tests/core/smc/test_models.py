"""State-space models: shapes, broadcasting, and samplers that agree with their densities.

Sampler checks: the mean and variance of NUM_DRAWS draws are compared with the moments
of the log-density (computed by quadrature, or in closed form) within Z_SCORE
standard errors. Z_SCORE = 4 gives a two-sided false-failure rate of about 6e-5 per
assertion under the normal approximation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.integrate import trapezoid

from posteriorlab.core.smc import models

Z_SCORE = 4.0
NUM_DRAWS = 20_000

ALL_MODELS = {
    "linear_gaussian_1d": models.linear_gaussian_1d(),
    "linear_gaussian_2d": models.linear_gaussian_2d(),
    "stochastic_volatility": models.StochasticVolatilitySSM(),
    "growth": models.GrowthModelSSM(),
}
UNIVARIATE = ["linear_gaussian_1d", "stochastic_volatility", "growth"]


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_simulate_shapes(key, name):
    model = ALL_MODELS[name]
    states, observations = model.simulate(key, 6)
    assert states.shape == (6, model.state_dim)
    assert observations.shape == (6, model.obs_dim)
    assert np.all(np.isfinite(states))
    assert np.all(np.isfinite(observations))


def test_simulate_a_single_step(key):
    model = models.linear_gaussian_1d()
    states, observations = model.simulate(key, 1)
    assert states.shape == (1, 1)
    assert observations.shape == (1, 1)


def test_simulate_rejects_zero_steps(key):
    with pytest.raises(ValueError, match="num_steps=0"):
        models.StochasticVolatilitySSM().simulate(key, 0)


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_densities_broadcast_to_a_matrix_of_pairs(key, name):
    model = ALL_MODELS[name]
    num = 5

    @jax.jit
    def evaluate(key):
        key_x, key_y = jax.random.split(key)
        x = model.sample_initial(key_x, num)
        y = model.sample_observation(key_y, 2, x)[0]
        pairs = model.log_prob_transition(3, x[:, None, :], x[None, :, :])
        # Row i, one previous state at a time: log f(x_j | x_i) for all j.
        rows = jax.vmap(lambda x_i: model.log_prob_transition(3, x_i, x))(x)
        shapes = (
            model.log_prob_initial(x).shape,
            model.log_prob_observation(3, x, y).shape,
            model.log_prob_observation(3, x[:, None, :], y).shape,
        )
        return x, pairs, rows, shapes

    x, pairs, rows, shapes = evaluate(key)
    assert x.shape == (num, model.state_dim)
    assert pairs.shape == (num, num)
    np.testing.assert_allclose(pairs, rows, rtol=1e-12)
    assert shapes == ((num,), (num,), (num, 1))


def quadrature_moments(log_density, samples):
    """Mass, mean, variance and 4th central moment of a 1-D density, on a grid that
    covers the samples with a wide margin (mass close to 1 confirms the margin)."""
    spread = samples.std()
    grid = np.linspace(samples.min() - 8 * spread, samples.max() + 8 * spread, 40_001)
    density = np.exp(np.asarray(log_density(jnp.asarray(grid))))
    mass = trapezoid(density, grid)
    mean = trapezoid(grid * density, grid)
    variance = trapezoid((grid - mean) ** 2 * density, grid)
    fourth = trapezoid((grid - mean) ** 4 * density, grid)
    return mass, mean, variance, fourth


def assert_samples_match_density(samples, log_density):
    samples = np.asarray(samples)
    mass, mean, variance, fourth = quadrature_moments(log_density, samples)
    assert mass == pytest.approx(1.0, abs=1e-6)
    num = samples.shape[0]
    assert abs(samples.mean() - mean) < Z_SCORE * np.sqrt(variance / num)
    assert abs(samples.var() - variance) < Z_SCORE * np.sqrt((fourth - variance**2) / num)


# Each sampler and density is compiled once per model; the model and the conditioning
# value are traced arguments.
TIME = 3


@jax.jit
def initial_draws(model, key):
    return model.sample_initial(key, NUM_DRAWS)[:, 0]


@jax.jit
def initial_density(model, grid):
    return model.log_prob_initial(grid[:, None])


@jax.jit
def transition_draws(model, key, x_prev):
    return model.sample_transition(key, TIME, jnp.full((NUM_DRAWS, 1), x_prev))[:, 0]


@jax.jit
def transition_density(model, x_prev, grid):
    return model.log_prob_transition(TIME, jnp.reshape(x_prev, (1, 1)), grid[:, None])


@jax.jit
def observation_draws(model, key, x):
    return model.sample_observation(key, TIME, jnp.full((NUM_DRAWS, 1), x))[:, 0]


@jax.jit
def observation_density(model, x, grid):
    x = jnp.reshape(x, (1, 1))
    return jax.vmap(lambda y: model.log_prob_observation(TIME, x, y[None])[0])(grid)


@pytest.mark.parametrize("name", UNIVARIATE)
def test_initial_sampler_matches_initial_density(key, name):
    model = ALL_MODELS[name]
    assert_samples_match_density(
        initial_draws(model, key), lambda grid: initial_density(model, grid)
    )


@pytest.mark.parametrize("name", UNIVARIATE)
def test_transition_sampler_matches_transition_density(key, name):
    model = ALL_MODELS[name]
    for i, x_prev in enumerate([-3.0, 0.4, 2.0]):
        assert_samples_match_density(
            transition_draws(model, jax.random.fold_in(key, i), x_prev),
            lambda grid, x_prev=x_prev: transition_density(model, x_prev, grid),
        )


@pytest.mark.parametrize("name", UNIVARIATE)
def test_observation_sampler_matches_observation_density(key, name):
    model = ALL_MODELS[name]
    for i, x in enumerate([-1.5, 0.5, 3.0]):
        assert_samples_match_density(
            observation_draws(model, jax.random.fold_in(key, i), x),
            lambda grid, x=x: observation_density(model, x, grid),
        )


def test_growth_model_transition_mean_depends_on_time():
    model = models.GrowthModelSSM()
    x_prev = jnp.array([[1.0]])
    expected_mean = 0.5 + 25.0 / 2.0 + 8.0 * np.cos(1.2 * 4)
    log_density = model.log_prob_transition(4, x_prev, jnp.array([[expected_mean]]))
    assert log_density[0] == pytest.approx(stats.norm.logpdf(0.0, scale=np.sqrt(10.0)))


def test_linear_gaussian_1d_defaults_and_stationary_start():
    model = models.linear_gaussian_1d()
    np.testing.assert_allclose(model.transition_matrix, [[0.9]])
    np.testing.assert_allclose(model.transition_cov, [[1.0]])
    np.testing.assert_allclose(model.observation_cov, [[0.04]])
    np.testing.assert_allclose(model.initial_cov, [[1.0 / (1.0 - 0.81)]])
    np.testing.assert_allclose(model.initial_mean, [0.0])


def test_linear_gaussian_2d_is_a_damped_rotation():
    model = models.linear_gaussian_2d(rho=0.95, omega=0.3)
    matrix = np.asarray(model.transition_matrix)
    np.testing.assert_allclose(matrix @ matrix.T, 0.95**2 * np.eye(2), atol=1e-12)
    np.testing.assert_allclose(np.angle(np.linalg.eigvals(matrix)), [0.3, -0.3], atol=1e-12)


def test_constructors_accept_traced_parameters():
    @jax.jit
    def build(rho, sigma):
        return models.linear_gaussian_1d(rho, sigma, sigma), models.linear_gaussian_2d(rho, sigma)

    one, two = build(0.5, 0.3)
    np.testing.assert_allclose(one.initial_cov, [[0.09 / 0.75]])
    np.testing.assert_allclose(two.transition_matrix[0, 0], 0.5 * np.cos(0.3))


def test_multivariate_densities_match_scipy():
    model = models.linear_gaussian_2d()
    x_prev = jnp.array([[1.0, -0.5], [0.2, 2.0]])
    x = jnp.array([[0.7, 0.1], [-0.3, 1.5]])
    y = jnp.array([0.4, -0.2])
    transition, observation, initial = jax.jit(
        lambda model: (
            model.log_prob_transition(1, x_prev, x),
            model.log_prob_observation(1, x, y),
            model.log_prob_initial(x),
        )
    )(model)
    F = np.asarray(model.transition_matrix)  # noqa: N806
    for i in range(2):
        assert transition[i] == pytest.approx(
            stats.multivariate_normal.logpdf(x[i], F @ x_prev[i], model.transition_cov)
        )
        assert observation[i] == pytest.approx(
            stats.multivariate_normal.logpdf(y, x[i], model.observation_cov)
        )
        assert initial[i] == pytest.approx(
            stats.multivariate_normal.logpdf(x[i], model.initial_mean, model.initial_cov)
        )


def test_multivariate_transition_sampler_moments(key):
    model = models.linear_gaussian_2d()
    x_prev = jnp.array([2.0, -1.0])
    samples = np.asarray(model.sample_transition(key, 1, jnp.tile(x_prev, (NUM_DRAWS, 1))))
    mean = np.asarray(model.transition_matrix) @ np.asarray(x_prev)
    cov = np.asarray(model.transition_cov)
    mean_error = np.sqrt(np.diag(cov) / NUM_DRAWS)
    assert np.all(np.abs(samples.mean(axis=0) - mean) < Z_SCORE * mean_error)
    # Standard error of a sample covariance entry for Gaussian data.
    cov_error = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / NUM_DRAWS)
    assert np.all(np.abs(np.cov(samples.T) - cov) < Z_SCORE * cov_error)


@jax.jit
def proposal_terms(model, x_prev, x, y):
    """The guided proposals and the model part (f g, and mu g) of their weights."""
    return (
        model.optimal_proposal(1, x_prev, y),
        model.log_prob_transition(1, x_prev, x) + model.log_prob_observation(1, x, y),
        model.optimal_proposal_initial(y),
        model.log_prob_initial(x) + model.log_prob_observation(0, x, y),
    )


@pytest.mark.parametrize("name", ["linear_gaussian_1d", "linear_gaussian_2d"])
def test_optimal_proposal_weight_is_the_predictive_likelihood(key, name):
    # f(x | x_prev) g(y | x) / q(x | x_prev, y) = p(y | x_prev) for every x, and
    # mu(x) g(y | x) / q_0(x | y) = p(y): exact checks of the Gaussian conditioning.
    model = ALL_MODELS[name]
    d, num = model.state_dim, 4
    key_prev, key_x, key_y = jax.random.split(key, 3)
    x_prev = np.asarray(jax.random.normal(key_prev, (num, d)))
    x = np.asarray(jax.random.normal(key_x, (num, d)))
    y = np.asarray(jax.random.normal(key_y, (model.obs_dim,)))
    terms = jax.tree.map(np.asarray, proposal_terms(model, x_prev, x, y))
    (mean, cov), model_terms, (mean0, cov0), model_terms0 = terms
    assert mean.shape == (num, d)
    assert cov.shape == (d, d)
    F, Q, H, R, m0, P0 = (np.asarray(field) for field in model)  # noqa: N806
    log_weight = model_terms - [
        stats.multivariate_normal.logpdf(x[i], mean[i], cov) for i in range(num)
    ]
    predictive = [
        stats.multivariate_normal.logpdf(y, H @ F @ x_prev[i], H @ Q @ H.T + R) for i in range(num)
    ]
    np.testing.assert_allclose(log_weight, predictive, rtol=1e-10)

    log_weight0 = model_terms0 - stats.multivariate_normal.logpdf(x, mean0, cov0)
    evidence0 = stats.multivariate_normal.logpdf(y, H @ m0, H @ P0 @ H.T + R)
    np.testing.assert_allclose(log_weight0, np.full(num, evidence0), rtol=1e-10)


def test_models_are_pytrees_with_parameters_as_leaves():
    model = models.StochasticVolatilitySSM(rho=0.5)
    leaves, treedef = jax.tree.flatten(model)
    assert leaves == [-1.02, 0.5, 0.178]
    assert jax.tree.unflatten(treedef, leaves) == model
    assert len(jax.tree.leaves(models.linear_gaussian_2d())) == 6
