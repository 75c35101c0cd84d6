"""Resampling schemes, weight summaries and entropic annealing temperatures.

Statistical assertions compare a mean over R seeded replicates with its expectation
within Z_SCORE standard errors. Z_SCORE = 4 gives a two-sided false-failure rate of
about 6e-5 per assertion under the normal approximation.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core.smc import resampling

Z_SCORE = 4.0
SCHEMES = sorted(resampling.RESAMPLING_SCHEMES)

# N W = [3.3, 0.2, 1.7, 0, 2.6, 0.45, 1.75]: no integer count except the zero weight.
WEIGHTS = np.array([3.3, 0.2, 1.7, 0.0, 2.6, 0.45, 1.75]) / 10.0
NUM_PARTICLES = WEIGHTS.shape[0]
NUM_REPLICATES = 4000


@partial(jax.jit, static_argnames=("name", "num_samples"))
def offspring_counts(key, name, num_samples):
    """Offspring counts (R, N) of R = NUM_REPLICATES independent resamplings of WEIGHTS."""
    scheme = resampling.RESAMPLING_SCHEMES[name]
    keys = jax.random.split(key, NUM_REPLICATES)
    ancestors = jax.vmap(lambda k: scheme(k, jnp.asarray(WEIGHTS), num_samples))(keys)
    return jax.vmap(lambda a: jnp.bincount(a, length=NUM_PARTICLES))(ancestors)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("num_samples", [NUM_PARTICLES, 10, 25])
def test_mean_offspring_counts_are_num_samples_times_weights(key, name, num_samples):
    # Var O_i <= M W_i (1 - W_i), the multinomial variance, for all four schemes
    # (Douc, Cappe & Moulines 2005; for systematic it is f (1 - f) with f = frac(M W_i),
    # which is also below it). The bound gives a conservative standard error.
    counts = np.asarray(offspring_counts(key, name, num_samples))
    expected = num_samples * WEIGHTS
    standard_error = np.sqrt(num_samples * WEIGHTS * (1 - WEIGHTS) / NUM_REPLICATES)
    assert np.all(np.abs(counts.mean(axis=0) - expected) <= Z_SCORE * standard_error)
    assert np.all(counts.sum(axis=1) == num_samples)
    assert np.all(counts[:, WEIGHTS == 0] == 0)


def count_bounds(name, num_samples):
    """Smallest and largest possible offspring counts of each particle under a scheme."""
    scaled = num_samples * WEIGHTS
    floor = np.floor(scaled)
    bounds = {
        "multinomial": (np.zeros_like(scaled), np.full_like(scaled, num_samples)),
        "systematic": (floor, floor + 1),
        "stratified": (floor - 1, np.ceil(scaled) + 1),
        "residual": (floor, floor + num_samples - floor.sum()),
    }
    return bounds[name]


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("num_samples", [NUM_PARTICLES, 10, 25])
def test_offspring_counts_stay_within_the_scheme_bounds(key, name, num_samples):
    # systematic: floor(M W) or floor(M W) + 1; stratified: within one of floor and ceil;
    # residual: at least the floor(M W) deterministic copies.
    counts = np.asarray(offspring_counts(key, name, num_samples))
    lowest, highest = count_bounds(name, num_samples)
    assert np.all((counts >= lowest) & (counts <= highest))


def test_residual_with_integer_counts_is_deterministic(key):
    weights = jnp.array([0.5, 0.25, 0.25])
    ancestors = resampling.residual(key, weights, 4)
    np.testing.assert_array_equal(ancestors, [0, 0, 1, 2])


@pytest.mark.parametrize("name", SCHEMES)
def test_all_weight_on_one_particle_selects_only_that_particle(key, name):
    winners = jnp.array([0, 3, NUM_PARTICLES - 1])
    log_weights = jnp.where(jnp.arange(NUM_PARTICLES) == winners[:, None], 0.0, -jnp.inf)
    weights = jax.vmap(resampling.normalize)(log_weights)
    for num_samples in [1, 12]:
        ancestors = jax.vmap(resampling.RESAMPLING_SCHEMES[name], in_axes=(None, 0, None))(
            key, weights, num_samples
        )
        np.testing.assert_array_equal(ancestors, np.repeat(winners[:, None], num_samples, 1))


@pytest.mark.parametrize("name", SCHEMES)
def test_schemes_run_under_jit_and_vmap_over_keys_and_weights(key, name):
    scheme = resampling.RESAMPLING_SCHEMES[name]
    keys = jax.random.split(key, 3)
    weights = jax.random.dirichlet(key, jnp.ones(5), (3,))
    batched = jax.jit(jax.vmap(scheme, in_axes=(0, 0, None)), static_argnums=2)(keys, weights, 8)
    assert batched.shape == (3, 8)
    assert batched.dtype == jnp.int32
    one_by_one = np.stack([scheme(k, w, 8) for k, w in zip(keys, weights, strict=True)])
    np.testing.assert_array_equal(batched, one_by_one)


def test_schemes_accept_weights_that_sum_just_below_one(key):
    # A float cumulative sum may end below 1; indices must still be valid.
    weights = jnp.full(3, 1.0 / 3.0, dtype=jnp.float32) * (1 - 1e-6)
    for scheme in resampling.RESAMPLING_SCHEMES.values():
        ancestors = np.asarray(scheme(key, weights, 300))
        assert ancestors.min() >= 0
        assert ancestors.max() <= 2


def test_normalize_is_softmax_and_safe_for_huge_log_weights():
    log_weights = jnp.array([1000.0, 999.0, -jnp.inf, 998.0])
    weights = resampling.normalize(log_weights)
    expected = np.exp([2.0, 1.0, -np.inf, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    np.testing.assert_allclose(weights, expected, rtol=1e-12)


def test_effective_sample_size_extremes_and_shift_invariance():
    num = 8
    assert resampling.effective_sample_size(jnp.zeros(num)) == pytest.approx(num)
    one_hot = jnp.full(num, -jnp.inf).at[2].set(5.0)
    assert resampling.effective_sample_size(one_hot) == pytest.approx(1.0)
    log_weights = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
    expected = 1.0 / np.sum(np.array([0.1, 0.2, 0.3, 0.4]) ** 2)
    assert resampling.effective_sample_size(log_weights) == pytest.approx(expected)
    assert resampling.effective_sample_size(log_weights + 700.0) == pytest.approx(expected)


def test_normalized_entropy_extremes():
    assert resampling.normalized_entropy(jnp.zeros(5)) == pytest.approx(1.0)
    assert resampling.normalized_entropy(jnp.array([0.0, -jnp.inf, -jnp.inf])) == 0.0
    assert resampling.normalized_entropy(jnp.zeros(1)) == 1.0
    two = resampling.normalized_entropy(jnp.log(jnp.array([0.25, 0.75])))
    assert two == pytest.approx(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) / np.log(2))


def test_ess_temperature_unit_values():
    assert resampling.ess_temperature(0.2, 0.2) == pytest.approx(4.0)
    assert resampling.ess_temperature(0.5, 0.8) == pytest.approx(1.0)


def test_entropy_temperature_unit_values():
    assert resampling.entropy_temperature(0.5, 0.3) == pytest.approx(1 / 0.65)
    for progress in [0.0, 0.3, 0.9, 1.0]:
        assert resampling.entropy_temperature(1.0, progress) == pytest.approx(1.0)


def test_temperatures_are_never_below_one(key):
    key_rho, key_pi, key_weights = jax.random.split(key, 3)
    fractions = jax.random.uniform(key_rho, (1000,), minval=1e-3, maxval=1.0)
    progress = jax.random.uniform(key_pi, (1000,))
    assert jnp.all(resampling.ess_temperature(fractions, progress) >= 1.0)
    assert jnp.all(resampling.entropy_temperature(fractions, progress) >= 1.0)
    log_weights = 5.0 * jax.random.normal(key_weights, (1000, 6))
    schedules = jnp.arange(4)  # 3 is not a schedule: no annealing
    temperatures = jax.jit(
        jax.vmap(
            jax.vmap(resampling.annealing_temperature, in_axes=(0, 0, None, None, None)),
            in_axes=(None, None, 0, None, None),
        )
    )(log_weights, progress, schedules, 1.0, 1.0)
    assert jnp.all(temperatures >= 1.0)
    assert jnp.all(temperatures[jnp.array([0, 3])] == 1.0)


DEGENERATE = jnp.array([0.0, -6.0, -6.0, -6.0, -6.0])  # ESS / N is about 0.21
EVEN = jnp.zeros(5)  # ESS / N = 1


@pytest.mark.parametrize("schedule", [1, 2])
def test_annealing_is_off_when_ess_is_high_or_the_run_is_late(schedule):
    assert resampling.annealing_temperature(EVEN, 0.1, schedule) == 1.0
    assert resampling.annealing_temperature(DEGENERATE, 0.5, schedule) == 1.0
    assert resampling.annealing_temperature(DEGENERATE, 0.9, schedule) == 1.0
    # The same weights, early in the run: annealing is on.
    assert resampling.annealing_temperature(DEGENERATE, 0.2, schedule) > 1.0


def test_annealing_applies_the_selected_schedule():
    progress = 0.2
    ess_fraction = resampling.effective_sample_size(DEGENERATE) / 5
    entropy = resampling.normalized_entropy(DEGENERATE)
    temperature = jax.jit(resampling.annealing_temperature)
    assert temperature(DEGENERATE, progress, 0, 0.5, 0.5) == 1.0
    assert temperature(DEGENERATE, progress, 1, 0.5, 0.5) == pytest.approx(
        resampling.ess_temperature(ess_fraction, progress)
    )
    assert temperature(DEGENERATE, progress, 2, 0.5, 0.5) == pytest.approx(
        resampling.entropy_temperature(entropy, progress)
    )
    # Thresholds are traced: a stricter trigger switches annealing off.
    assert temperature(DEGENERATE, progress, 1, 0.1, 0.5) == 1.0
    assert temperature(DEGENERATE, progress, 1, 0.5, 0.1) == 1.0


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        (1.0, [0.870, 0.043, 0.043, 0.043]),
        (2.0, [0.599, 0.134, 0.134, 0.134]),
        (4.0, [0.414, 0.195, 0.195, 0.195]),
    ],
)
def test_tempered_resampling_probabilities(temperature, expected):
    scores = jnp.array([3.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(resampling.normalize(scores / temperature), expected, atol=5e-4)
