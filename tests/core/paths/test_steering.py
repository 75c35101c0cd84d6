"""Inference-time steering of a flow: fields from the velocity, SDE sampling, tilted targets,
best-of-N, SMC and Rollover Budget Forcing.

Oracles, each independent of the code under test:

* the exact mixture fields of :mod:`fields` (score, denoiser, velocity on any schedule)
  and the reference values of the research digest (seeds-paths-flows-dt.md section 0.6);
* the research digest's RK4 noise-to-data map and the schedule-change theorem;
* Bayes' rule for the tilted target, checked pointwise and by 2-D grid quadrature;
* the target mixture's exact moments for SDE samples, with a z x standard-error bound
  plus a declared Euler--Maruyama allowance;
* for SMC, the telescoping of the potentials (exact without resampling), the
  unbiasedness of Z-hat (against plain Monte Carlo over the same discretised SDE) and the
  exact posterior moments;
* for best-of-N and RBF, recomputed rewards and a replay of the rollover rules from the
  recorded proposals;
* trace counters: moving a continuous value never recompiles.

A regression test covers the noise end of the polynomial path, where the methods used to
return NaN (the velocity there carries no information about the data).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from posteriorlab.core import gmm
from posteriorlab.core.paths import fields, integrators, schedules, steering

from .test_integrators import ENDS, STARTS
from .test_schedules import SCHEDULES, canonical_target

X = jnp.array([0.3, -0.7])
POINTS = jnp.array([[0.3, -0.7], [-3.0, 2.0], [4.0, 0.5], [0.0, -1.9]])
# The observation of the research digest, section 0.6: y = A x + e, e ~ N(0, R).
A, NOISE, Y = [1.0, 0.5], 0.25, 0.8
LOG_EVIDENCE = -3.478576  # log p(y), section 0.6
# z = 4.5: a two-sided normal tail of 6.8e-6 per compared statistic.
Z = 4.5
TRACES = {"smc": [], "bon": [], "rbf": [], "sde": [], "tilt": []}


def observation():
    return steering.linear_gaussian_reward(A, NOISE, Y)


def condot_flow(target=None):
    return steering.MixtureFlow(
        schedules.CondOT(), canonical_target() if target is None else target
    )


def exact_fields(schedule, target, t, x):
    m = fields.marginal(schedule, target, t)
    return fields.velocity(m, x), fields.score(m, x), fields.expected_data(m, x)


# Jitted wrappers shared by the tests, each noting when JAX traces it. The statistical
# tests and the no-retrace tests use the same wrappers, so each shape compiles once.


@functools.partial(jax.jit, static_argnames=("num_particles",))
def run_smc(key, flow, reward, times, temperature, diffusion, ess_threshold, lookahead, *,
            num_particles):  # fmt: skip
    TRACES["smc"].append(None)  # runs only while JAX traces
    return steering.smc(
        key, flow, reward, times, num_particles=num_particles, temperature=temperature,
        diffusion=diffusion, ess_threshold=ess_threshold, lookahead=lookahead,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("num_particles",))
def smc_replicates(keys, flow, reward, times, lookahead, *, num_particles):
    """Independent SMC runs, one per key (lambda = 1, default SDE and ESS threshold)."""

    def one(key):
        return steering.smc(
            key, flow, reward, times, num_particles=num_particles, lookahead=lookahead
        )

    return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("num_samples",))
def run_best_of_n(key, flow, reward, times, diffusion, temperature, *, num_samples):
    TRACES["bon"].append(None)
    return steering.best_of_n(
        key, flow, reward, times, num_samples=num_samples, diffusion=diffusion,
        temperature=temperature,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("num_initial",))
def run_rbf(key, flow, reward, times, max_nfe, diffusion, *, num_initial):
    TRACES["rbf"].append(None)
    return steering.rollover_budget_forcing(
        key, flow, reward, times, max_nfe=max_nfe, num_initial=num_initial, diffusion=diffusion
    )


@functools.partial(jax.jit, static_argnames=("num_samples",))
def run_sde(key, flow, times, diffusion, *, num_samples):
    TRACES["sde"].append(None)
    return steering.sample_sde(key, flow, times, num_samples, 2, diffusion)


@jax.jit
def run_tilt(prior, reward, temperature):
    TRACES["tilt"].append(None)
    return steering.tilted_target(prior, reward, temperature)


# --------------------------------------------------------------------------------------
# Score and denoiser from the velocity
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_score_and_denoiser_from_velocity_match_the_exact_fields(name):
    """One velocity evaluation gives the exact score and denoiser, to rounding error."""
    schedule, target = SCHEDULES[name], canonical_target()
    # At t = 0 the polynomial path has alpha = alpha_dot = sigma_dot = 0: the velocity is 0
    # and the conversion 0/0 (the methods read it later, see test_polynomial_noise_end).
    times = [0.1, 0.5, 0.9, 0.98] if name == "polynomial" else [0.0, 0.1, 0.5, 0.9, 0.98]
    for t in times:
        c = schedules.coefficients(schedule, t)
        u, score, denoised = exact_fields(schedule, target, t, POINTS)
        np.testing.assert_allclose(
            steering.score_from_velocity(c, POINTS, u), score, rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(
            steering.denoise_from_velocity(c, POINTS, u), denoised, rtol=1e-10, atol=1e-10
        )
        flow_u, flow_score = steering.velocity_and_score(steering.MixtureFlow(schedule, target))(
            t, POINTS
        )
        np.testing.assert_allclose(flow_u, u, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(flow_score, score, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("name", "velocity", "score", "denoised"),
    [
        ("condot", (-0.468198, -1.764510), (-1.068198, -0.364510), (0.065901, -1.582255)),
        ("cosine", (-0.467371, -1.634027), (-0.597537, -0.340254), (0.001741, -1.230545)),
    ],
)
def test_reference_values_from_the_velocity(name, velocity, score, denoised):
    """Section 0.6 at x = (0.3, -0.7), t = 0.5, both from the model's velocity and from
    the printed velocity alone (the conversion has coefficients of size <= 2, so the
    6-digit rounding of the printed numbers allows 2e-6)."""
    c = schedules.coefficients(SCHEDULES[name], 0.5)
    u = steering.MixtureFlow(SCHEDULES[name], canonical_target()).velocity(0.5, X)
    np.testing.assert_allclose(u, velocity, atol=1e-6)
    np.testing.assert_allclose(steering.score_from_velocity(c, X, u), score, atol=1e-6)
    np.testing.assert_allclose(steering.denoise_from_velocity(c, X, u), denoised, atol=1e-6)
    printed = jnp.array(velocity)
    np.testing.assert_allclose(steering.score_from_velocity(c, X, printed), score, atol=2e-6)
    np.testing.assert_allclose(steering.denoise_from_velocity(c, X, printed), denoised, atol=2e-6)


def test_denoiser_is_the_point_itself_at_the_data_end():
    for name in ["condot", "cosine", "vp"]:
        c = schedules.coefficients(SCHEDULES[name], 1.0)
        u = steering.MixtureFlow(SCHEDULES[name], canonical_target()).velocity(1.0, POINTS)
        np.testing.assert_allclose(steering.denoise_from_velocity(c, POINTS, u), POINTS, atol=1e-5)


@pytest.mark.parametrize("exponent", [2.5, 0.7])
def test_polynomial_noise_end(exponent):
    """Regression: on alpha_t = t^n, n != 1, the velocity at t = 0 is 0 (n > 1) or infinite
    (n < 1), and every method returned NaN. The fields are now read at t = 1e-6 there: the
    readings are the exact fields at that time, and the methods' outputs are finite."""
    target, reward = canonical_target(), observation()
    schedule = schedules.Polynomial(jnp.asarray(exponent))
    flow = steering.MixtureFlow(schedule, target)
    u, score = steering.velocity_and_score(flow)(0.0, POINTS)
    exact_u, exact_score, _ = exact_fields(schedule, target, 1e-6, POINTS)
    np.testing.assert_allclose(u, exact_u, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(score, exact_score, rtol=1e-8, atol=1e-10)

    result = run_smc(jax.random.key(1), flow, reward, integrators.uniform_times(10), 1.0,
                     steering.DEFAULT_SDE, 0.5, None, num_particles=48)  # fmt: skip
    for name, value in result._asdict().items():
        assert np.all(np.isfinite(np.asarray(value))), name
    _, _, denoised = exact_fields(schedule, target, 1e-6, result.trajectory[0])
    np.testing.assert_allclose(result.denoised[0], denoised, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------------------
# Schedule conversion
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), [("condot", "cosine"), ("condot", "vp"),
                                          ("cosine", "linear_vp"), ("vp", "condot")])  # fmt: skip
