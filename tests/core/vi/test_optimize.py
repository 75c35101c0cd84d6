"""Optimisation converges to the exact posterior; sliders do not retrace; gradient variance.

The statistical assertion compares a sample variance with its exact value within
Z_SCORE standard errors estimated from the replicates (the variance of the sample
variance, from the fourth central moment); Z_SCORE = 4.5, false-failure rate about
7e-6 per assertion under the normal approximation.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from posteriorlab.core.vi import families, models, objectives, optimize, programs, variance

Z_SCORE = 4.5
TARGET = models.ConjugateGaussian.create(
    [[1.0, -0.5], [0.4, 0.2], [0.7, 0.1]], prior_scale=[1.0, 2.0]
)
ELBO_STL = functools.partial(objectives.elbo, stick_the_landing=True)


def test_mean_field_gaussian_converges_to_the_exact_posterior(key):
    # The target posterior is a diagonal Gaussian, inside the family. With sticking the
    # landing the gradient estimate is exactly zero there (the integrand
    # log p(x, z) - log q(z) is constant in z), so the noise vanishes at the optimum and
    # Adam converges to it; the tolerances are numerical, not statistical.
    state = optimize.init(families.MeanFieldGaussian.standard(2))
    for i in range(3):
        state, info = optimize.run_chunk(
            jax.random.fold_in(key, i), state, TARGET, ELBO_STL, learning_rate=0.05, num_steps=300
        )
    mean, scale = TARGET.posterior()
    np.testing.assert_allclose(state.params.loc, mean, atol=1e-5)
    np.testing.assert_allclose(jnp.exp(state.params.log_scale), scale, rtol=1e-5)
    assert float(info.loss[-1]) == pytest.approx(-float(TARGET.log_evidence()), abs=1e-8)
    assert float(info.grad_norm[-1]) < 1e-4
    assert int(state.step) == 900


def test_full_rank_gaussian_reaches_the_exact_evidence(key):
    state = optimize.init(families.FullRankGaussian.standard(2))
    state, info = optimize.run_chunk(
        key, state, TARGET, ELBO_STL, learning_rate=0.05, num_steps=1000
    )
    assert float(info.loss[-1]) == pytest.approx(-float(TARGET.log_evidence()), abs=1e-6)
    np.testing.assert_allclose(state.params.loc, TARGET.posterior()[0], atol=1e-4)


def test_changing_learning_rate_or_data_does_not_retrace(key):
    state = optimize.init(families.MeanFieldGaussian.standard(2))
    state, _ = optimize.run_chunk(key, state, TARGET, ELBO_STL, learning_rate=0.05, num_steps=20)
    size = optimize.run_chunk._cache_size()
    moved = TARGET._replace(
        observations=TARGET.observations + 1.0, prior_scale=TARGET.prior_scale * 3
    )
    for learning_rate, target in [(0.01, TARGET), (0.2, moved), (1e-3, moved)]:
        state, info = optimize.run_chunk(
            key, state, target, ELBO_STL, learning_rate=learning_rate, num_steps=20
        )
    assert optimize.run_chunk._cache_size() == size
    assert float(state.opt_state.hyperparams["learning_rate"]) == pytest.approx(1e-3)
    assert info.loss.shape == (20,)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        optimize.init(families.MeanFieldGaussian.standard(2), "adamw")


def squared(t, mu):
    """E_{x ~ N(mu, 1)}[x^2] = mu^2 + 1, gradient 2 mu."""
    x = t.sample("x", dist.Normal(mu, 1.0))
    return x**2


def test_gradient_variance_of_reparam_and_score_on_common_random_numbers(key):
    # Reparam: g = 2x, variance 4. Score: g = x^2 (x - mu), variance mu^4 + 14 mu^2 + 15.
    mu, n = 0.5, 200_000
    stats = variance.compare_estimators(
        key,
        squared,
        mu,
        choices={"reparam": programs.choose(x="reparam"), "score": programs.choose(x="score")},
        num_samples=n,
    )
    assert stats["reparam"].value_mean == stats["score"].value_mean  # same draws
    exact = {"reparam": 4.0, "score": mu**4 + 14 * mu**2 + 15}
    for name, s in stats.items():
        grads = np.asarray(
            jax.vmap(
                lambda k, e=name: programs.grad_estimate(squared, k, mu, estimators={"x": e})[1]
            )(jax.random.split(key, n))
        )
        np.testing.assert_allclose(s.mean[0], grads.mean(), rtol=1e-10)
        fourth = np.mean((grads - grads.mean()) ** 4)
        se_variance = np.sqrt((fourth - grads.var() ** 2) / n)
        assert abs(float(s.variance[0]) - exact[name]) < Z_SCORE * se_variance, name
        assert abs(float(s.mean[0]) - 2 * mu) < Z_SCORE * np.sqrt(exact[name] / n), name
    assert stats["score"].snr[0] < stats["reparam"].snr[0]
