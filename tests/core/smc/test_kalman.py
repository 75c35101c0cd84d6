"""The Kalman filter and RTS smoother against exact values.

Three independent oracles: published numbers for the 5-step univariate example, the
brute-force joint Gaussian of all states and observations (conditioned with dense
linear algebra), and the Fisher identity linking ``jax.grad`` of the log-likelihood to
smoothed moments.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from posteriorlab.core.smc import kalman, models

FIVE_STEP_Y = jnp.array([0.5, -0.3, 1.2, 0.8, -0.1])[:, None]


def _five_step():
    model = models.linear_gaussian_1d(rho=0.9, sigma_x=1.0, sigma_y=0.2)
    filtered = kalman.kalman_filter(model, FIVE_STEP_Y)
    return model, filtered, kalman.rts_smoother(model, filtered)


def test_five_step_example_matches_published_values():
    _, filtered, smoothed = _five_step()
    means = smoothed.smoothed_means[:, 0]
    lag_one = smoothed.cross_covs[:, 0, 0] + means[:-1] * means[1:]

    np.testing.assert_allclose(filtered.log_likelihood, -7.169735, atol=1e-6)
    np.testing.assert_allclose(
        means, [0.472957, -0.225679, 1.137656, 0.781862, -0.069089], atol=1e-6
    )
    np.testing.assert_allclose(jnp.sum(means), 2.097707, atol=1e-6)
    np.testing.assert_allclose(jnp.sum(lag_one), 0.477091, atol=1e-6)


def test_filter_starts_from_prior_and_smoother_ends_at_filter():
    model, filtered, smoothed = _five_step()
    np.testing.assert_array_equal(filtered.predicted_means[0], model.initial_mean)
    np.testing.assert_array_equal(filtered.predicted_covs[0], model.initial_cov)
    np.testing.assert_allclose(filtered.log_likelihood, jnp.sum(filtered.log_likelihood_increments))
    np.testing.assert_array_equal(smoothed.smoothed_means[-1], filtered.filtered_means[-1])
    np.testing.assert_array_equal(smoothed.smoothed_covs[-1], filtered.filtered_covs[-1])


def _random_model(rng: np.random.Generator, state_dim: int, obs_dim: int):
    def spd(dim):
        a = rng.normal(size=(dim, dim))
        return a @ a.T / dim + 0.3 * np.eye(dim)

    return models.LinearGaussianSSM(
        transition_matrix=jnp.asarray(0.6 * rng.normal(size=(state_dim, state_dim))),
        transition_cov=jnp.asarray(spd(state_dim)),
        observation_matrix=jnp.asarray(rng.normal(size=(obs_dim, state_dim))),
        observation_cov=jnp.asarray(spd(obs_dim)),
        initial_mean=jnp.asarray(rng.normal(size=state_dim)),
        initial_cov=jnp.asarray(spd(state_dim)),
    )


def _joint_gaussian(model, num_steps: int):
    """Mean and covariance of the stacked states x_{0:T-1} and of y = blockdiag(H) x + noise."""
    f, q, h, r, m0, p0 = (np.asarray(a) for a in model)
    d = m0.shape[0]
    means, marginal_covs = [m0], [p0]
    for _ in range(1, num_steps):
        means.append(f @ means[-1])
        marginal_covs.append(f @ marginal_covs[-1] @ f.T + q)
    state_cov = np.zeros((num_steps * d, num_steps * d))
    for s in range(num_steps):
        for t in range(s, num_steps):
            block = np.linalg.matrix_power(f, t - s) @ marginal_covs[s]  # Cov(x_t, x_s)
            state_cov[t * d : (t + 1) * d, s * d : (s + 1) * d] = block
            state_cov[s * d : (s + 1) * d, t * d : (t + 1) * d] = block.T
    big_h = np.kron(np.eye(num_steps), h)
    state_mean = np.concatenate(means)
    obs_cov = big_h @ state_cov @ big_h.T + np.kron(np.eye(num_steps), r)
    return state_mean, state_cov, big_h, obs_cov


@pytest.mark.parametrize(("state_dim", "obs_dim"), [(2, 2), (3, 2), (2, 3)])
def test_matches_brute_force_joint_gaussian(state_dim, obs_dim):
    rng = np.random.default_rng(state_dim * 10 + obs_dim)
    num_steps = 6
    model = _random_model(rng, state_dim, obs_dim)
    observations = rng.normal(size=(num_steps, obs_dim))
    state_mean, state_cov, big_h, obs_cov = _joint_gaussian(model, num_steps)

    filtered = kalman.kalman_filter(model, jnp.asarray(observations))
    smoothed = kalman.rts_smoother(model, filtered)

    y = observations.ravel()
    exact_log_likelihood = multivariate_normal(big_h @ state_mean, obs_cov).logpdf(y)
    np.testing.assert_allclose(filtered.log_likelihood, exact_log_likelihood, rtol=1e-10)

    cross = state_cov @ big_h.T  # Cov(x, y)
    posterior_mean = state_mean + cross @ np.linalg.solve(obs_cov, y - big_h @ state_mean)
    posterior_cov = state_cov - cross @ np.linalg.solve(obs_cov, cross.T)
    d = state_dim
    np.testing.assert_allclose(smoothed.smoothed_means.ravel(), posterior_mean, atol=1e-10)
    for t in range(num_steps):
        block = posterior_cov[t * d : (t + 1) * d, t * d : (t + 1) * d]
        np.testing.assert_allclose(smoothed.smoothed_covs[t], block, atol=1e-10)
    for t in range(num_steps - 1):
        block = posterior_cov[t * d : (t + 1) * d, (t + 1) * d : (t + 2) * d]
        np.testing.assert_allclose(smoothed.cross_covs[t], block, atol=1e-10)


def test_grad_of_log_likelihood_equals_fisher_identity():
    """d/drho log p(y) = E[d/drho log p(x, y) | y], with the expectation from RTS moments.

    For x_0 ~ N(0, s^2/(1-rho^2)) and x_t = rho x_{t-1} + N(0, s^2), the complete-data
    score in rho is -rho/(1-rho^2) + rho x_0^2/s^2 + sum_t (x_t x_{t-1} - rho x_{t-1}^2)/s^2.
    """
    rho, sigma_x, sigma_y = 0.7, 1.3, 0.5

    def log_likelihood(rho):
        model = models.linear_gaussian_1d(rho, sigma_x, sigma_y)
        return kalman.kalman_filter(model, FIVE_STEP_Y).log_likelihood

    model = models.linear_gaussian_1d(rho, sigma_x, sigma_y)
    smoothed = kalman.rts_smoother(model, kalman.kalman_filter(model, FIVE_STEP_Y))
    means = smoothed.smoothed_means[:, 0]
    second_moments = smoothed.smoothed_covs[:, 0, 0] + means**2
    lag_one = smoothed.cross_covs[:, 0, 0] + means[:-1] * means[1:]
    fisher_score = (
        -rho / (1 - rho**2)
        + rho * second_moments[0] / sigma_x**2
        + jnp.sum(lag_one - rho * second_moments[:-1]) / sigma_x**2
    )
    np.testing.assert_allclose(jax.grad(log_likelihood)(rho), fisher_score, rtol=1e-9)


def test_gradients_flow_to_every_parameter():
    model = _random_model(np.random.default_rng(0), 2, 2)
    observations = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2)))
    grads = jax.grad(lambda m: kalman.kalman_filter(m, observations).log_likelihood)(model)
    for name, grad in zip(model._fields, grads, strict=True):
        assert jnp.all(jnp.isfinite(grad)), name
        assert jnp.any(grad != 0), name


def test_changing_a_parameter_value_does_not_retrace():
    traces = []

    @jax.jit
    def log_likelihood(model):
        traces.append(None)
        return kalman.kalman_filter(model, FIVE_STEP_Y).log_likelihood

    for rho in (0.9, 0.5, -0.3):
        log_likelihood(models.linear_gaussian_1d(rho=rho, sigma_y=0.1 + rho**2))
    assert len(traces) == 1


def test_single_observation():
    model = models.linear_gaussian_1d()
    filtered = kalman.kalman_filter(model, FIVE_STEP_Y[:1])
    smoothed = kalman.rts_smoother(model, filtered)
    exact = multivariate_normal(0.0, 1.0 / (1 - 0.81) + 0.04).logpdf(0.5)
    np.testing.assert_allclose(filtered.log_likelihood, exact, rtol=1e-12)
    assert smoothed.cross_covs.shape == (0, 1, 1)


@pytest.mark.parametrize("shape", [(5,), (5, 2), (0, 1)])
def test_rejects_observations_of_the_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"observations must have shape \(T, 1\)"):
        kalman.kalman_filter(models.linear_gaussian_1d(), jnp.zeros(shape))
