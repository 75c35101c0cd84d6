"""The particle filter against the exact (Kalman) evidence, plus history and genealogy.

Statistical assertions compare a mean over R seeded replicates with its expectation
within Z_SCORE standard errors (estimated from the replicates). Z_SCORE = 4 gives a
two-sided false-failure rate of about 6e-5 per assertion under the normal
approximation; the particle counts are chosen so that sd(log Z_hat) stays below about
one, where Z_hat / Z is not too skewed for that approximation.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from posteriorlab.core.smc import filtering, models, resampling

Z_SCORE = 4.0

# The 5-step example: linear_gaussian_1d() defaults and these observations.
OBSERVATIONS = np.array([0.5, -0.3, 1.2, 0.8, -0.1])[:, None]
KALMAN_LOG_EVIDENCE = -7.169735  # log p(y_{0:4}), from the Kalman filter
DEFAULT_MODEL = models.linear_gaussian_1d()


def final_log_evidence(info):
    return info.log_evidence


def evidence_and_resampling(info):
    return info.log_evidence, info.resampled


@partial(jax.jit, static_argnames=("num_particles", "num_replicates", "resampling", "proposal"))
def replicates(
    key,
    model,
    num_particles,
    num_replicates,
    resampling="systematic",
    proposal="bootstrap",
    ess_threshold=0.5,
    annealing=filtering.NO_ANNEALING,
):
    """Final log Z_hat (R,) and resampling flags (R, T) of R independent filters on
    OBSERVATIONS. Compiled once per static setting: the model, the threshold and the
    annealing settings are traced, so tests that differ only in those share it."""

    def one(k):
        return filtering.run(
            k,
            model,
            OBSERVATIONS,
            num_particles,
            resampling=resampling,
            proposal=proposal,
            ess_threshold=ess_threshold,
            annealing=annealing,
            record=evidence_and_resampling,
        )

    log_evidence, resampled = jax.vmap(one)(jax.random.split(key, num_replicates))
    return log_evidence[:, -1], resampled


def log_evidence_replicates(*args, **kwargs):
    return np.asarray(replicates(*args, **kwargs)[0])


def assert_unbiased(log_evidence, exact_log_evidence):
    ratio = np.exp(log_evidence - exact_log_evidence)
    standard_error = ratio.std(ddof=1) / np.sqrt(ratio.size)
    assert abs(ratio.mean() - 1.0) < Z_SCORE * standard_error


def kalman_log_evidence(rho, sigma_x, sigma_y, observations):
    """Exact log p(y) of linear_gaussian_1d(rho, sigma_x, sigma_y): a scalar Kalman filter."""
    mean, var, log_evidence = 0.0, sigma_x**2 / (1 - rho**2), 0.0
    for t, y in enumerate(observations[:, 0]):
        if t > 0:
            mean, var = rho * mean, rho**2 * var + sigma_x**2
        innovation_var = var + sigma_y**2
        log_evidence += stats.norm.logpdf(y, mean, np.sqrt(innovation_var))
        gain = var / innovation_var
        mean, var = mean + gain * (y - mean), (1 - gain) * var
    return log_evidence


def test_test_oracle_reproduces_the_reference_kalman_value():
    assert kalman_log_evidence(0.9, 1.0, 0.2, OBSERVATIONS) == pytest.approx(
        KALMAN_LOG_EVIDENCE, abs=1e-6
    )


@pytest.mark.parametrize("scheme", sorted(resampling.RESAMPLING_SCHEMES))
def test_evidence_is_unbiased_for_every_scheme_and_ess_threshold(key, scheme):
    # sigma_y = 1: weights degenerate slowly, so threshold 0.5 mixes resampled and
    # non-resampled steps, and threshold 0 (plain importance sampling) is not too noisy.
    model = models.linear_gaussian_1d(sigma_y=1.0)
    exact = kalman_log_evidence(0.9, 1.0, 1.0, OBSERVATIONS)
    fraction_resampled = []
    for i, threshold in enumerate([0.0, 0.5, 1.0]):
        log_evidence, resampled = replicates(
            jax.random.fold_in(key, i),
            model,
            200,
            2000,
            resampling=scheme,
            ess_threshold=threshold,
        )
        assert_unbiased(np.asarray(log_evidence), exact)
        fraction_resampled.append(np.asarray(resampled[:, 1:]).mean())
    assert fraction_resampled[0] == 0.0
    assert 0.1 < fraction_resampled[1] < 0.9
    assert fraction_resampled[2] == 1.0


ANNEALED = {
    "ess": filtering.AnnealingSettings(schedule=1, ess_trigger=1.0, early_phase=1.0),
    "entropy": filtering.AnnealingSettings(schedule=2, ess_trigger=1.0, early_phase=1.0),
}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"proposal": "guided"},
        {"annealing": ANNEALED["ess"]},
        {"annealing": ANNEALED["entropy"]},
        {"annealing": ANNEALED["ess"], "resampling": "multinomial", "ess_threshold": 1.0},
    ],
    ids=["bootstrap", "guided", "annealed-ess", "annealed-entropy", "annealed-multinomial"],
)
def test_evidence_is_unbiased_on_the_reference_example(key, options):
    log_evidence = log_evidence_replicates(key, DEFAULT_MODEL, 200, 2000, **options)
    assert_unbiased(log_evidence, KALMAN_LOG_EVIDENCE)


def test_annealing_flattens_resampling_early_and_keeps_the_bookkeeping(key):
    info = filtering.run(
        key, DEFAULT_MODEL, OBSERVATIONS, 20, ess_threshold=1.0, annealing=ANNEALED["ess"]
    )
    temperature = np.asarray(info.temperature)
    # At t = 1 (progress 0.2) the ESS fraction of informative weights is far below 0.8,
    # so tau = (1 - 0.2) / (ESS / N) > 1.
    assert temperature[1] > 1.0
    assert np.all(temperature >= 1.0)
    np.testing.assert_allclose(
        jax.scipy.special.logsumexp(info.log_weights, axis=1), 0.0, atol=1e-12
    )
    np.testing.assert_allclose(np.cumsum(info.log_evidence_increment), info.log_evidence)


def test_log_evidence_is_biased_downward_with_few_particles(key):
    # Jensen: E log Z_hat < log Z. With N = 10 the gap is several units.
    log_evidence = log_evidence_replicates(key, DEFAULT_MODEL, 10, 1000)
    standard_error = log_evidence.std(ddof=1) / np.sqrt(log_evidence.size)
    assert log_evidence.mean() + Z_SCORE * standard_error < KALMAN_LOG_EVIDENCE


def test_log_evidence_matches_the_reference_simulation(key):
    # Reference: bootstrap, systematic resampling at every step, N = 100, 2000 runs:
    # mean log Z_hat = -7.291 with sd 0.531 (an independent implementation).
    log_evidence = log_evidence_replicates(key, DEFAULT_MODEL, 100, 2000, ess_threshold=1.0)
    standard_error = np.hypot(
        log_evidence.std(ddof=1) / np.sqrt(log_evidence.size), 0.531 / np.sqrt(2000)
    )
    assert abs(log_evidence.mean() - (-7.291)) < Z_SCORE * standard_error


def test_guided_proposal_has_lower_evidence_variance(key):
    # A one-sided F test: the sample variance ratio must exceed the upper 1e-4 quantile
    # of F(R-1, R-1), i.e. the guided filter is significantly less variable.
    num_replicates = 1000
    key_bootstrap, key_guided = jax.random.split(key)
    bootstrap = log_evidence_replicates(key_bootstrap, DEFAULT_MODEL, 10, num_replicates)
    guided = log_evidence_replicates(
        key_guided, DEFAULT_MODEL, 10, num_replicates, proposal="guided"
    )
    ratio = bootstrap.var(ddof=1) / guided.var(ddof=1)
    assert ratio > stats.f.ppf(1 - 1e-4, num_replicates - 1, num_replicates - 1)


def test_guided_evidence_of_one_observation_is_exact(key):
    num_particles = 7
    info = filtering.run(key, DEFAULT_MODEL, OBSERVATIONS[:1], num_particles, proposal="guided")
    exact = stats.norm.logpdf(0.5, 0.0, np.sqrt(1.0 / (1.0 - 0.81) + 0.04))
    assert info.log_evidence.shape == (1,)
    assert info.log_evidence[0] == pytest.approx(exact, abs=1e-10)
    np.testing.assert_allclose(info.log_weights, -np.log(num_particles), atol=1e-10)


def test_info_shapes_dtypes_and_invariants(key):
    model = models.linear_gaussian_2d()
    num_steps, num_particles = 12, 16
    _, observations = model.simulate(key, num_steps)
    info = filtering.run(jax.random.fold_in(key, 1), model, observations, num_particles)
    expected = filtering.FilterInfo(
        particles=((num_steps, num_particles, 2), jnp.float64),
        log_weights=((num_steps, num_particles), jnp.float64),
        ancestors=((num_steps, num_particles), jnp.int32),
        ess=((num_steps,), jnp.float64),
        resampled=((num_steps,), jnp.bool_),
        temperature=((num_steps,), jnp.float64),
        log_evidence_increment=((num_steps,), jnp.float64),
        log_evidence=((num_steps,), jnp.float64),
    )
    assert jax.tree.map(lambda a: (a.shape, a.dtype), info) == expected
    np.testing.assert_allclose(
        jax.scipy.special.logsumexp(info.log_weights, axis=1), 0.0, atol=1e-12
    )
    np.testing.assert_allclose(np.cumsum(info.log_evidence_increment), info.log_evidence)
    np.testing.assert_allclose(
        info.ess, jax.vmap(resampling.effective_sample_size)(info.log_weights)
    )
    assert np.all((info.ess >= 1 - 1e-9) & (info.ess <= num_particles + 1e-9))
    assert not info.resampled[0]
    np.testing.assert_array_equal(info.temperature, 1.0)
    # Resampling happens exactly when the previous ESS is below half of N (the default).
    np.testing.assert_array_equal(info.resampled[1:], info.ess[:-1] < 0.5 * num_particles)
    identity = np.arange(num_particles)
    for t in np.flatnonzero(~np.asarray(info.resampled)):
        np.testing.assert_array_equal(info.ancestors[t], identity)


def test_step_by_step_equals_run(key):
    # run = init, then step inside a scan, with keys split as documented.
    num_steps = OBSERVATIONS.shape[0]
    info = filtering.run(key, DEFAULT_MODEL, OBSERVATIONS, 20)
    key_init, key_steps = jax.random.split(key)
    state, first = jax.jit(filtering.init, static_argnums=3)(
        key_init, DEFAULT_MODEL, OBSERVATIONS[0], 20
    )
    step = jax.jit(partial(filtering.step, horizon=num_steps))
    history = [first]
    step_keys = jax.random.split(key_steps, num_steps - 1)
    for t in range(1, num_steps):
        state, one = step(step_keys[t - 1], state, DEFAULT_MODEL, t, OBSERVATIONS[t])
        history.append(one)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *history)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), info, stacked)


def test_no_annealing_schedule_reproduces_plain_resampling(key):
    plain = filtering.run(key, DEFAULT_MODEL, OBSERVATIONS, 20)
    off = filtering.run(
        key,
        DEFAULT_MODEL,
        OBSERVATIONS,
        20,
        annealing=filtering.AnnealingSettings(schedule=0, ess_trigger=1.0),
    )
    jax.tree.map(np.testing.assert_array_equal, plain, off)


@pytest.mark.parametrize(
    "model",
    [models.StochasticVolatilitySSM(), models.GrowthModelSSM()],
    ids=["stochastic_volatility", "growth"],
)
def test_nonlinear_models_run_and_reject_the_guided_proposal(key, model):
    _, observations = model.simulate(key, 20)
    info = filtering.run(key, model, observations, 64)
    assert np.all(np.isfinite(info.log_evidence))
    with pytest.raises(ValueError, match="has none"):
        filtering.run(key, model, observations, 64, proposal="guided")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resampling": "sorted"}, "unknown resampling scheme 'sorted'"),
        ({"proposal": "auxiliary"}, "unknown proposal 'auxiliary'"),
        ({"num_particles": 0}, "num_particles must be at least 1, got 0"),
        ({"observations": OBSERVATIONS[:, 0]}, r"shape \(T, k\).*got \(5,\)"),
    ],
)
def test_bad_options_raise_clear_errors(key, options, message):
    arguments = {"num_particles": 10, "observations": OBSERVATIONS} | options
    with pytest.raises(ValueError, match=message):
        filtering.run(key, DEFAULT_MODEL, **arguments)


def test_lineages_follow_the_ancestors(key):
    info = filtering.run(key, DEFAULT_MODEL, np.tile(OBSERVATIONS, (4, 1)), 25)
    ancestors = np.asarray(info.ancestors)
    lineages = np.asarray(filtering.trace_lineages(ancestors))
    num_steps, num_particles = ancestors.shape
    assert lineages.shape == (num_steps, num_particles)
    np.testing.assert_array_equal(lineages[-1], np.arange(num_particles))
    for t in range(num_steps - 1):
        np.testing.assert_array_equal(lineages[t], ancestors[t + 1][lineages[t + 1]])

    counts = np.asarray(filtering.count_surviving_lineages(ancestors))
    np.testing.assert_array_equal(counts, [np.unique(row).size for row in lineages])
    assert counts[-1] == num_particles
    assert np.all((counts >= 1) & (counts <= num_particles))
    assert np.all(np.diff(counts) >= 0)  # lineages merge going back in time
    assert counts[0] < num_particles  # with sigma_y = 0.2 and 20 steps, paths coalesce


def test_lineages_of_a_hand_made_genealogy():
    ancestors = np.array([[0, 1, 2], [1, 1, 2], [0, 0, 2], [2, 0, 1]])
    # Final particle 0 <- 2 (t=2) <- 2 (t=1) <- 2 (t=0);
    # final particle 1 <- 0 (t=2) <- 0 (t=1) <- 1 (t=0);
    # final particle 2 <- 1 (t=2) <- 0 (t=1) <- 1 (t=0).
    expected = np.array([[2, 1, 1], [2, 0, 0], [2, 0, 1], [0, 1, 2]])
    np.testing.assert_array_equal(filtering.trace_lineages(ancestors), expected)
    counts = jax.jit(filtering.count_surviving_lineages)(ancestors)
    np.testing.assert_array_equal(counts, [2, 2, 3, 3])


def test_continuous_parameters_never_retrace_but_particle_count_does(key):
    traces = []

    def record(info):
        traces.append(None)  # runs only while JAX traces the filter
        return info.log_evidence

    def run(model, num_particles=32, **options):
        return filtering.run(key, model, OBSERVATIONS, num_particles, record=record, **options)

    run(models.linear_gaussian_1d())
    compiled = len(traces)
    settings = [
        {"model": models.linear_gaussian_1d(rho=0.5, sigma_x=2.0, sigma_y=jnp.array(0.7))},
        {"model": models.linear_gaussian_1d(), "ess_threshold": 0.9},
        {"model": models.linear_gaussian_1d(), "ess_threshold": jnp.array(0.1)},
        {"model": models.linear_gaussian_1d(), "annealing": ANNEALED["ess"]},
        {
            "model": models.linear_gaussian_1d(),
            "annealing": filtering.AnnealingSettings(jnp.array(2), 0.3, jnp.array(0.8)),
        },
    ]
    for options in settings:
        run(**options)
    assert len(traces) == compiled

    sv_runs = [
        models.StochasticVolatilitySSM(),
        models.StochasticVolatilitySSM(rho=0.5),
        models.StochasticVolatilitySSM(mu=jnp.array(0.0), sigma=0.3),
    ]
    run(sv_runs[0])
    compiled = len(traces)
    for model in sv_runs[1:]:
        run(model)
    assert len(traces) == compiled

    run(models.linear_gaussian_1d(), num_particles=64)
    assert len(traces) > compiled


def test_run_vmaps_over_model_parameters(key):
    def log_evidence(rho):
        model = models.linear_gaussian_1d(rho=rho)
        return filtering.run(key, model, OBSERVATIONS, 50, record=final_log_evidence)

    batched = jax.vmap(log_evidence)(jnp.array([0.5, 0.9]))
    assert batched.shape == (2, OBSERVATIONS.shape[0])
    np.testing.assert_allclose(batched[0], log_evidence(0.5), rtol=1e-12)
    np.testing.assert_allclose(batched[1], log_evidence(0.9), rtol=1e-12)
