"""Exact mixture-path fields against reference numbers, identities and autodiff.

Oracles, each independent of the component formulas under test:

* the reference values of the research digest (seeds-paths-flows-dt.md section 0.6),
  computed there with numpy and checked by importance sampling;
* ``jax.grad`` of :func:`fields.log_prob` for the score;
* the continuity equation d p_t/dt + div(p_t u_t) = 0, with the time derivative and the
  divergence both from autodiff of the density and velocity;
* Bayes' rule for the guided score: grad log p_t(x|y) = grad log p_t(x) + grad log p_t(y|x);
* a Monte Carlo estimate of E[x_1 | x_t] by self-normalised importance sampling.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.paths import fields, schedules

from .test_schedules import SCHEDULES, canonical_target

X = jnp.array([0.3, -0.7])
OBSERVATION = {"A": jnp.array([[1.0, 0.5]]), "noise_cov": 0.25, "y": 0.8}


@pytest.mark.parametrize(
    ("name", "velocity", "score", "log_prob", "denoised"),
    [
        ("condot", (-0.468198, -1.764510), (-1.068198, -0.364510), -2.285455,
         (0.065901, -1.582255)),
        ("cosine", (-0.467371, -1.634027), (-0.597537, -0.340254), -2.986908,
         (0.001741, -1.230545)),
    ],
)  # fmt: skip
def test_reference_values_at_half_time(name, velocity, score, log_prob, denoised):
    m = fields.marginal(SCHEDULES[name], canonical_target(), 0.5)
    np.testing.assert_allclose(fields.velocity(m, X), velocity, atol=1e-6)
    np.testing.assert_allclose(fields.score(m, X), score, atol=1e-6)
    np.testing.assert_allclose(fields.log_prob(m, X), log_prob, atol=1e-6)
    np.testing.assert_allclose(fields.expected_data(m, X), denoised, atol=1e-6)


def test_posterior_path_reference_values():
    m = fields.posterior_marginal(SCHEDULES["condot"], canonical_target(), 0.5, **OBSERVATION)
    np.testing.assert_allclose(fields.score(m, X), [0.511910, 2.304877], atol=1e-6)
    np.testing.assert_allclose(fields.velocity(m, X), [1.111910, 0.904877], atol=1e-6)
    log_lik = fields.observation_log_likelihood(
        SCHEDULES["condot"], canonical_target(), 0.5, **OBSERVATION, x=X
    )
    np.testing.assert_allclose(log_lik, -3.102453, atol=1e-6)


def test_guided_score_is_prior_score_plus_likelihood_gradient():
    target = canonical_target()
    for t in [0.2, 0.5, 0.9]:
        posterior = fields.posterior_marginal(SCHEDULES["cosine"], target, t, **OBSERVATION)
        prior = fields.marginal(SCHEDULES["cosine"], target, t)
        likelihood_gradient = jax.grad(
            lambda x, t=t: fields.observation_log_likelihood(
                SCHEDULES["cosine"], target, t, **OBSERVATION, x=x
            )
        )(X)
        np.testing.assert_allclose(
            fields.score(posterior, X), fields.score(prior, X) + likelihood_gradient, atol=1e-12
        )


@pytest.mark.parametrize("name", SCHEDULES)
def test_score_is_the_gradient_of_the_log_density(name):
    m = fields.marginal(SCHEDULES[name], canonical_target(), 0.37)
    points = jnp.array([[0.3, -0.7], [-3.0, 2.0], [4.0, 0.5]])
    autodiff = jax.vmap(jax.grad(lambda x: fields.log_prob(m, x)))(points)
    np.testing.assert_allclose(fields.score(m, points), autodiff, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
def test_continuity_equation(name):
    """d/dt p_t(x) + div(p_t u_t)(x) = 0, everywhere and at both ends of the path.

    Both terms come from autodiff of the closed forms; the residual is compared to the
    size of the terms themselves (float64 rounding, ~1e-13 relative).
    """
    target = canonical_target()
    schedule = SCHEDULES[name]

    def density(time, x):
        return jnp.exp(fields.log_prob(fields.marginal(schedule, target, time), x))

    def flux(time, x):
        m = fields.marginal(schedule, target, time)
        return jnp.exp(fields.log_prob(m, x)) * fields.velocity(m, x)

    @jax.jit
    def residual_and_scale(time, x):
        time_rate = jax.grad(density, argnums=0)(time, x)
        divergence = jnp.trace(jax.jacfwd(flux, argnums=1)(time, x))
        return time_rate + divergence, jnp.abs(time_rate) + jnp.abs(divergence)

    points = jnp.array([[0.3, -0.7], [-2.0, 0.1], [1.8, 1.1], [0.0, -1.9]])
    for t in [0.0, 0.2, 0.5, 0.9, schedules.T_MAX]:
        residual, scale = jax.vmap(residual_and_scale, in_axes=(None, 0))(jnp.asarray(t), points)
        assert np.all(np.abs(residual) <= 1e-10 * np.maximum(scale, 1e-6)), (t, residual)


@pytest.mark.parametrize("name", ["condot", "cosine", "vp"])
def test_denoiser_and_noise_predictor_decompose_the_point(name):
    """sigma_t E[x_0|x] + alpha_t E[x_1|x] = x, with E[x_0|x] = -sigma_t * score."""
    target = canonical_target()
    points = jnp.array([[0.3, -0.7], [-3.0, 2.0], [4.0, 0.5]])
    for t in [0.1, 0.5, 0.8]:
        m = fields.marginal(SCHEDULES[name], target, t)
        c = schedules.coefficients(SCHEDULES[name], t)
        noise_guess = -c.sigma * fields.score(m, points)
        recomposed = c.sigma * noise_guess + c.alpha * fields.expected_data(m, points)
        np.testing.assert_allclose(recomposed, points, rtol=1e-12, atol=1e-12)


def test_denoiser_matches_importance_sampling():
    """E[x_1 | x_t = x] by self-normalised IS over x_1 ~ p_1 with weights N(x; a x_1, s^2 I).

    With M = 200000 draws the estimator's standard error (delta method) is computed from
    the same draws; z = 4.5 gives a false-failure rate below 1e-5 per coordinate.
    """
    target = canonical_target()
    c = schedules.coefficients(SCHEDULES["condot"], 0.5)
    draws = gmm.sample(jax.random.key(3), target, 200_000)
    log_w = -0.5 * jnp.sum((X - c.alpha * draws) ** 2, axis=-1) / c.sigma**2
    w = jax.nn.softmax(log_w)
    estimate = w @ draws
    standard_error = jnp.sqrt(jnp.sum(w[:, None] ** 2 * (draws - estimate) ** 2, axis=0))
    exact = fields.expected_data(fields.marginal(SCHEDULES["condot"], target, 0.5), X)
    assert np.all(np.abs(estimate - exact) <= 4.5 * standard_error)


def test_mixture_source_marginal_is_the_pair_mixture():
    """With a two-component source, p_t has K0 * K1 components with the paired moments."""
    target = canonical_target()
    source = gmm.from_covariances([0.4, 0.6], [[-1.0, 0.0], [1.0, 0.5]], [0.3 * np.eye(2)] * 2)
    c = schedules.coefficients(SCHEDULES["cosine"], 0.4)
    m = fields.marginal(SCHEDULES["cosine"], target, 0.4, source)
    mixture = fields.as_mixture(m)
    assert mixture.means.shape == (6, 2)
    x = jnp.array([[0.3, -0.7], [1.0, 2.0]])

    def components(mixture):
        return zip(gmm.weights(mixture), mixture.means, gmm.covariances(mixture), strict=True)

    pair_terms = [
        jnp.log(ws * wt)
        + jax.scipy.stats.multivariate_normal.logpdf(
            x, c.sigma * ms + c.alpha * mt, c.sigma**2 * cs + c.alpha**2 * ct
        )
        for ws, ms, cs in components(source)
        for wt, mt, ct in components(target)
    ]
    expected = jax.scipy.special.logsumexp(jnp.stack(pair_terms), axis=0)
    np.testing.assert_allclose(fields.log_prob(m, x), expected, rtol=1e-12)


def test_start_distribution():
    target = canonical_target()
    start = fields.start_distribution(SCHEDULES["condot"], target)
    np.testing.assert_allclose(gmm.mean(start), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(gmm.covariance(start), np.eye(2), atol=1e-12)
    ve = SCHEDULES["ve"]
    blurred = fields.start_distribution(ve, target)
    np.testing.assert_allclose(
        gmm.covariance(blurred), gmm.covariance(target) + 100.0 * np.eye(2), rtol=1e-10
    )


def test_changing_mixture_or_schedule_parameters_never_retraces():
    traces = []

    @jax.jit
    def velocity_at(schedule, target, t, x):
        traces.append(1)
        return fields.velocity(fields.marginal(schedule, target, t), x)

    target = canonical_target()
    velocity_at(SCHEDULES["vp"], target, 0.3, X)
    moved = target._replace(means=target.means + 1.0)
    velocity_at(schedules.VP(jnp.asarray(0.2), jnp.asarray(10.0)), moved, 0.6, X + 1.0)
    assert len(traces) == 1
