"""Flow matching on a mixture target, where the minimiser of the loss is known exactly.

Oracles:

* a closed form: from a source N(0, a^2 I_d) to a target N(mu, s^2 I_d) under cond-OT
  the conditional variance of the velocity given x_t is
  a^2 s^2 / ((1-t)^2 a^2 + t^2 s^2) per coordinate, whose integral over t is
  pi a s / 2, so the exact field's loss is L(u) = pi a s d / 2;
* the decomposition L(v) = L(u) + E||v - u||^2: per draw it is an algebraic identity
  plus a cross term 2 (v - u).(u - c) whose mean is zero exactly when u is the
  conditional mean of the regression target c given (t, x_t). Testing that mean
  against zero checks the sampler, the schedule and the exact field together; the same
  statistic with a wrong field is far from zero, so the test has power;
* training, judged against the exact field (velocity error) and by where the learned
  field carries noise (target log-likelihood of RK4 samples);
* a trace counter: moving the schedule, the target or the learning rate never
  recompiles a training chunk.

Statistical comparisons use |estimate - truth| < Z * standard error with Z = 4: a
two-sided false-failure rate of 6.3e-5 per comparison for a correct implementation
(each draw is independent; the sample sizes make the normal approximation good). The
seeds are fixed, so the outcome is deterministic; Z says how lucky a pass would be.
"""

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.paths import flow_matching, integrators, schedules

from .test_schedules import canonical_target

Z = 4.0
NUM_DRAWS = 16_384  # one size for every estimate, so the sampler compiles once

# Training used by several tests (one compiled chunk, reused).
WIDTH, DEPTH = 32, 2
CHUNK_STEPS, BATCH_SIZE, NUM_CHUNKS = 50, 128, 8
LEARNING_RATE = 1e-2
EVALUATION_SEED = 6  # the same draws before and after training
NEG_ENTROPY = -2.3803  # E_p log p of the canonical target (research digest, section 2.6)


def mean_and_standard_error(values):
    values = np.asarray(values)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


# --------------------------------------------------------------------------------------
# The loss and its floor, without training
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_scale", [None, 1.5])
def test_exact_field_loss_of_a_gaussian_target_is_pi_a_s_d_over_2(source_scale):
    scale, dim = 0.7, 2
    # One Gaussian, written as three identical components so that the sampler compiled
    # for the mixture tests below is reused.
    target = gmm.from_covariances([0.5, 0.3, 0.2], [[1.0, -0.5]] * 3, [scale**2 * np.eye(dim)] * 3)
    if source_scale is None:
        source, source_scale = None, 1.0  # the default N(0, I)
    else:
        source = gmm.from_covariances([1.0], [[0.0, 0.0]], [source_scale**2 * np.eye(dim)])
    schedule = schedules.CondOT()
    samples = flow_matching.sample_path(jax.random.key(1), schedule, target, NUM_DRAWS, source)
    exact = flow_matching.marginal_velocity(schedule, target, samples.times, samples.points, source)
    estimate, standard_error = mean_and_standard_error(
        jnp.sum((exact - samples.target_velocities) ** 2, axis=-1)
    )
    assert abs(estimate - np.pi * source_scale * scale * dim / 2) < Z * standard_error
    # The public estimator is the same average.
    floor = flow_matching.exact_field_loss(jax.random.key(1), schedule, target, NUM_DRAWS, source)
    np.testing.assert_allclose(floor, estimate, rtol=1e-12)


@pytest.mark.parametrize("name", ["condot", "cosine"])
def test_loss_is_floor_plus_velocity_error_with_a_mean_zero_cross_term(name):
    schedule = {"condot": schedules.CondOT(), "cosine": schedules.Cosine()}[name]
    target = canonical_target()
    untrained = flow_matching.VelocityNet(jax.random.key(2), 2, width=WIDTH, depth=DEPTH)
    samples = flow_matching.sample_path(jax.random.key(3), schedule, target, NUM_DRAWS)
    terms = flow_matching.decompose_loss(untrained, schedule, target, samples)

    # Per draw: an algebraic identity, up to rounding.
    np.testing.assert_allclose(
        terms.loss, terms.exact_field_loss + terms.velocity_error + terms.cross_term, rtol=1e-10
    )
    np.testing.assert_allclose(
        jnp.mean(terms.loss), flow_matching.regression_loss(untrained, samples), rtol=1e-12
    )
    # In expectation: the cross term vanishes, so L(v) - L(u) = E||v - u||^2.
    cross, cross_error = mean_and_standard_error(terms.cross_term)
    assert abs(cross) < Z * cross_error
    # The untrained network is clearly worse than the exact field.
    gap, gap_error = mean_and_standard_error(terms.loss - terms.exact_field_loss)
    assert gap > 0.5
    assert gap > 10 * gap_error