def test_converted_flow_has_the_exact_fields_of_the_new_path(old, new):
    """The converted velocity is the exact velocity of the new path; so the score and the
    denoiser read off it (with the new schedule's coefficients) are exact too."""
    target = canonical_target()
    converted = steering.convert_schedule(steering.MixtureFlow(SCHEDULES[old], target),
                                          SCHEDULES[new])  # fmt: skip
    assert converted.schedule is SCHEDULES[new]
    for r in [0.05, 0.3, 0.5, 0.9]:
        u, score, denoised = exact_fields(SCHEDULES[new], target, r, POINTS)
        c = schedules.coefficients(SCHEDULES[new], r)
        converted_u = converted.velocity(r, POINTS)
        np.testing.assert_allclose(converted_u, u, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(
            steering.score_from_velocity(c, POINTS, converted_u), score, rtol=1e-7, atol=1e-8
        )
        np.testing.assert_allclose(
            steering.denoise_from_velocity(c, POINTS, converted_u), denoised, rtol=1e-7,
            atol=1e-8,
        )  # fmt: skip


@functools.partial(jax.jit, static_argnames="num_steps")
def rk4_endpoint(flow, x0, times_start=0.0, *, num_steps):
    times = jnp.linspace(times_start, 1.0, num_steps + 1)
    return integrators.rk4(flow.velocity, x0, times)[-1]


@pytest.mark.parametrize("new", ["cosine", "linear_vp", "polynomial"])
def test_converted_ode_carries_noise_to_the_reference_data_points(new):
    """Section 0.6: CondOT and every schedule with alpha_0 = 0 share the noise-to-data map;
    the converted CondOT model must reproduce it (RK4, 400 steps, against the digest's
    6 printed digits: the tolerance of test_integrators)."""
    converted = steering.convert_schedule(condot_flow(), SCHEDULES[new])
    np.testing.assert_allclose(rk4_endpoint(converted, STARTS, num_steps=400), ENDS, atol=2e-6)


def test_converted_vp_ode_is_the_original_map_from_its_start_time():
    """VP starts at alpha_0 ~ 0.0066: its map is the CondOT map started at t_0 with the
    same signal-to-noise ratio, on the point divided by the scale s_0 = sigma_VP(0)/(1-t_0)."""
    vp = SCHEDULES["vp"]
    converted = steering.convert_schedule(condot_flow(), vp)
    c0 = schedules.coefficients(vp, 0.0)
    t0 = c0.alpha / (c0.alpha + c0.sigma)  # CondOT: alpha/sigma = t/(1-t)
    scale = c0.sigma / (1.0 - t0)
    original = rk4_endpoint(condot_flow(), STARTS / scale, t0, num_steps=400)
    np.testing.assert_allclose(rk4_endpoint(converted, STARTS, num_steps=400), original,
                               atol=1e-6)  # fmt: skip
    # ... which is near, but not at, the map from pure noise.
    assert 1e-4 < np.max(np.abs(original - ENDS)) < 0.05


# --------------------------------------------------------------------------------------
# SDE sampling with the same marginals
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "diffusion",
    [steering.ODE, steering.Diffusion(0.5, 0.0), steering.DEFAULT_SDE,
     steering.Diffusion(4.5, 4.0)],
    ids=["ode", "constant-0.5", "sigma-squared", "flux"],
)  # fmt: skip
def test_sde_samples_have_the_target_moments(diffusion):
    """Every diffusion level gives the data's mean and covariance.

    Tolerance: z = 4.5 standard errors, estimated from the sample (false-failure rate
    ~7e-6 per statistic, 5 statistics per level), plus an Euler--Maruyama allowance of
    8/K for K steps (2/K for the mean). Offline, with 1e5 particles and common noise, the
    Euler bias of the ODE's x-variance is -5.8/K (-0.024, -0.013, -0.007 at K = 250, 500,
    1000); the digest's section 2.6 table (1000 steps, constant eps <= 2) shows no bias
    beyond its own Monte Carlo noise (~0.01). At K = 250 the allowance is 0.032 (0.008).
    """
    num_steps, num = 250, 16_000
    target = canonical_target()
    path = run_sde(jax.random.key(11), condot_flow(), integrators.uniform_times(num_steps),
                   diffusion, num_samples=num)  # fmt: skip
    assert path.shape == (num_steps + 1, num, 2)
    samples = np.asarray(path[-1])
    exact_mean, exact_cov = np.asarray(gmm.mean(target)), np.asarray(gmm.covariance(target))
    mean_se = samples.std(axis=0) / np.sqrt(num)
    assert np.all(np.abs(samples.mean(axis=0) - exact_mean) <= Z * mean_se + 2.0 / num_steps)
    centred = samples - exact_mean  # centred at the exact mean: the products are i.i.d.
    products = np.stack([centred[:, 0] ** 2, centred[:, 0] * centred[:, 1], centred[:, 1] ** 2])
    observed = products.mean(axis=1)
    expected = exact_cov[[0, 0, 1], [0, 1, 1]]
    cov_se = products.std(axis=1) / np.sqrt(num)
    assert np.all(np.abs(observed - expected) <= Z * cov_se + 8.0 / num_steps), (
        observed,
        expected,
        cov_se,
    )


