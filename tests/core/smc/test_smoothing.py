"""Particle smoothers against the Kalman/RTS oracle, and their exact identities.

Statistical tolerances
----------------------
Each statistical check runs R seeded replicates (filter + smoother, vmapped in one jit)
and asserts ``|mean - truth| < Z * s.e.`` with ``s.e. = sd / sqrt(R)``. ``Z = 4`` gives a
two-sided false-failure rate of 6.3e-5 per comparison (normal approximation of the mean
over R replicates); with about 70 comparisons in this file the chance that a correct
implementation fails for some seed is below 0.5%.

The smoothers are self-normalised, so biased by O(1/N); theory gives no constant, so no
bias allowance is added. Instead N is large enough that the bias is small against the
s.e.: in a 8000-replicate study of this example (bootstrap filter, N = 100) the largest
bias over all checked quantities was 0.004 (the smoothed mean at t = 2), i.e. about
0.4 / N, while the per-replicate sd was 0.05-0.12 at N = 100, shrinking like
1 / sqrt(N). At N = 500 and R = 32 the bias is thus ~0.1 s.e. and at N = 1000 and
R = 64, ~0.1 s.e.: negligible against Z = 4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from posteriorlab.core.smc import filtering, kalman, models, smoothing

Z = 4.0
FIVE_STEP_Y = jnp.array([0.5, -0.3, 1.2, 0.8, -0.1])[:, None]
SUM_OF_STATES = 2.097707
SUM_OF_LAG_ONE_PRODUCTS = 0.477091


def _model():
    return models.linear_gaussian_1d(rho=0.9, sigma_x=1.0, sigma_y=0.2)


def _rts(observations=FIVE_STEP_Y):
    model = _model()
    return kalman.rts_smoother(model, kalman.kalman_filter(model, observations))


def _replicate(estimator, num_replicates, seed):
    """Run ``estimator(key)`` on ``num_replicates`` seeded keys in one jitted vmap."""
    keys = jax.random.split(jax.random.key(seed), num_replicates)
    return jax.tree.map(np.asarray, jax.jit(jax.vmap(estimator))(keys))


def _assert_unbiased(samples, truth, what):
    """|mean - truth| < Z * s.e. over the leading (replicate) axis, elementwise."""
    samples = np.asarray(samples)
    mean = samples.mean(axis=0)
    standard_error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    z_scores = (mean - np.asarray(truth)) / standard_error
    assert np.all(np.abs(z_scores) < Z), (
        f"{what}: mean {mean} vs truth {truth}, s.e. {standard_error}, z {z_scores}"
    )


def _filter(key, num_particles, **options):
    return filtering.run(key, _model(), FIVE_STEP_Y, num_particles, **options)


# --------------------------------------------------------------------------------------
# Exact identities (one run, no statistics)
# --------------------------------------------------------------------------------------


def test_ffbsm_weights_at_the_last_step_are_the_filtering_weights():
    info = _filter(jax.random.key(0), 200)
    log_smoothing = smoothing.ffbsm_marginals(_model(), info)
    assert log_smoothing.shape == info.log_weights.shape
    np.testing.assert_array_equal(log_smoothing[-1], info.log_weights[-1])
    np.testing.assert_allclose(jax.scipy.special.logsumexp(log_smoothing, axis=1), 0, atol=1e-12)


def test_ffbsm_additive_agrees_with_ffbsm_marginals():
    """Pair weights sum to the marginal weights, so additive means equal marginal means."""
    model, info = _model(), _filter(jax.random.key(1), 200)
    moments = smoothing.marginal_moments(info.particles, smoothing.ffbsm_marginals(model, info))
    all_means = smoothing.ffbsm_additive(model, info, smoothing.marginal_means_functional(5))
    sum_of_states = smoothing.ffbsm_additive(model, info, smoothing.sum_of_states)
    np.testing.assert_allclose(all_means, moments.means, rtol=1e-10)
    np.testing.assert_allclose(sum_of_states, moments.means.sum(axis=0), rtol=1e-10)


def test_genealogy_paths_follow_the_ancestors():
    info = _filter(jax.random.key(2), 50)
    paths, log_weights = smoothing.genealogy_smoother(info)
    np.testing.assert_array_equal(paths[-1], info.particles[-1])
    np.testing.assert_array_equal(log_weights, info.log_weights[-1])
    lineages = filtering.trace_lineages(info.ancestors)
    for t in range(1, 5):
        parents = info.ancestors[t][lineages[t]]
        np.testing.assert_array_equal(paths[t - 1], info.particles[t - 1][parents])


def test_marginal_moments_of_a_small_weighted_sample():
    particles = jnp.array([[[0.0, 1.0], [2.0, 3.0], [4.0, -1.0]]])
    weights = jnp.array([[0.5, 0.25, 0.25]])
    moments = smoothing.marginal_moments(particles, jnp.log(weights))
    np.testing.assert_allclose(moments.means, [[1.5, 1.0]])
    np.testing.assert_allclose(moments.variances, [[2.75, 2.0]])


def test_ready_made_functionals():
    x_prev, x = jnp.array([1.0, 2.0]), jnp.array([3.0, -1.0])
    np.testing.assert_array_equal(smoothing.sum_of_states.increment(1, x_prev, x), x)
    np.testing.assert_array_equal(
        smoothing.sum_of_lag_one_products.increment(1, x_prev, x), [[3.0, -1.0], [6.0, -2.0]]
    )
    np.testing.assert_array_equal(smoothing.sum_of_lag_one_products.initial(x), jnp.zeros((2, 2)))
    means = smoothing.marginal_means_functional(3)
    np.testing.assert_array_equal(means.initial(x_prev), [[1.0, 2.0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(means.increment(2, x_prev, x), [[0, 0], [0, 0], [3.0, -1.0]])


# --------------------------------------------------------------------------------------
# Backward draws: accept-reject, exact fallback and their mixture have one law
# --------------------------------------------------------------------------------------


def _small_particle_system():
    log_weights_prev = jax.nn.log_softmax(jnp.array([0.0, 0.5, -0.3, 0.2, -0.5, 0.1]))
    step = smoothing._Step(
        t=jnp.array(1),
        log_weights_prev=log_weights_prev,
        particles_prev=jnp.array([-1.0, -0.5, 0.0, 0.3, 1.0, 1.5])[:, None],
        particles=jnp.array([-0.8, 0.0, 0.4, 1.0, 1.3, 2.0])[:, None],
    )
    return _model(), step


@pytest.mark.parametrize("max_trials", [0, 1, 1000])
def test_backward_draws_follow_the_backward_kernel(max_trials):
    """Chi-square goodness of fit of 20000 draws per row; false-failure rate 1e-4."""
    model, step = _small_particle_system()
    num_draws = 20_000
    log_bound = smoothing._gaussian_log_density_bound(model)
    indices, num_proposals, num_exact = jax.jit(
        smoothing._backward_indices, static_argnums=(3, 4)
    )(jax.random.key(3), model, step, num_draws, max_trials, log_bound)

    total = 6 * num_draws
    if max_trials == 0:
        assert (num_proposals, num_exact) == (0, total)
    elif max_trials == 1:
        assert num_proposals == total
        assert 0 < num_exact < total
    else:
        assert num_exact == 0
    kernel = np.exp(np.asarray(smoothing._log_backward_kernel(model, step, step.particles)))
    counts = np.stack([np.bincount(row, minlength=6) for row in np.asarray(indices)])
    chi_square = np.sum((counts - num_draws * kernel) ** 2 / (num_draws * kernel))
    threshold = stats.chi2.ppf(1 - 1e-4, df=6 * 5)
    assert chi_square < threshold, f"chi-square {chi_square:.1f} >= {threshold:.1f}"


def test_density_bound_of_gaussian_transitions():
    bound = smoothing._gaussian_log_density_bound
    np.testing.assert_allclose(bound(_model()), -0.5 * np.log(2 * np.pi))
    two_d = models.linear_gaussian_2d(sigma_x=0.2)
    np.testing.assert_allclose(bound(two_d), -np.log(2 * np.pi * 0.04))
    np.testing.assert_allclose(bound(models.GrowthModelSSM()), -0.5 * np.log(2 * np.pi * 10.0))


# --------------------------------------------------------------------------------------
# Statistical checks against the RTS oracle
# --------------------------------------------------------------------------------------


def test_ffbsm_recovers_the_exact_smoother():
    model, num_particles = _model(), 500

    def estimator(key):
        info = _filter(key, num_particles)
        moments = smoothing.marginal_moments(
            info.particles, smoothing.ffbsm_marginals(model, info)
        )
        lag_one = smoothing.ffbsm_additive(model, info, smoothing.sum_of_lag_one_products)
        return moments, lag_one[0, 0]

    moments, lag_one = _replicate(estimator, num_replicates=32, seed=10)
    rts = _rts()
    _assert_unbiased(moments.means[..., 0], rts.smoothed_means[:, 0], "FFBSm means")
    _assert_unbiased(moments.variances[..., 0], rts.smoothed_covs[:, 0, 0], "FFBSm variances")
    _assert_unbiased(moments.means[..., 0].sum(axis=1), SUM_OF_STATES, "FFBSm E[sum x_t]")
    _assert_unbiased(lag_one, SUM_OF_LAG_ONE_PRODUCTS, "FFBSm E[sum x_t x_t+1]")


def _paris_estimator(num_particles, max_trials, **filter_options):
    model = _model()
    functional = smoothing.AdditiveFunctional(
        initial=lambda x: jnp.concatenate([x, jnp.zeros(1)]),
        increment=lambda t, x_prev, x: jnp.concatenate([x, x_prev * x]),
    )

    def estimator(key):
        key_filter, key_smoother = jax.random.split(key)
        info = _filter(key_filter, num_particles, **filter_options)
        result = smoothing.paris(key_smoother, model, info, functional, max_trials=max_trials)
        return result.estimate

    return estimator


@pytest.mark.parametrize(
    ("max_trials", "filter_options"),
    [
        pytest.param(32, {}, id="hybrid-bootstrap"),
        pytest.param(0, {}, id="exact-only"),
        pytest.param(1, {}, id="mostly-exact"),
        pytest.param(32, {"proposal": "guided", "resampling": "stratified"}, id="guided"),
    ],
)
def test_paris_recovers_additive_functionals(max_trials, filter_options):
    """Sum of states and of lag-one products; every draw path and proposal hits the oracle.

    The guided filter checks that the backward kernel only needs the filtering weights
    (the default ESS threshold 0.5 makes every run adaptive).
    """
    estimator = _paris_estimator(1000, max_trials, **filter_options)
    estimates = _replicate(estimator, num_replicates=64, seed=20 + max_trials)
    _assert_unbiased(estimates[:, 0], SUM_OF_STATES, "PaRIS E[sum x_t]")
    _assert_unbiased(estimates[:, 1], SUM_OF_LAG_ONE_PRODUCTS, "PaRIS E[sum x_t x_t+1]")


def test_paris_marginal_means_are_the_online_rts_means():
    """Row s of the online estimate at t is E[x_s | y_0:t]: RTS on the data up to t."""
    model, num_steps = _model(), 5
    functional = smoothing.marginal_means_functional(num_steps)

    def estimator(key):
        key_filter, key_smoother = jax.random.split(key)
        info = _filter(key_filter, 1000)
        return smoothing.paris(key_smoother, model, info, functional).estimates[..., 0]

    estimates = _replicate(estimator, num_replicates=64, seed=30)
    for t in range(num_steps):
        truth = _rts(FIVE_STEP_Y[: t + 1]).smoothed_means[:, 0]
        _assert_unbiased(estimates[:, t, : t + 1], truth, f"PaRIS means online at t={t}")
        np.testing.assert_array_equal(estimates[:, t, t + 1 :], 0.0)


def test_genealogy_smoother_recovers_the_smoothed_means():
    """Consistent (if degenerate for long series): on 5 steps it must hit RTS."""

    def estimator(key):
        paths, log_weights = smoothing.genealogy_smoother(_filter(key, 1000))
        return jnp.einsum("n,tn->t", jnp.exp(log_weights), paths[..., 0])

    means = _replicate(estimator, num_replicates=64, seed=40)
    _assert_unbiased(means, _rts().smoothed_means[:, 0], "genealogy means")


# --------------------------------------------------------------------------------------
# Arguments, models without a bound, compilation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_backward": 1}, "num_backward must be an int >= 2; got 1"),
        ({"num_backward": 2.0}, "num_backward must be an int >= 2; got 2.0"),
        ({"max_trials": -1}, "max_trials must be an int >= 0; got -1"),
    ],
)
def test_paris_rejects_bad_arguments(options, message):
    info = _filter(jax.random.key(5), 10)
    with pytest.raises(ValueError, match=message):
        smoothing.paris(jax.random.key(6), _model(), info, smoothing.sum_of_states, **options)


def test_marginal_means_functional_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        smoothing.marginal_means_functional(0)


def test_paris_needs_a_bound_for_models_without_gaussian_covariance():
    model = models.StochasticVolatilitySSM()
    observations = model.simulate(jax.random.key(7), 8)[1]
    info = filtering.run(jax.random.key(8), model, observations, 100)
    with pytest.raises(TypeError, match="Pass log_transition_bound explicitly"):
        smoothing.paris(jax.random.key(9), model, info, smoothing.sum_of_states)

    bound = -0.5 * jnp.log(2 * jnp.pi * model.sigma**2)
    result = smoothing.paris(
        jax.random.key(9), model, info, smoothing.sum_of_states, log_transition_bound=bound
    )
    reference = smoothing.ffbsm_additive(model, info, smoothing.sum_of_states)
    assert result.estimates.shape == (8, 1)
    # Same particle system, two consistent smoothers: they differ by PaRIS's Monte Carlo
    # noise only, of order sd(x) * sqrt(T / N) ~ 0.5 here.
    np.testing.assert_allclose(result.estimate, reference, atol=1.5)


def test_paris_does_not_retrace_when_model_parameters_change():
    traces = []

    @jax.jit
    def smooth(key, model):
        traces.append(None)
        info = filtering.run(key, model, FIVE_STEP_Y, 64)
        return smoothing.paris(key, model, info, smoothing.sum_of_states).estimate

    for rho in (0.9, 0.5):
        smooth(jax.random.key(0), models.linear_gaussian_1d(rho=rho, sigma_x=rho + 0.5))
    assert len(traces) == 1