def test_cross_term_detects_a_field_that_is_not_the_conditional_mean():
    """Power check: the cosine path's exact field is the wrong u for cond-OT draws."""
    target = canonical_target()
    untrained = flow_matching.VelocityNet(jax.random.key(2), 2, width=WIDTH, depth=DEPTH)
    samples = flow_matching.sample_path(jax.random.key(3), schedules.CondOT(), target, NUM_DRAWS)
    terms = flow_matching.decompose_loss(untrained, schedules.Cosine(), target, samples)
    cross, cross_error = mean_and_standard_error(terms.cross_term)
    assert abs(cross) > 3 * Z * cross_error


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------

TRACES = []


class CountingPolynomial(NamedTuple):
    """The polynomial schedule t**n, noting every time JAX traces it."""

    exponent: jax.Array

    def alpha(self, t):
        TRACES.append(None)  # runs only while JAX traces
        return schedules.Polynomial(self.exponent).alpha(t)

    def sigma(self, t):
        return schedules.Polynomial(self.exponent).sigma(t)

    def alpha_dot(self, t):
        return schedules.Polynomial(self.exponent).alpha_dot(t)

    def sigma_dot(self, t):
        return schedules.Polynomial(self.exponent).sigma_dot(t)


# Cond-OT written as the polynomial schedule with exponent 1, so that the no-retrace test
# can move the exponent and reuse the chunk compiled for the training run.
TRAINING_SCHEDULE = CountingPolynomial(1.0)


@functools.partial(jax.jit, static_argnames="num_steps")
def endpoint_log_likelihood(key, params, target, num_steps=8):
    """Mean target log-density of noise carried to t = 1 by the learned field (RK4)."""
    noise = jax.random.normal(key, (512, 2), dtype=target.means.dtype)
    field = functools.partial(flow_matching.learned_velocity, params)
    path = integrators.rk4(field, noise, integrators.uniform_times(num_steps))
    return jnp.mean(gmm.log_prob(target, path[-1]))


def train(key, state, schedule, target, learning_rate):
    return flow_matching.train_chunk(
        key, state, schedule, target, learning_rate, num_steps=CHUNK_STEPS, batch_size=BATCH_SIZE
    )


class TrainingRun(NamedTuple):
    initial: flow_matching.TrainingState
    final: flow_matching.TrainingState
    losses: np.ndarray
    before: flow_matching.LossDecomposition
    after: flow_matching.LossDecomposition


@pytest.fixture(scope="module")
def training_run():
    target = canonical_target()
    params = flow_matching.VelocityNet(jax.random.key(4), 2, width=WIDTH, depth=DEPTH)
    initial = state = flow_matching.init_training(params)
    losses = []
    for key in jax.random.split(jax.random.key(5), NUM_CHUNKS):
        state, info = train(key, state, TRAINING_SCHEDULE, target, LEARNING_RATE)
        losses.append(info.loss)
    evaluation_key, schedule = jax.random.key(EVALUATION_SEED), schedules.CondOT()
    return TrainingRun(
        initial=initial,
        final=state,
        losses=np.concatenate(losses),
        before=flow_matching.evaluate(evaluation_key, initial.params, schedule, target, NUM_DRAWS),
        after=flow_matching.evaluate(evaluation_key, state.params, schedule, target, NUM_DRAWS),
    )


