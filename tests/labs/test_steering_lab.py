"""The steering tab's lab, driven without a browser: exact answers, rescaling, compile
counts, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.labs import steering
from posteriorlab.labs.paths import PathsLab
from posteriorlab.labs.steering import SteeringLab

SMALL = dict(num_particles=16, num_steps=10)


@pytest.fixture(scope="module")
def lab():
    return SteeringLab(paths=PathsLab(compute=False), **SMALL)


def test_default_result_is_complete_and_finite(lab):
    result = lab.result
    assert lab.error == ""
    assert result.smc_particles.shape == (16, 2)
    assert result.best_of_n.shape == result.rbf.shape == (steering.REPEATS, 2)
    assert result.smc_ess.shape == (11,)
    assert np.isfinite(result.smc_particles).all()
    assert np.isclose(result.smc_weights.sum(), 1.0)
    assert [m.nfe for m in result.methods] == [160, 160, 160]


def test_exact_answer_is_bayes_posterior_at_unit_temperature(lab):
    """λ = 1: π is the posterior of the prior under y = a·x + N(0, σ_y²), Z = p(y)."""
    result = lab.result
    target = lab.paths.target()
    A = jnp.asarray([[lab.obs_a1, lab.obs_a2]])
    R = jnp.asarray([[lab.obs_noise_sd**2]])
    y = jnp.asarray([lab.obs_y])
    posterior = gmm.condition_on_linear_gaussian(target, A, R, y)
    np.testing.assert_allclose(result.exact_mean, gmm.mean(posterior), rtol=1e-10)
    np.testing.assert_allclose(
        result.exact_log_normalizer, gmm.log_marginal_likelihood(target, A, R, y), rtol=1e-10
    )
    assert result.max_reward == pytest.approx(-0.5 * np.log(2 * np.pi * lab.obs_noise_sd**2))


def test_no_answer_beats_the_largest_reward(lab):
    for method in lab.result.methods:
        assert method.mean_reward <= lab.result.max_reward + 1e-12


def test_rescaled_problem_scores_samples_in_the_original_units(lab):
    """For a source N(0, s² I) the methods run on x / s with the row s·a; the rewards they
    report must be the original reward of the returned (scaled-back) points."""
    target = lab.paths.target()
    schedule = lab.paths.current_schedule(target)
    reward = lab.reward(target.means.dtype)
    best, rewards = steering.run_best_of_n(
        jax.random.key(1), schedule, target, 2.0, reward, steering.steering.DEFAULT_SDE,
        num_particles=16, num_steps=10, to_vp=False,
    )  # fmt: skip
    np.testing.assert_allclose(rewards, reward(best), rtol=1e-10)


def test_continuous_changes_never_recompile(lab):
    functions = (steering.run_smc, steering.run_best_of_n, steering.run_rbf)
    sizes = {function: function._cache_size() for function in functions}
    lab.param.update(obs_y=1.2, obs_a2=-0.3, obs_noise_sd=0.7, temperature=0.5)
    lab.param.update(diffusion_level=2.0, ess_threshold=0.8, seed=3)
    lab.paths.param.update(schedule="cosine", source_scale=1.5)
    assert lab.error == ""
    for function, size in sizes.items():
        assert function._cache_size() == size, function


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(obs_noise_sd=0.0), "σ_y = 0.0 must be positive"),
        (dict(obs_a1=0.0, obs_a2=0.0), "observes nothing"),
        (dict(temperature=float("nan")), "Temperature λ = nan is not a number"),
        (dict(temperature=0.0), "Temperature λ = 0.0 must lie in"),
        (dict(diffusion_level=-1.0), "Diffusion level η = -1.0 must lie in"),
        (dict(ess_threshold=1.5), "threshold 1.5 must lie in [0, 1]"),
    ],
)
def test_bad_input_is_explained_and_the_last_result_stays(change, message):
    lab = SteeringLab(paths=PathsLab(compute=False), **SMALL)
    before = lab.result
    lab.param.update(**change)
    assert message in lab.error
    assert lab.result is before


def test_bad_paths_input_is_reported_too(lab):
    lab.paths.components = "1, 0, 0, -1"
    assert "standard deviations" in lab.error
    lab.paths.components = "1, 0, 0, 1"
    assert lab.error == ""


def test_a_hidden_tab_catches_up_once_and_only_when_needed():
    lab = SteeringLab(paths=PathsLab(compute=False), **SMALL)
    first = lab.result
    lab.active = False
    lab.active = True
    assert lab.result is first  # nothing changed: no recomputation
    lab.active = False
    lab.paths.schedule = "cosine"
    assert lab.result is first  # hidden: waits
    lab.active = True
    assert lab.result is not first  # shown again: caught up
