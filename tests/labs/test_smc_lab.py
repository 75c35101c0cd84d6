"""The SMC lab without a browser: parameters in, results and messages out."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.dashboards.smc import replicates_summary
from posteriorlab.labs import smc as smc_lab
from posteriorlab.labs.smc import SMCLab, summarize_replicates

FIVE_STEP_DATA = "0.5, -0.3, 1.2, 0.8, -0.1"
FIVE_STEP_LOG_Z = -7.169735  # Kalman, rho = 0.9, sigma_x = 1, sigma_y = 0.2 (research §2a)

SMALL = dict(num_particles=64, num_steps=20, replicates=20)


@pytest.fixture
def lab():
    return SMCLab(**SMALL)


def test_default_lab_has_results_and_the_exact_answer(lab):
    result = lab.result
    assert lab.error == ""
    assert result.displayed_particles.shape == (20, 64, 1)
    assert result.exact_log_evidence.shape == (20,)
    assert np.all(np.isfinite(result.log_evidence))
    assert lab.replicate_result.log_evidence.shape == (20,)
    assert lab.replicate_result.exact_log_evidence == pytest.approx(result.exact_log_evidence[-1])


def test_typed_observations_reproduce_the_kalman_evidence(lab):
    lab.observations_text = FIVE_STEP_DATA
    assert lab.error == ""
    assert lab.result.exact_log_evidence[-1] == pytest.approx(FIVE_STEP_LOG_Z, abs=1e-6)
    assert np.isnan(lab.result.states).all()  # typed data have no known hidden states


def test_changing_a_control_recomputes(lab):
    before = lab.result
    lab.num_particles = 128
    assert lab.result is not before
    assert lab.result.num_particles == 128
    lab.resampling = "multinomial"
    assert lab.error == ""


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_particles": 0}, "N = 0"),
        ({"num_particles": -5}, "N = -5"),
        ({"num_particles": 10**9}, "more than this lab allows"),
        ({"sigma_y": -1.0}, "must be positive"),
        ({"sigma_x": 0.0}, "must be positive"),
        ({"sigma_y": math.nan}, "not a number"),
        ({"rho": 1.5}, "|ρ| < 1"),
        ({"ess_threshold": 2.0}, "[0, 1]"),
        ({"observations_text": "0.1, nan, 0.3"}, "finite"),
        ({"observations_text": "0.1, abc"}, "'abc'"),
        ({"model": "stochastic_volatility", "proposal": "guided"}, "bootstrap"),
        ({"smoother": "ffbsm", "num_particles": 5000}, "PaRIS"),
    ],
)
def test_bad_input_is_explained_and_the_last_result_kept(lab, settings, message):
    good_result, good_replicates = lab.result, lab.replicate_result
    lab.param.update(**settings)
    assert message in lab.error
    assert lab.result is good_result
    assert lab.replicate_result is good_replicates
    lab.param.update(**{**{name: SMCLab.param[name].default for name in settings}, **SMALL})
    assert lab.error == ""


def test_unused_parameters_are_not_validated():
    lab = SMCLab(model="stochastic_volatility", sigma_y=-1.0, **SMALL)
    assert lab.error == ""  # σ_y plays no part in the stochastic volatility model


def test_vanishing_weights_are_reported_with_the_step():
    log_evidence = np.array([-1.0, -2.0, -np.inf, np.nan])
    with pytest.raises(FloatingPointError, match="t = 2"):
        smc_lab.check_finite(log_evidence, np.ones(4))
    smc_lab.check_finite(log_evidence[:2], np.ones(2))


def test_continuous_controls_never_recompile(lab):
    compiled = smc_lab.filter_and_smooth._cache_size()
    replicates = smc_lab.replicate_log_evidence._cache_size()
    for settings in (
        {"rho": 0.5},
        {"sigma_x": 2.0},
        {"sigma_y": 0.7},
        {"ess_threshold": 0.9},
        {"annealing": 1},
        {"annealing_trigger": 0.3},
        {"seed": 4},
        {"data_seed": 9},
    ):
        lab.param.update(**settings)
        assert lab.error == ""
    assert smc_lab.filter_and_smooth._cache_size() == compiled
    assert smc_lab.replicate_log_evidence._cache_size() == replicates


def test_every_model_smoother_and_scheme_runs():
    """Each model with one smoother (every smoother covered), then every scheme."""
    lab = SMCLab(**SMALL)
    smoothers = ["paris", "genealogy", "ffbsm", "paris"]
    for model, smoother in zip(smc_lab.MODEL_LABELS.values(), smoothers, strict=True):
        lab.param.update(model=model, smoother=smoother)
        assert lab.error == "", (model, smoother, lab.error)
        assert np.all(np.isfinite(lab.result.smoothing_mean))
        assert np.all(np.isfinite(lab.replicate_result.log_evidence))
    for scheme in smc_lab.RESAMPLING_LABELS.values():
        lab.param.update(model="linear_gaussian_1d", resampling=scheme, proposal="guided")
        assert lab.error == ""


def test_replicate_summary_of_a_known_sample():
    log_z = -3.0
    errors = np.log(np.array([0.5, 1.0, 1.5]))
    summary = summarize_replicates(
        smc_lab.ReplicateResult(
            log_evidence=log_z + errors, exact_log_evidence=log_z, num_particles=10, seconds=0.0,
            num_requested=3,
        )
    )
    assert summary.mean_ratio == pytest.approx(1.0)
    assert summary.ratio_standard_error == pytest.approx(0.5 / np.sqrt(3))
    assert summary.mean_log_error == pytest.approx(errors.mean())
    assert summary.jensen_prediction == pytest.approx(-errors.var(ddof=1) / 2)


def test_superseded_replicates_stop_at_the_next_chunk(lab):
    asked = []

    def keep_going():
        asked.append(True)
        return len(asked) < 2  # a newer change arrives during the first chunk

    assert lab.replicates == 2 * smc_lab.REPLICATE_CHUNK
    observations = lab.result.observations
    assert lab.compute_replicates(observations, None, keep_going=keep_going) is None
    assert len(asked) == 2


def test_replicates_stop_at_the_time_limit_and_say_so(lab, monkeypatch):
    monkeypatch.setattr(smc_lab, "REPLICATE_TIME_LIMIT_S", 0.0)
    replicates = lab.compute_replicates(lab.result.observations, None)
    assert replicates.log_evidence.size == smc_lab.REPLICATE_CHUNK < lab.replicates
    assert replicates.num_requested == lab.replicates
    text = replicates_summary(replicates)
    assert f"after {smc_lab.REPLICATE_CHUNK} of the {lab.replicates} replicates" in text
    assert "stopped" not in replicates_summary(lab.replicate_result).lower()


def test_chunked_replicates_equal_one_vmapped_call(lab):
    """Splitting R into chunks changes nothing: replicate i always uses key i."""
    model, annealing = lab._filter_settings()
    keys = jax.random.split(jax.random.fold_in(jax.random.key(lab.seed), 1), lab.replicates)
    whole = smc_lab.replicate_log_evidence(
        keys, model, lab.result.observations, jnp.asarray(lab.ess_threshold), annealing,
        num_particles=lab.num_particles, resampling=lab.resampling, proposal=lab.proposal,
    )  # fmt: skip
    np.testing.assert_allclose(lab.replicate_result.log_evidence, whole, rtol=1e-10)


def test_replicates_wait_until_they_are_shown():
    lab = SMCLab(replicates_shown=False, **SMALL)
    assert lab.result is not None
    assert lab.replicate_result is None
    lab.seed = 5
    assert lab.replicate_result is None
    lab.replicates_shown = True  # e.g. the Evidence tab opened
    shown = lab.replicate_result
    assert shown.log_evidence.shape == (SMALL["replicates"],)
    lab.replicates_shown = False
    assert lab.replicate_result is shown  # nothing stale: kept
    lab.seed = 6
    assert lab.replicate_result is None  # the old ones belong to seed 5


def test_the_smoother_waits_until_it_is_shown_and_leaves_the_filter_alone():
    lab = SMCLab(smoothing_shown=False, **SMALL)
    filtered_only = lab.result
    assert filtered_only.smoothing_mean is None
    assert filtered_only.smoothing_var is None
    lab.smoothing_shown = True  # e.g. the Estimates tab opened: the same run, now smoothed
    smoothed = lab.result
    assert smoothed is not filtered_only
    assert smoothed.smoothing_mean.shape == smoothed.filtering_mean.shape
    for name in ("displayed_particles", "ess", "filtering_mean", "log_evidence"):
        np.testing.assert_array_equal(getattr(smoothed, name), getattr(filtered_only, name))
    lab.smoothing_shown = False
    assert lab.result is smoothed  # nothing stale: kept
    lab.seed = 3
    assert lab.result.smoothing_mean is None


def test_an_unsmoothed_result_is_completed_for_the_same_run():
    lab = SMCLab(smoothing_shown=False, **SMALL)
    complete = lab.complete_result()
    np.testing.assert_array_equal(complete.filtering_mean, lab.result.filtering_mean)
    np.testing.assert_array_equal(
        complete.smoothing_mean, SMCLab(smoothing_shown=True, **SMALL).result.smoothing_mean
    )
    assert lab.result.smoothing_mean is None  # the page's result is left as it was