def test_training_lowers_the_loss_towards_the_floor_and_the_velocity_error(training_run):
    before, after = training_run.before, training_run.after
    assert int(training_run.final.step) == NUM_CHUNKS * CHUNK_STEPS
    assert training_run.losses.shape == (NUM_CHUNKS * CHUNK_STEPS,)
    # Same evaluation draws before and after, so the floor is the same number.
    np.testing.assert_allclose(before.exact_field_loss, after.exact_field_loss, rtol=1e-12)
    assert before.loss > before.exact_field_loss + 1.0
    assert after.loss < before.loss - 1.0
    assert after.velocity_error < 0.25 * before.velocity_error
    # Per-step batch losses fall too: the last chunk's mean is below the first's.
    first, last = training_run.losses[:CHUNK_STEPS], training_run.losses[-CHUNK_STEPS:]
    assert last.mean() < first.mean() - 0.5
    # The one-number helpers agree with the decomposition on the same draws.
    params, target = training_run.final.params, canonical_target()
    key = jax.random.key(EVALUATION_SEED)
    np.testing.assert_allclose(
        flow_matching.velocity_error(key, params, schedules.CondOT(), target, NUM_DRAWS),
        after.velocity_error,
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        flow_matching.conditional_flow_matching_loss(
            key, params, schedules.CondOT(), target, NUM_DRAWS
        ),
        after.loss,
        rtol=1e-12,
    )


def test_learned_field_carries_noise_closer_to_the_target(training_run):
    target, key = canonical_target(), jax.random.key(7)
    before = endpoint_log_likelihood(key, training_run.initial.params, target)
    after = endpoint_log_likelihood(key, training_run.final.params, target)
    # Exact samples average log p = -H(p); training closes more than half of the gap.
    assert after - before > 0.5 * (NEG_ENTROPY - before)


def test_zero_learning_rate_leaves_the_network_unchanged(training_run):
    state = training_run.final
    new_state, info = train(jax.random.key(8), state, TRAINING_SCHEDULE, canonical_target(), 0.0)
    for old, new in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(new_state.params), strict=True
    ):
        np.testing.assert_array_equal(old, new)
    assert int(new_state.step) == int(state.step) + CHUNK_STEPS
    assert np.all(np.asarray(info.grad_norm) > 0)


def test_moving_schedule_target_or_learning_rate_never_retraces(training_run):
    traced = len(TRACES)
    assert traced > 0  # the training run traced the chunk once
    target = canonical_target()
    moved_target = target._replace(
        means=target.means + 0.5, log_weights=jnp.log(jnp.array([0.2, 0.2, 0.6]))
    )
    state = training_run.final
    for schedule, mixture, learning_rate in [
        (CountingPolynomial(2.5), target, LEARNING_RATE),
        (CountingPolynomial(jnp.asarray(1.5)), target, LEARNING_RATE),  # array, not float
        (TRAINING_SCHEDULE, moved_target, LEARNING_RATE),
        (TRAINING_SCHEDULE, target, 3e-2),
        (TRAINING_SCHEDULE, target, jnp.asarray(3e-2, dtype=jnp.float32)),
    ]:
        state, info = train(jax.random.key(9), state, schedule, mixture, learning_rate)
        assert np.all(np.isfinite(np.asarray(info.loss)))
    assert len(TRACES) == traced


# --------------------------------------------------------------------------------------
# The learned field on batches
# --------------------------------------------------------------------------------------


def test_learned_velocity_takes_one_time_or_one_per_point(training_run):
    params = training_run.final.params
    points = jax.random.normal(jax.random.key(10), (4, 5, 2))
    velocity = jax.jit(flow_matching.learned_velocity)
    shared = velocity(params, 0.3, points)
    assert shared.shape == points.shape
    per_point = velocity(params, jnp.full((4, 5), 0.3), points)
    np.testing.assert_allclose(shared, per_point, rtol=1e-14)
    one_point = jax.jit(lambda params, t, x: params(t, x))(params, 0.3, points[2, 1])
    np.testing.assert_allclose(shared[2, 1], one_point, rtol=1e-14)
    # Every leaf is a trainable array: the network passes through jax.jit as it is.
    assert all(eqx.is_inexact_array(leaf) for leaf in jax.tree.leaves(params))