def test_sde_without_diffusion_is_euler_on_the_velocity():
    times = integrators.uniform_times(10)
    path = run_sde(jax.random.key(2), condot_flow(), times, steering.ODE, num_samples=64)
    euler = integrators.euler(condot_flow().velocity, path[0], times)
    np.testing.assert_allclose(path, euler, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# The tilted target
# --------------------------------------------------------------------------------------


def test_tilted_target_at_unit_temperature_is_the_reference_posterior():
    """Section 0.6: A = [1, 0.5], R = 0.25, y = 0.8."""
    tilted = run_tilt(canonical_target(), observation(), 1.0)
    posterior = tilted.mixture
    np.testing.assert_allclose(gmm.weights(posterior), [0.008110, 0.935721, 0.056169], atol=1e-6)
    np.testing.assert_allclose(
        posterior.means, [[-0.755556, 0.622222], [1.004878, 0.419512], [0.48, -1.76]], atol=1e-6
    )
    np.testing.assert_allclose(
        gmm.covariances(posterior),
        [[[0.138889, -0.055556], [-0.055556, 0.222222]],
         [[0.148780, -0.004878], [-0.004878, 0.180488]],
         [[0.073333, -0.013333], [-0.013333, 0.093333]]],
        atol=1e-6,
    )  # fmt: skip
    np.testing.assert_allclose(tilted.log_normalizer, LOG_EVIDENCE, atol=1e-6)
    np.testing.assert_allclose(gmm.mean(posterior), [0.961120, 0.298735], atol=1e-6)


def grid(half_width=7.0, num=351):
    axis = jnp.linspace(-half_width, half_width, num)
    points = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    return points, (axis[1] - axis[0]) ** 2


@pytest.mark.parametrize(
    "reward",
    [observation(),
     steering.linear_gaussian_reward(jnp.eye(2), [[0.3, 0.1], [0.1, 0.2]], [0.5, -0.2])],
    ids=["one-observation", "two-observations"],
)  # fmt: skip
def test_tilted_target_is_the_prior_times_the_tempered_reward(reward):
    """pi_lambda = p e^{r/lambda} / Z_lambda, checked without the conditioning formulas:
    Z_lambda, the mean and the covariance by quadrature on a 351 x 351 grid over
    [-7, 7]^2 (spacing 0.04 against standard deviations >= 0.19: the Riemann sum of a
    Gaussian is spectrally accurate, far below 1e-12; the mass outside the box is
    < 1e-10), and the log-density identity pointwise. Two observations
    check the m/2 log(lambda) and log det(2 pi R) terms of the tilt constant."""
    prior = canonical_target()
    points, cell = grid()
    log_prior = gmm.log_prob(prior, points)
    rewards = reward(points)
    for temperature in [0.3, 1.0, 2.5]:
        tilted = run_tilt(prior, reward, temperature)
        log_integrand = log_prior + rewards / temperature
        log_z = logsumexp(log_integrand) + jnp.log(cell)
        np.testing.assert_allclose(tilted.log_normalizer, log_z, atol=1e-9)
        weights = jnp.exp(log_integrand - logsumexp(log_integrand))
        mean = weights @ points
        cov = (weights[:, None] * (points - mean)).T @ (points - mean)
        np.testing.assert_allclose(gmm.mean(tilted.mixture), mean, atol=1e-9)
        np.testing.assert_allclose(gmm.covariance(tilted.mixture), cov, atol=1e-9)
        np.testing.assert_allclose(
            gmm.log_prob(tilted.mixture, POINTS),
            gmm.log_prob(prior, POINTS) + reward(POINTS) / temperature - tilted.log_normalizer,
            atol=1e-10,
        )


def test_tilted_target_is_the_posterior_under_widened_noise():
    """For every lambda the tilted mixture is Bayes' posterior under noise lambda R."""
    prior, reward = canonical_target(), observation()
    for temperature in [0.2, 0.7, 3.0]:
        tilted = run_tilt(prior, reward, temperature)
        widened = gmm.condition_on_linear_gaussian(prior, reward.A, temperature * reward.noise_cov,
                                                   reward.y)  # fmt: skip
        np.testing.assert_allclose(gmm.weights(tilted.mixture), gmm.weights(widened), atol=1e-12)
        np.testing.assert_allclose(tilted.mixture.means, widened.means, atol=1e-12)
        np.testing.assert_allclose(
            gmm.covariances(tilted.mixture), gmm.covariances(widened), atol=1e-12
        )


def test_reward_is_the_observation_log_density():
    reward = observation()
    residual = Y - POINTS @ jnp.array(A)
    expected = -0.5 * residual**2 / NOISE - 0.5 * np.log(2 * np.pi * NOISE)
    np.testing.assert_allclose(reward(POINTS), expected, rtol=1e-12)
    assert reward(X).shape == ()
    assert reward(POINTS.reshape(2, 2, 2)).shape == (2, 2)
    with pytest.raises(ValueError, match="noise_cov"):
        steering.linear_gaussian_reward(jnp.eye(2), jnp.eye(3), [0.0, 0.0])


def test_lookahead_at_the_ends_of_the_path():
    """h_0 = log Z_lambda everywhere (CondOT: x_0 says nothing about x_1); h_1 = r/lambda."""
    prior, reward = canonical_target(), observation()
    lookahead = steering.MixtureLookahead(schedules.CondOT(), prior, reward)
    for temperature in [0.5, 1.0, 2.0]:
        log_z = steering.tilted_target(prior, reward, temperature).log_normalizer
        np.testing.assert_allclose(lookahead(0.0, POINTS, temperature), log_z, atol=1e-10)
        # Schedules stop at t = 1 - 1e-6, where x_t = (1 - 1e-6) x_1 + 1e-6 x_0: h is the
        # tempered reward of x / alpha, up to the O(sigma^2) = 1e-12 blur.
        alpha = schedules.coefficients(schedules.CondOT(), 1.0).alpha
        np.testing.assert_allclose(
            lookahead(1.0, POINTS, temperature), reward(POINTS / alpha) / temperature, atol=1e-8
        )


# --------------------------------------------------------------------------------------
# Best-of-N
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("diffusion", [steering.ODE, steering.DEFAULT_SDE], ids=["ode", "sde"])
def test_best_of_n_returns_the_highest_reward_candidate(diffusion):
    reward, times, temperature = observation(), integrators.uniform_times(10), 0.7
    result = run_best_of_n(jax.random.key(4), condot_flow(), reward, times, diffusion,
                           temperature, num_samples=64)  # fmt: skip
    rewards = reward(result.samples)
    np.testing.assert_array_equal(result.samples, result.trajectory[-1])
    np.testing.assert_allclose(result.rewards, rewards, rtol=1e-12)
    assert int(result.best_index) == int(np.argmax(rewards))
    np.testing.assert_array_equal(result.best, result.samples[np.argmax(rewards)])
    assert result.best_reward == np.max(rewards)
    np.testing.assert_allclose(result.log_weights, rewards / temperature, rtol=1e-12)
    np.testing.assert_allclose(
        result.log_evidence, logsumexp(rewards / temperature) - np.log(64), rtol=1e-12
    )
    assert result.trajectory.shape == (11, 64, 2)
    assert int(result.nfe) == 64 * 10
    # The reward is a Gaussian log-density in y: it never exceeds log N(0; 0, R).
    assert result.best_reward <= -0.5 * np.log(2 * np.pi * NOISE)


def test_best_of_n_reward_never_decreases_with_more_candidates():
    """Common random numbers: JAX's partitionable threefry draws the first rows of a larger
    array identically, so N candidates are the first N of any larger run (checked). Best-of-
    n for every n <= 64 is then the running maximum of the 64 rewards, which can only grow."""
    reward, times = observation(), integrators.uniform_times(10)
    runs = {
        n: run_best_of_n(jax.random.key(5), condot_flow(), reward, times, steering.DEFAULT_SDE,
                         1.0, num_samples=n)
        for n in (16, 64)
    }  # fmt: skip
    np.testing.assert_allclose(runs[16].samples, runs[64].samples[:16], rtol=1e-12)
    np.testing.assert_allclose(runs[16].best_reward, np.max(runs[64].rewards[:16]), rtol=1e-12)
    best = np.maximum.accumulate(np.asarray(runs[64].rewards))
    assert np.all(np.diff(best) >= 0)
    assert runs[16].best_reward <= runs[64].best_reward == best[-1]
    assert best[0] < best[-1]  # 63 more candidates: a strict gain (seeded)
    assert [int(runs[n].nfe) for n in (16, 64)] == [160, 640]


# --------------------------------------------------------------------------------------
# SMC over SDE steps
# --------------------------------------------------------------------------------------


def test_smc_result_shapes_and_bookkeeping():
    num, steps = 48, 10
    reward, times = observation(), integrators.uniform_times(steps)
    result = run_smc(jax.random.key(1), condot_flow(), reward, times, 1.0, steering.DEFAULT_SDE,
                     0.5, None, num_particles=num)  # fmt: skip
    assert result.particles.shape == (num, 2)
    assert result.log_weights.shape == (num,)
    assert result.rewards.shape == (num,)
    assert result.log_evidence.shape == ()
    assert result.ess.shape == (steps + 1,)
    assert result.resampled.shape == (steps,)
    assert result.resampled.dtype == bool
    assert result.ancestors.shape == (steps, num)
    assert result.trajectory.shape == result.denoised.shape == (steps + 1, num, 2)
    assert int(result.nfe) == num * steps
    np.testing.assert_allclose(logsumexp(result.log_weights), 0.0, atol=1e-12)
    np.testing.assert_array_equal(result.trajectory[-1], result.particles)
    np.testing.assert_array_equal(result.denoised[-1], result.particles)
    np.testing.assert_allclose(result.rewards, reward(result.particles), rtol=1e-12)
    ess = np.asarray(result.ess)
    assert np.all((ess >= 1.0 - 1e-9) & (ess <= num + 1e-9))
    # Step k resamples exactly when the ESS after the previous reweighting is below kappa N.
    np.testing.assert_array_equal(result.resampled, ess[:-1] < 0.5 * num)
    assert np.any(result.resampled)
    ancestors = np.asarray(result.ancestors)
    for k in np.flatnonzero(~np.asarray(result.resampled)):
        np.testing.assert_array_equal(ancestors[k], np.arange(num))
    assert np.all((ancestors >= 0) & (ancestors < num))
    # CondOT at t = 0: every denoised guess is the prior mean, so the weights start equal.
    prior_mean = jnp.broadcast_to(gmm.mean(canonical_target()), (num, 2))
    np.testing.assert_allclose(result.denoised[0], prior_mean, atol=1e-12)
    np.testing.assert_allclose(result.ess[0], num, rtol=1e-12)


@pytest.mark.parametrize("with_lookahead", [False, True], ids=["denoised", "lookahead"])
def test_smc_without_resampling_weights_telescope_to_the_final_reward(with_lookahead):
    """With kappa = 0 the product of the potentials is e^{r(x_K)/lambda} exactly, whatever
    the intermediate scores: the weights are the final rewards and Z-hat is their mean."""
    num, temperature = 48, 0.6
    reward = observation()
    lookahead = (
        steering.MixtureLookahead(schedules.CondOT(), canonical_target(), reward)
        if with_lookahead
        else None
    )
    result = run_smc(jax.random.key(3), condot_flow(), reward, integrators.uniform_times(10),
                     temperature, steering.DEFAULT_SDE, 0.0, lookahead,
                     num_particles=num)  # fmt: skip
    assert not np.any(result.resampled)
    final = reward(result.particles) / temperature
    np.testing.assert_allclose(result.log_weights, final - logsumexp(final), atol=1e-10)
    np.testing.assert_allclose(result.log_evidence, logsumexp(final) - np.log(num), atol=1e-10)


SMC_STEPS = 100
# Discretisation of the SDE: the weighted particles target p_K e^r with p_K the law of
# K Euler--Maruyama steps, not p e^r. Offline (8e5 i.i.d. p_K samples, importance-weighted
# by e^r, CondOT, default SDE) the posterior moments are off by <= 0.80/K, 1.01/K, 0.79/K
# (mean and covariance entries; K = 50, 100, 200) and E_{p_K}[e^r]/p(y) - 1 is 5.1/K,
# 4.7/K, 4.0/K. Declared allowances: 1.5/K for the moments, 6/K for the evidence.
MOMENT_ALLOWANCE = 1.5 / SMC_STEPS
EVIDENCE_ALLOWANCE = 6.0 / SMC_STEPS


def posterior_statistics(particles, weights, posterior):
    """Per-run weighted estimates of E[x] and E[(x - m)(x - m)^T] with m the exact
    posterior mean (so they are linear in the weights, and their exact values are the
    posterior mean and covariance); shape (runs, 5)."""
    centred = particles - gmm.mean(posterior)
    products = jnp.stack(
        [particles[..., 0], particles[..., 1], centred[..., 0] ** 2,
         centred[..., 0] * centred[..., 1], centred[..., 1] ** 2], axis=-1,
    )  # fmt: skip
    estimates = jnp.einsum("rn,rns->rs", weights, products)
    cov = gmm.covariance(posterior)
    exact = jnp.concatenate([gmm.mean(posterior), jnp.array([cov[0, 0], cov[0, 1], cov[1, 1]])])
    return np.asarray(estimates), np.asarray(exact)


@pytest.fixture(scope="module")
def evidence_reference():
    """E_{p_K}[e^r] / p(y) by plain Monte Carlo over i.i.d. runs of the same discretised
    SDE (best-of-N's candidates, 40000 of them): the exact expectation of SMC's Z-hat."""
    result = run_best_of_n(jax.random.key(2024), condot_flow(), observation(),
                           integrators.uniform_times(SMC_STEPS), steering.DEFAULT_SDE, 1.0,
                           num_samples=40_000)  # fmt: skip
    ratios = np.exp(np.asarray(result.rewards) - LOG_EVIDENCE)
    return ratios.mean(), ratios.std() / np.sqrt(ratios.size)


@pytest.mark.parametrize(
    ("with_lookahead", "num", "runs"), [(False, 512, 64), (True, 256, 64)],
    ids=["denoised", "lookahead"],
)  # fmt: skip
def test_smc_targets_the_posterior_and_its_evidence_is_unbiased(
    with_lookahead, num, runs, evidence_reference
):
    """lambda = 1 on the observation reward: the tilted target is the posterior, Z = p(y).

    Over R seeded runs (z = 4.5, false-failure rate ~7e-6 per statistic):

    * E[Z-hat] = E_{p_K}[e^r] exactly, for any N: the mean of Z-hat/p(y) over the runs
      agrees with the plain Monte Carlo reference within z combined standard errors;
    * E_{p_K}[e^r] tends to p(y): the reference is within z s.e. + 6/K of 1;
    * the moments of the weighted particles are the posterior's within z s.e. plus the
      discretisation allowance. E[Z-hat * sum_i W_i f(x_i)] = Z_K E_target[f] exactly, so
      the runs are combined with weights Z-hat (a ratio estimator, delta-method s.e.):
      the plain average of self-normalised estimates carries a finite-N bias, which with
      the denoised-guess potentials is still ~0.02-0.03 in the mean at N = 512-4096
      (measured offline; heavy-tailed intermediate weights).
    """
    reward, prior = observation(), canonical_target()
    lookahead = (
        steering.MixtureLookahead(schedules.CondOT(), prior, reward) if with_lookahead else None
    )
    keys = jax.random.split(jax.random.key(7), runs)
    result = smc_replicates(keys, condot_flow(), reward, integrators.uniform_times(SMC_STEPS),
                            lookahead, num_particles=num)  # fmt: skip

    ratios = np.exp(np.asarray(result.log_evidence) - LOG_EVIDENCE)
    reference, reference_se = evidence_reference
    ratio_se = ratios.std(ddof=1) / np.sqrt(runs)
    assert abs(ratios.mean() - reference) <= Z * np.hypot(ratio_se, reference_se), (
        ratios.mean(), ratio_se, reference, reference_se,
    )  # fmt: skip
    assert abs(reference - 1.0) <= Z * reference_se + EVIDENCE_ALLOWANCE

    posterior = steering.tilted_target(prior, reward, 1.0).mixture
    per_run, exact = posterior_statistics(result.particles, jnp.exp(result.log_weights), posterior)
    estimate = ratios @ per_run / ratios.sum()
    standard_error = np.sqrt(np.sum((ratios[:, None] * (per_run - estimate)) ** 2, axis=0))
    standard_error /= ratios.sum()
    assert np.all(np.abs(estimate - exact) <= Z * standard_error + MOMENT_ALLOWANCE), (
        estimate - exact,
        standard_error,
    )
    ess = np.asarray(result.ess)
    assert ess.shape == (runs, SMC_STEPS + 1)
    assert np.all((ess >= 1.0) & (ess <= num + 1e-9))


# --------------------------------------------------------------------------------------
# Rollover Budget Forcing
# --------------------------------------------------------------------------------------


def denoised_rewards(flow, reward, times, steps, points):
    """r of the denoised guess of each point at times[step] (the point itself at t = 1)."""
    out = []
    for k, x in zip(np.asarray(steps), np.asarray(points), strict=True):
        t = times[k]
        u = flow.velocity(t, x)
        guess = steering.denoise_from_velocity(schedules.coefficients(flow.schedule, t), x, u)
        out.append(reward(x) if k == times.shape[0] - 1 else reward(guess))
    return np.array(out)


def replay_rollover(result, *, max_nfe, num_initial, num_steps, start_reward):
    """Re-run the rollover rules on the recorded proposals, in plain Python."""
    per_step = (max_nfe - num_initial) // num_steps
    steps = np.asarray(result.candidate_steps)[: max_nfe - num_initial]
    rewards = np.asarray(result.candidate_rewards)[: max_nfe - num_initial]
    best, level, budget, used, top = start_reward, 0, per_step, 0, None
    budget_used, accepted = np.zeros(num_steps, int), []
    for i, (step, r) in enumerate(zip(steps, rewards, strict=True)):
        assert step == level + 1  # every proposal moves the current state one step on
        used += 1
        budget_used[level] += 1
        if top is None or r > rewards[top]:
            top = i
        improved, best = r > best, max(best, r)
        if level < num_steps - 1 and (improved or used >= budget):
            budget = per_step + budget - used if improved else per_step
            accepted.append(top)
            level, used, top = level + 1, 0, None
    return budget_used, accepted, top, best


@pytest.mark.parametrize(("seed", "max_nfe"), [(0, 60), (1, 150), (2, 18)])
def test_rbf_budget_and_rollover_rules(seed, max_nfe):
    """NFE accounting, the answer, and the rollover rules replayed from the record."""
    num_initial, num_steps = 8, 10
    flow, reward = condot_flow(), observation()
    times = integrators.uniform_times(num_steps)
    result = run_rbf(jax.random.key(seed), flow, reward, times, jnp.asarray(max_nfe),
                     steering.DEFAULT_SDE, num_initial=num_initial)  # fmt: skip

    assert int(result.nfe) == max_nfe  # spends the budget, never more
    budget_used = np.asarray(result.budget_used)
    assert num_initial + budget_used.sum() == max_nfe
    per_step = (max_nfe - num_initial) // num_steps
    assert np.all(budget_used >= 1)
    if max_nfe == num_initial + num_steps:  # the smallest budget: one proposal per step
        np.testing.assert_array_equal(budget_used, np.ones(num_steps))
    # Rollover only passes on unused budget: no prefix of steps overspends, and the last
    # step gets at least its share.
    assert np.all(np.cumsum(budget_used[:-1]) <= per_step * np.arange(1, num_steps))
    assert budget_used[-1] >= per_step

    # The answer is a sample at t = 1, its own denoised guess, with its reward.
    assert float(result.time) == 1.0
    np.testing.assert_array_equal(result.sample, result.denoised)
    np.testing.assert_allclose(result.reward, reward(result.sample), rtol=1e-12)
    np.testing.assert_array_equal(result.trajectory[-1, 0], result.sample)
    assert result.trajectory.shape == (num_steps + 1, 1, 2)

    # Every proposal is recorded, with the reward of its denoised guess.
    recorded = max_nfe - num_initial
    steps = np.asarray(result.candidate_steps)
    assert np.all(steps[:recorded] >= 1)
    assert np.all(steps[recorded:] == -1)
    assert np.all(np.isnan(np.asarray(result.candidate_rewards)[recorded:]))
    np.testing.assert_allclose(
        result.candidate_rewards[:recorded],
        denoised_rewards(flow, reward, times, steps[:recorded], result.candidates[:recorded]),
        rtol=1e-10,
    )

    # The starting point is the best of the initial noises; on CondOT at t = 0 every
    # denoised guess is the prior mean, so its reward is r(E[x]).
    start_reward = float(reward(gmm.mean(canonical_target())))
    np.testing.assert_allclose(
        denoised_rewards(flow, reward, times, [0], result.trajectory[:1, 0]), start_reward,
        rtol=1e-12,
    )  # fmt: skip
    replayed, accepted, top, best = replay_rollover(
        result, max_nfe=max_nfe, num_initial=num_initial, num_steps=num_steps,
        start_reward=start_reward,
    )  # fmt: skip
    np.testing.assert_array_equal(budget_used, replayed)
    np.testing.assert_array_equal(result.trajectory[1:-1, 0], result.candidates[np.array(accepted)])
    np.testing.assert_array_equal(result.sample, result.candidates[top])
    # The best reward of the search is at least the first candidate's (the best of the
    # initial noises) and every recorded proposal's.
    np.testing.assert_allclose(result.best_reward, best, rtol=1e-12)
    assert result.best_reward >= start_reward
    assert result.best_reward >= np.max(np.asarray(result.candidate_rewards)[:recorded])
    assert result.best_reward >= result.reward


def test_rbf_rejects_a_budget_that_cannot_reach_the_data_end():
    with pytest.raises(ValueError, match=r"max_nfe = 14 cannot pay for 5 initial samples"):
        steering.rollover_budget_forcing(
            jax.random.key(0), condot_flow(), observation(), integrators.uniform_times(10),
            max_nfe=14, num_initial=5,
        )  # fmt: skip


def test_methods_need_a_dimension_for_an_unknown_flow():
    class Opaque:
        schedule = schedules.CondOT()

        def velocity(self, t, x):
            return condot_flow().velocity(t, x)

    with pytest.raises(ValueError, match="dim"):
        steering.best_of_n(jax.random.key(0), Opaque(), observation(),
                           integrators.uniform_times(4), num_samples=4)  # fmt: skip
    result = steering.best_of_n(jax.random.key(0), Opaque(), observation(),
                                integrators.uniform_times(4), num_samples=4, dim=2)  # fmt: skip
    assert result.samples.shape == (4, 2)
    # A converted flow knows the dimension of the flow it wraps.
    converted = steering.convert_schedule(condot_flow(), SCHEDULES["vp"])
    result = steering.best_of_n(jax.random.key(0), converted, observation(),
                                integrators.uniform_times(4), num_samples=4)  # fmt: skip
    assert result.samples.shape == (4, 2)
    assert np.all(np.isfinite(np.asarray(result.samples)))
    with pytest.raises(ValueError, match="times"):
        steering.smc(jax.random.key(0), condot_flow(), observation(), jnp.array([0.0]),
                     num_particles=4)  # fmt: skip


# --------------------------------------------------------------------------------------
# Compile counts
# --------------------------------------------------------------------------------------


def moved_flow():
    target = canonical_target()
    weights = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    return condot_flow(target._replace(means=target.means + 0.5, log_weights=weights))


def test_moving_continuous_values_never_retraces():
    """Temperature, observation y, diffusion level, mixture numbers, ESS threshold and the
    RBF budget are traced values: each method compiles once per shape."""
    key, times = jax.random.key(0), integrators.uniform_times(10)
    base = (condot_flow(), observation(), steering.DEFAULT_SDE)
    moved = (
        moved_flow(),
        steering.linear_gaussian_reward(A, 0.4, 1.3),
        steering.Diffusion(0.3, 1.0),
    )

    def compiled(name, call):
        call(*base, 1.0)
        before = len(TRACES[name])
        for flow, reward, diffusion in [(moved[0], *base[1:]), (base[0], moved[1], base[2]),
                                        (*base[:2], moved[2]), moved]:  # fmt: skip
            call(flow, reward, diffusion, 1.0)
        call(*base, 0.35)
        return len(TRACES[name]) - before

    def smc_call(flow, reward, diffusion, temperature):
        run_smc(key, flow, reward, times, temperature, diffusion, 0.5 + temperature / 10, None,
                num_particles=48)  # fmt: skip

    def bon_call(flow, reward, diffusion, temperature):
        run_best_of_n(key, flow, reward, times, diffusion, temperature, num_samples=64)

    def rbf_call(flow, reward, diffusion, temperature):
        run_rbf(key, flow, reward, times, jnp.asarray(int(60 / temperature)), diffusion,
                num_initial=8)  # fmt: skip

    def sde_call(flow, reward, diffusion, temperature):
        run_sde(key, flow, times, diffusion._replace(level=temperature), num_samples=64)

    def tilt_call(flow, reward, diffusion, temperature):
        run_tilt(flow.target, reward, temperature)

    for name, call in [("smc", smc_call), ("bon", bon_call), ("rbf", rbf_call),
                       ("sde", sde_call), ("tilt", tilt_call)]:  # fmt: skip
        assert compiled(name, call) == 0, name
    # A shape does recompile (the counters work): a mixture with fewer components.
    before = len(TRACES["tilt"])
    two = gmm.from_covariances([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [np.eye(2)] * 2)
    run_tilt(two, observation(), 1.0)
    assert len(TRACES["tilt"]) == before + 1
