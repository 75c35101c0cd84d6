"""Integrators: reference noise-to-data map, convergence orders, same-marginals SDEs.

Oracles: the research digest's RK4 map (section 0.6, computed independently with numpy
and 2000 steps); the scheduler-change theorem (every schedule with alpha_0 = 0,
sigma_0 = 1 gives the same map); the known convergence orders of each method; and the
target mixture's exact mean and covariance for SDE samples.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.paths import fields, integrators

from .test_schedules import SCHEDULES, canonical_target

STARTS = jnp.array([[0.5, -1.0], [-1.2, 0.4], [1.5, 1.5]])
ENDS = np.array([[0.087327, -1.993842], [-2.396847, 0.164373], [2.894631, 1.826764]])


def exact_velocity(schedule, target):
    return lambda t, x: fields.velocity(fields.marginal(schedule, target, t), x)


@functools.partial(jax.jit, static_argnames=("solver", "num_steps"))
def flow(schedule, target, x0, *, solver, num_steps):
    times = integrators.uniform_times(num_steps)
    return integrators.ODE_SOLVERS[solver](exact_velocity(schedule, target), x0, times)


@pytest.mark.parametrize("name", ["condot", "cosine", "polynomial", "linear_vp"])
def test_every_schedule_carries_noise_to_the_same_data_point(name):
    ends = flow(SCHEDULES[name], canonical_target(), STARTS, solver="rk4", num_steps=400)[-1]
    np.testing.assert_allclose(ends, ENDS, atol=2e-6)


def test_trajectory_shape_and_start():
    path = flow(SCHEDULES["condot"], canonical_target(), STARTS, solver="heun", num_steps=7)
    assert path.shape == (8, 3, 2)
    np.testing.assert_array_equal(path[0], STARTS)


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_convergence_order(solver, order):
    """Doubling the steps divides the endpoint error by about 2^order."""
    target = canonical_target()
    starts = jax.random.normal(jax.random.key(0), (64, 2))
    reference = flow(SCHEDULES["cosine"], target, starts, solver="rk4", num_steps=1024)[-1]
    errors = [
        float(jnp.mean(jnp.linalg.norm(
            flow(SCHEDULES["cosine"], target, starts, solver=solver, num_steps=n)[-1] - reference,
            axis=-1,
        )))
        for n in (32, 64)
    ]  # fmt: skip
    observed_order = np.log2(errors[0] / errors[1])
    assert order - 0.35 <= observed_order <= order + 0.6, errors


@functools.partial(jax.jit, static_argnames=("num_particles", "num_steps"))
def sde_samples(key, schedule, target, level, *, num_particles, num_steps):
    key_start, key_path = jax.random.split(key)
    x0 = jax.random.normal(key_start, (num_particles, 2))

    def velocity_and_score(t, x):
        return fields.velocity_and_score(fields.marginal(schedule, target, t), x)

    diffusion = integrators.diffusion_level(level)
    times = integrators.uniform_times(num_steps)
    return integrators.euler_maruyama(key_path, velocity_and_score, diffusion, x0, times)[-1]


@pytest.mark.parametrize("level", [0.0, 0.3, 1.0])
def test_sde_samples_have_the_target_moments(level):
    """Every diffusion level gives the target's mean and covariance.

    Tolerance: z = 4.5 standard errors (false-failure rate ~7e-6 per statistic, 5 statistics
    per level) plus the Euler-Maruyama bias at 500 steps, which the research digest's
    1000-step table puts at <= 0.012 for eps <= 2 (we allow 0.03 at half the steps).
    """
    target = canonical_target()
    samples = sde_samples(
        jax.random.key(11), SCHEDULES["condot"], target, level, num_particles=40_000,
        num_steps=500,
    )  # fmt: skip
    n = samples.shape[0]
    mean, cov = jnp.mean(samples, axis=0), jnp.cov(samples.T)
    centred = samples - gmm.mean(target)
    mean_se = jnp.sqrt(jnp.diag(gmm.covariance(target)) / n)
    products = jnp.stack([centred[:, 0] ** 2, centred[:, 0] * centred[:, 1], centred[:, 1] ** 2])
    cov_se = jnp.std(products, axis=1) / np.sqrt(n)
    bias = 0.03
    assert np.all(np.abs(mean - gmm.mean(target)) <= 4.5 * mean_se + bias)
    exact_cov = gmm.covariance(target)
    observed = jnp.array([cov[0, 0], cov[0, 1], cov[1, 1]])
    expected = jnp.array([exact_cov[0, 0], exact_cov[0, 1], exact_cov[1, 1]])
    assert np.all(np.abs(observed - expected) <= 4.5 * cov_se + bias), (observed, expected)


def test_diffusion_level_shapes():
    sigma = SCHEDULES["cosine"].sigma
    constant = integrators.diffusion_level(0.5)
    fading = integrators.diffusion_level(0.5, "noise", sigma)
    t = jnp.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(constant(t), 0.5)
    np.testing.assert_allclose(fading(t), 0.5 * sigma(t) ** 2)
    with pytest.raises(ValueError, match="constant"):
        integrators.diffusion_level(0.5, "wiggly")


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_endpoint_with_traced_step_count_matches_the_trajectory(solver):
    traces = []

    @jax.jit
    def end(schedule, target, x0, num_steps):
        traces.append(1)
        return integrators.endpoint(solver, exact_velocity(schedule, target), x0, num_steps)

    target = canonical_target()
    for n in (3, 10):
        path = flow(SCHEDULES["cosine"], target, STARTS, solver=solver, num_steps=n)
        np.testing.assert_allclose(
            end(SCHEDULES["cosine"], target, STARTS, n), path[-1], rtol=1e-12
        )
    assert len(traces) == 1
