"""Schedules: closed-form derivatives, endpoints, SNR inverse, and schedule change.

The derivative oracle is ``jax.jvp`` of the schedule's own ``alpha``/``sigma``, which is
independent of the hand-written ``alpha_dot``/``sigma_dot``. The schedule-change oracle
is the exact mixture velocity of the new schedule (the change of variables is exact for
any field, so the two must agree to rounding error).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.paths import fields, schedules

SCHEDULES = {
    "condot": schedules.CondOT(),
    "cosine": schedules.Cosine(),
    "polynomial": schedules.Polynomial(jnp.asarray(2.5)),
    "linear_vp": schedules.LinearVP(),
    "vp": schedules.VP(jnp.asarray(0.1), jnp.asarray(20.0)),
    "ve": schedules.VE(jnp.asarray(0.01), jnp.asarray(10.0)),
}
INTERIOR_TIMES = jnp.array([0.013, 0.2, 0.5, 0.77, 0.98])


def canonical_target():
    return gmm.from_covariances(
        [0.5, 0.3, 0.2],
        [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]],
        [0.25 * np.eye(2), [[0.5, 0.2], [0.2, 0.3]], 0.1 * np.eye(2)],
    )


@pytest.mark.parametrize("name", SCHEDULES)
def test_closed_form_derivatives_match_jvp(name):
    schedule = SCHEDULES[name]
    for t in INTERIOR_TIMES:
        _, alpha_tangent = jax.jvp(schedule.alpha, (t,), (jnp.ones_like(t),))
        _, sigma_tangent = jax.jvp(schedule.sigma, (t,), (jnp.ones_like(t),))
        np.testing.assert_allclose(schedule.alpha_dot(t), alpha_tangent, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(schedule.sigma_dot(t), sigma_tangent, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["condot", "cosine", "polynomial", "linear_vp"])
def test_noise_to_data_endpoints(name):
    c0 = schedules.coefficients(SCHEDULES[name], 0.0)
    c1 = schedules.coefficients(SCHEDULES[name], 1.0)
    np.testing.assert_allclose([c0.alpha, c0.sigma], [0.0, 1.0], atol=1e-12)
    # coefficients() stops at 1 - 1e-6, where sigma is at most sqrt(2e-6) for every schedule.
    np.testing.assert_allclose([c1.alpha, c1.sigma], [1.0, 0.0], atol=2e-3)


def test_vp_starts_near_but_not_at_pure_noise():
    c0 = schedules.coefficients(SCHEDULES["vp"], 0.0)
    np.testing.assert_allclose(c0.alpha, np.exp(-0.5 * (0.5 * 19.9 + 0.1)), rtol=1e-12)
    np.testing.assert_allclose(c0.alpha**2 + c0.sigma**2, 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", ["linear_vp", "vp"])
def test_velocity_coefficient_finite_at_the_data_end(name):
    """sigma_dot -> -inf at t = 1 for these two; sigma * sigma_dot stays finite."""
    c = schedules.coefficients(SCHEDULES[name], 1.0)
    assert np.isfinite(c.sigma * c.sigma_dot)
    assert np.isfinite(c.sigma_dot)


def test_tabulated_schedule_interpolates_and_differentiates_consistently():
    times = jnp.linspace(0.0, 1.0, 41)
    cosine = SCHEDULES["cosine"]
    table = schedules.Tabulated(
        times, cosine.alpha(times), cosine.sigma(times), cosine.alpha_dot(times),
        cosine.sigma_dot(times),
    )  # fmt: skip
    t = jnp.linspace(0.0, 1.0, 333)
    # Cubic Hermite error is h^4 |f''''| / 384 = (1/40)^4 (pi/2)^4 / 384 ~ 1.6e-9.
    np.testing.assert_allclose(table.alpha(t), cosine.alpha(t), atol=5e-9)
    np.testing.assert_allclose(table.sigma_dot(t), cosine.sigma_dot(t), atol=5e-6)
    for s in INTERIOR_TIMES:
        _, tangent = jax.jvp(table.alpha, (s,), (jnp.ones_like(s),))
        np.testing.assert_allclose(table.alpha_dot(s), tangent, rtol=1e-12)


@pytest.mark.parametrize("name", ["condot", "cosine", "polynomial", "linear_vp", "vp"])
def test_snr_inverse_inverts_the_signal_to_noise_ratio(name):
    schedule = SCHEDULES[name]
    snr = schedules.signal_to_noise(schedule, INTERIOR_TIMES)
    np.testing.assert_allclose(schedules.snr_inverse(schedule, snr), INTERIOR_TIMES, atol=1e-10)


@pytest.mark.parametrize(("old", "new"), [("condot", "vp"), ("cosine", "polynomial")])
def test_schedule_change_gives_the_exact_field_of_the_new_schedule(old, new):
    target = canonical_target()
    x = jnp.array([[0.3, -0.7], [-2.5, 1.0], [1.0, 1.0]])

    def old_velocity(t, points):
        return fields.velocity(fields.marginal(SCHEDULES[old], target, t), points)

    converted = schedules.change_schedule(old_velocity, SCHEDULES[old], SCHEDULES[new])
    for r in [0.05, 0.3, 0.5, 0.9, 0.995]:
        exact = fields.velocity(fields.marginal(SCHEDULES[new], target, r), x)
        np.testing.assert_allclose(converted(r, x), exact, rtol=1e-8, atol=1e-9)


def test_schedule_change_reference_value():
    """Research digest section 1.8: Cond-OT -> VP at r = 0.5, x = (0.3, -0.7)."""
    target = canonical_target()

    def condot_velocity(t, points):
        return fields.velocity(fields.marginal(SCHEDULES["condot"], target, t), points)

    converted = schedules.change_schedule(condot_velocity, SCHEDULES["condot"], SCHEDULES["vp"])
    np.testing.assert_allclose(
        converted(0.5, jnp.array([0.3, -0.7])), [-0.552636, -0.292576], atol=1e-6
    )


def test_switchable_schedule_matches_each_kind_and_never_retraces():
    table_times = jnp.linspace(0.0, 1.0, 17)
    table = schedules.Tabulated(
        table_times, table_times**2, 1.0 - table_times**2, 2 * table_times, -2 * table_times
    )
    members = {**SCHEDULES, "tabulated": table}
    traces = []

    @jax.jit
    def evaluate(schedule, t):
        traces.append(1)
        return schedules.coefficients(schedule, t)

    t = jnp.asarray(0.37)
    for index, name in enumerate(schedules.SWITCHABLE_KINDS):
        switchable = schedules.Switchable(
            jnp.asarray(index), SCHEDULES["polynomial"], SCHEDULES["vp"], SCHEDULES["ve"], table
        )
        np.testing.assert_allclose(
            evaluate(switchable, t), schedules.coefficients(members[name], t), rtol=1e-12
        )
    assert len(traces) == 1
