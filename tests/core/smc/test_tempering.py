"""Tempered SMC against a conjugate problem whose posterior and evidence are exact.

Prior: a three-component 2-D Gaussian mixture; data: three scalar linear-Gaussian
observations with small noise, so the posterior is far from the prior and the ladder
needs several temperatures. The exact posterior and evidence come from
:func:`posteriorlab.core.gmm.condition_on_linear_gaussian` and
:func:`posteriorlab.core.gmm.log_marginal_likelihood`.

Statistical checks run R seeded replicates and allow t standard errors of the replicate
mean, t the Student quantile with R - 1 degrees of freedom for a two-sided
false-failure rate of FALSE_FAILURE_RATE per check.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from posteriorlab.core import gmm
from posteriorlab.core.smc import tempering

FALSE_FAILURE_RATE = 1e-3
REPLICATES = 40
PARTICLES = 1000
T_QUANTILE = stats.t.ppf(1.0 - FALSE_FAILURE_RATE / 2.0, REPLICATES - 1)

PRIOR = gmm.from_covariances(
    [0.5, 0.3, 0.2],
    [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]],
    [0.5 * jnp.eye(2), [[0.8, 0.3], [0.3, 0.4]], [[1.5, -0.2], [-0.2, 0.3]]],
)
ROWS = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
NOISE_COV = 0.3**2 * jnp.eye(3)


def log_likelihood(values, x):
    return jax.scipy.stats.multivariate_normal.logpdf(values, ROWS @ x, NOISE_COV)


@functools.partial(jax.jit, static_argnames="max_steps")
def replicates(keys, values, max_steps=100):
    def one(key):
        return tempering.run_mixture_prior(key, PRIOR, functools.partial(log_likelihood, values),
                                           PARTICLES, max_steps=max_steps)  # fmt: skip

    return jax.vmap(one)(keys)


def within_t_errors(samples, expected):
    samples = np.asarray(samples)
    error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    return np.abs(samples.mean(axis=0) - expected) <= T_QUANTILE * error


@pytest.fixture(scope="module")
def runs():
    values = jnp.array([1.5, 0.8, 2.5])
    return values, replicates(jax.random.split(jax.random.key(0), REPLICATES), values)


def test_evidence_estimate_is_unbiased(runs):
    values, result = runs
    log_evidence = gmm.log_marginal_likelihood(PRIOR, ROWS, NOISE_COV, values)
    ratio = np.exp(np.asarray(result.log_evidence - log_evidence))
    assert within_t_errors(ratio, 1.0)  # E[Z_hat / Z] = 1
    # log Z_hat itself is biased down only by about half its variance.
    assert abs(np.mean(np.log(ratio))) < 0.05


def test_posterior_mean_matches_the_exact_one(runs):
    values, result = runs
    exact_mean = gmm.mean(gmm.condition_on_linear_gaussian(PRIOR, ROWS, NOISE_COV, values))
    particle_means = np.asarray(result.particles.mean(axis=1))
    assert np.all(within_t_errors(particle_means, np.asarray(exact_mean)))


def test_ladder_rises_to_one_and_the_particles_move(runs):
    _, result = runs
    steps = np.asarray(result.num_steps)
    assert np.all(steps > 2)  # informative data: the ladder needs several rungs
    for ladder, rates, count in zip(np.asarray(result.temperatures),
                                    np.asarray(result.acceptance_rates), steps, strict=True):
        assert ladder[count - 1] == 1.0
        assert np.all(np.diff(ladder[:count]) > 0)
        assert ladder[0] > 0
        assert np.all(np.isnan(ladder[count:]))
        assert np.all(np.isnan(rates[count:]))
        assert np.all((rates[:count] > 0.05) & (rates[:count] < 0.9))


def test_each_rung_keeps_the_target_ess():
    log_likelihoods = 3.0 * jax.random.normal(jax.random.key(1), (PARTICLES,))
    log_weights = jnp.full((PARTICLES,), -jnp.log(PARTICLES))
    for fraction in (0.3, 0.5, 0.9):
        new = tempering.next_temperature(log_weights, log_likelihoods, 0.2, fraction)
        assert 0.2 < new < 1.0
        ess = tempering.conditional_ess(log_weights, log_likelihoods, new - 0.2)
        assert ess == pytest.approx(fraction * PARTICLES, rel=1e-9)
    flat = jnp.zeros((PARTICLES,))
    assert tempering.next_temperature(log_weights, flat, 0.2, 0.5) == 1.0


def test_the_last_allowed_step_jumps_to_one(runs):
    values, _ = runs
    result = replicates(jax.random.split(jax.random.key(2), 2), values, max_steps=2)
    np.testing.assert_array_equal(result.num_steps, 2)
    np.testing.assert_array_equal(result.temperatures[:, -1], 1.0)
    assert np.all(np.isfinite(result.log_evidence))


def test_new_data_do_not_recompile(runs):
    values, _ = runs
    keys = jax.random.split(jax.random.key(3), REPLICATES)
    size = replicates._cache_size()
    replicates(keys, values + 0.7)
    assert replicates._cache_size() == size


def test_unknown_resampling_scheme_is_named():
    with pytest.raises(ValueError, match="unknown resampling scheme 'sorted'.*systematic"):
        tempering.run_mixture_prior(jax.random.key(0), PRIOR,
                                    functools.partial(log_likelihood, jnp.zeros(3)), 10,
                                    resampling="sorted")  # fmt: skip
