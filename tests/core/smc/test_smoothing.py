"""Particle smoothers against the Kalman/RTS oracle, and their exact identities.

Statistical tolerances
----------------------
Each statistical check runs R seeded replicates (filter + smoother, vmapped in one jit)
and asserts ``|mean - truth| < Z * s.e.`` with ``s.e. = sd / sqrt(R)``. ``Z = 4`` gives a
two-sided false-failure rate of 6.3e-5 per comparison (normal approximation of the mean
over R replicates).

The smoothers are self-normalised, so biased by O(1/N); theory gives no constant, so no
bias allowance is added. Instead N is large enough that the bias is small against the
s.e.: in an 8000-replicate study of this example (bootstrap filter, N = 100; repeated at
N = 300) the largest bias over all checked quantities was 0.004 (the smoothed mean at
t = 2), about 0.4 / N, while the per-replicate sd was 0.03-0.12 at N = 100, shrinking
like 1 / sqrt(N). With N = 500, R = 32 (FFBSm, PaRIS) or N = 1000, R = 64 (genealogy)
the bias is at most 0.2 s.e. for every quantity checked: negligible against Z = 4.

About 60 z-comparisons and 3 chi-square tests (1e-4 each) are made here: a correct
implementation fails for some seed with probability below 0.5%.
"""

import functools
from typing import NamedTuple

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
SMALL_N = 64  # one particle count for the single-run tests, so they share compilations


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
    info = _filter(jax.random.key(0), SMALL_N)
    log_smoothing = smoothing.ffbsm_marginals(_model(), info)
    assert log_smoothing.shape == info.log_weights.shape
    np.testing.assert_array_equal(log_smoothing[-1], info.log_weights[-1])
    np.testing.assert_allclose(jax.scipy.special.logsumexp(log_smoothing, axis=1), 0, atol=1e-12)


def test_ffbsm_additive_agrees_with_ffbsm_marginals():
    """Pair weights sum to the marginal weights, so additive means equal marginal means."""
    model, info = _model(), _filter(jax.random.key(1), SMALL_N)
    moments = smoothing.marginal_moments(info.particles, smoothing.ffbsm_marginals(model, info))
    all_means = smoothing.ffbsm_additive(model, info, smoothing.marginal_means_functional(5))
    sum_of_states = smoothing.ffbsm_additive(model, info, smoothing.sum_of_states)
    np.testing.assert_allclose(all_means, moments.means, rtol=1e-10)
    np.testing.assert_allclose(sum_of_states, moments.means.sum(axis=0), rtol=1e-10)


def test_genealogy_paths_follow_the_ancestors():
    info = _filter(jax.random.key(2), SMALL_N)
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
    """Chi-square goodness of fit of 5000 draws per row; false-failure rate 1e-4."""
    model, step = _small_particle_system()
    num_draws = 5000
    log_bound = smoothing._log_transition_density_bound(model)
    draw = jax.jit(smoothing._backward_indices, static_argnums=3)
    indices, num_proposals, num_exact = draw(
        jax.random.key(3), model, step, num_draws, jnp.asarray(max_trials), log_bound
    )

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
    bound = smoothing._log_transition_density_bound
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
        moments = smoothing.marginal_moments(info.particles, smoothing.ffbsm_marginals(model, info))
        lag_one = smoothing.ffbsm_additive(model, info, smoothing.sum_of_lag_one_products)
        return moments, lag_one[0, 0]

    moments, lag_one = _replicate(estimator, num_replicates=32, seed=10)
    rts = _rts()
    _assert_unbiased(moments.means[..., 0], rts.smoothed_means[:, 0], "FFBSm means")
    _assert_unbiased(moments.variances[..., 0], rts.smoothed_covs[:, 0, 0], "FFBSm variances")
    _assert_unbiased(moments.means[..., 0].sum(axis=1), SUM_OF_STATES, "FFBSm E[sum x_t]")
    _assert_unbiased(lag_one, SUM_OF_LAG_ONE_PRODUCTS, "FFBSm E[sum x_t x_t+1]")


def _stacked(*functionals):
    """One functional whose value concatenates the flattened values of several."""

    def initial(x):
        return jnp.concatenate([f.initial(x).ravel() for f in functionals])

    def increment(t, x_prev, x):
        return jnp.concatenate([f.increment(t, x_prev, x).ravel() for f in functionals])

    return smoothing.AdditiveFunctional(initial, increment)


# Value: the 5 marginal means (rows s = 0..4), then sum_t x_{t-1} x_t.
MEANS_AND_LAG_ONE = _stacked(
    smoothing.marginal_means_functional(5), smoothing.sum_of_lag_one_products
)
PARIS_TRACES = []
PARIS_N, PARIS_R = 500, 32  # particles and replicates of every PaRIS check


@functools.cache
def _paris_runs(num_particles, proposal):
    """Jitted vmap over keys of (filter, PaRIS); model and max_trials are traced."""

    def one(key, model, max_trials):
        PARIS_TRACES.append(None)
        key_filter, key_smoother = jax.random.split(key)
        info = filtering.run(key_filter, model, FIVE_STEP_Y, num_particles, proposal=proposal)
        return smoothing.paris(key_smoother, model, info, MEANS_AND_LAG_ONE, max_trials=max_trials)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def _paris_replicates(num_particles, num_replicates, seed, max_trials, proposal="bootstrap"):
    keys = jax.random.split(jax.random.key(seed), num_replicates)
    result = _paris_runs(num_particles, proposal)(keys, _model(), jnp.asarray(max_trials))
    return jax.tree.map(np.asarray, result)


@pytest.mark.parametrize(
    ("max_trials", "proposal"),
    [
        pytest.param(32, "bootstrap", id="hybrid"),
        pytest.param(0, "bootstrap", id="exact-only"),
        pytest.param(1, "bootstrap", id="mostly-exact"),
        pytest.param(32, "guided", id="guided-proposal"),
    ],
)
def test_paris_recovers_the_exact_smoother(max_trials, proposal):
    """Means, sum of states and lag-one products; every draw route and proposal.

    Exact-only draws every index from the O(N) rows, mostly-exact makes one proposal
    first; both must hit the oracle like the hybrid. The guided filter checks that the
    backward kernel needs only the filtering weights (the default ESS threshold 0.5
    makes every run adaptive). N = 500 and R = 32 (bias below 0.2 s.e.) bound the
    O(N^2) cost of the exact route, and all bootstrap cases share one compilation.
    """
    result = _paris_replicates(PARIS_N, PARIS_R, 20 + max_trials, max_trials, proposal)
    rts = _rts()
    if max_trials == 0:
        assert np.all(result.num_exact_draws[:, 1:] == 2 * PARIS_N)
        assert np.all(result.num_proposals == 0)
    else:
        assert np.all(result.num_exact_draws[:, 1:] < 2 * PARIS_N)
    _assert_unbiased(result.estimate[:, :5], rts.smoothed_means[:, 0], "PaRIS means")
    _assert_unbiased(result.estimate[:, :5].sum(axis=1), SUM_OF_STATES, "PaRIS E[sum x_t]")
    _assert_unbiased(result.estimate[:, 5], SUM_OF_LAG_ONE_PRODUCTS, "PaRIS E[sum x_t x_t+1]")


def test_paris_online_estimates_are_the_rts_means_of_the_data_so_far():
    """Row s of the online estimate at t is E[x_s | y_0:t]: RTS on the data up to t."""
    estimates = _paris_replicates(PARIS_N, PARIS_R, seed=30, max_trials=32).estimates
    for t in range(5):
        truth = _rts(FIVE_STEP_Y[: t + 1]).smoothed_means[:, 0]
        _assert_unbiased(estimates[:, t, : t + 1], truth, f"PaRIS online means at t={t}")
        np.testing.assert_array_equal(estimates[:, t, t + 1 : 5], 0.0)


def test_paris_does_not_retrace_when_parameters_change():
    keys = jax.random.split(jax.random.key(0), PARIS_R)
    run = _paris_runs(PARIS_N, "bootstrap")
    run(keys, _model(), jnp.asarray(32))
    traces = len(PARIS_TRACES)
    run(keys, models.linear_gaussian_1d(rho=0.5, sigma_x=2.0, sigma_y=0.3), jnp.asarray(7))
    assert len(PARIS_TRACES) == traces


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


@pytest.mark.parametrize("num_backward", [1, 0, 2.0])
def test_paris_rejects_fewer_than_two_backward_draws(num_backward):
    info = _filter(jax.random.key(5), SMALL_N)
    with pytest.raises(ValueError, match=f"num_backward must be an int >= 2; got {num_backward}"):
        smoothing.paris(
            jax.random.key(6), _model(), info, smoothing.sum_of_states, num_backward=num_backward
        )


def test_marginal_means_functional_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        smoothing.marginal_means_functional(0)


class _Unbounded(NamedTuple):
    """A model that does not declare the peak of its transition density."""

    model: models.LinearGaussianSSM

    def log_prob_transition(self, t, x_prev, x):
        return self.model.log_prob_transition(t, x_prev, x)


def test_paris_needs_a_bound_from_the_model_or_the_caller():
    info = _filter(jax.random.key(7), SMALL_N)
    with pytest.raises(TypeError, match="Pass log_transition_bound explicitly"):
        smoothing.paris(jax.random.key(8), _Unbounded(_model()), info, smoothing.sum_of_states)


def test_stochastic_volatility_declares_its_gaussian_peak():
    np.testing.assert_allclose(
        smoothing._log_transition_density_bound(models.StochasticVolatilitySSM(sigma=0.3)),
        -0.5 * np.log(2 * np.pi * 0.09),
        rtol=1e-6,
    )


def test_an_explicit_bound_is_used_and_caps_the_proposals_per_draw():
    """A bound far above the density rejects (almost) every proposal: each draw makes
    exactly max_trials proposals, then the exact fallback makes all of them."""
    info = _filter(jax.random.key(9), SMALL_N)
    result = smoothing.paris(
        jax.random.key(10),
        _model(),
        info,
        smoothing.sum_of_states,
        max_trials=32,
        log_transition_bound=50.0,
    )
    np.testing.assert_array_equal(result.num_exact_draws[1:], 2 * SMALL_N)
    np.testing.assert_array_equal(result.num_proposals[1:], 32 * 2 * SMALL_N)


def test_a_single_observation_smooths_to_the_filter():
    model, info = _model(), _filter(jax.random.key(11), SMALL_N)
    info = jax.tree.map(lambda a: a[:1], info)
    np.testing.assert_array_equal(smoothing.ffbsm_marginals(model, info), info.log_weights)
    result = smoothing.paris(jax.random.key(12), model, info, smoothing.sum_of_states)
    expected = jnp.exp(info.log_weights[0]) @ info.particles[0]
    np.testing.assert_allclose(result.estimate, expected, rtol=1e-12)
    np.testing.assert_array_equal(result.num_proposals, [0])
