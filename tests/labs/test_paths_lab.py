"""The paths lab, driven without a browser: results, exactness, compile counts, bad input."""

import math

import numpy as np
import pytest

from posteriorlab.labs import paths
from posteriorlab.labs.paths import PathsLab

SMALL = dict(num_trajectories=300, num_steps=20)


@pytest.fixture(scope="module")
def lab():
    return PathsLab(**SMALL)


def test_default_result_is_complete_and_finite(lab):
    result = lab.result
    assert lab.error == ""
    assert result.trajectories.shape == (21, 150, 2)
    assert result.endpoints.shape == (300, 2)
    assert result.density.shape == (paths.GRID_SIZE, paths.GRID_SIZE)
    assert np.isfinite(result.trajectories).all()
    assert result.kinetic_energy > 0
    assert lab.comparison is not None


def test_rk4_samples_have_the_exact_mean_log_density():
    """With exact fields and a fine RK4 solve the endpoints are exact target draws, so the
    sample mean of log p_1 estimates E[log p_1] without bias: z = 4 standard errors
    (false-failure rate 6e-5)."""
    lab = PathsLab(integrator="rk4", num_steps=100, num_trajectories=3000, seed=5)
    result = lab.result
    target = lab.target()
    from posteriorlab.core import gmm

    log_p = np.asarray(gmm.log_prob(target, result.endpoints.astype(np.float64)))
    standard_error = log_p.std() / math.sqrt(log_p.size)
    assert abs(result.mean_log_prob - result.exact_mean_log_prob) <= 4 * standard_error


def test_continuous_changes_never_recompile(lab):
    lab.schedule = "cosine"  # warm every program once at these sizes
    sizes = {
        function: function._cache_size()
        for function in (paths.simulate, paths.snapshot, paths.schedule_summary)
    }
    lab.param.update(schedule="vp", vp_beta_max=15.0, source_scale=1.3, seed=4)
    lab.components = lab.components + "\n1, 3, 3, 0.5"
    lab.schedule = "tabulated"
    lab.time = 0.8
    assert lab.error == ""
    for function, size in sizes.items():
        assert function._cache_size() == size, function


def test_kinetic_optimal_schedule_has_the_least_energy(lab):
    lab.components = paths.PRESETS["Three blobs"]
    energies = dict(zip(lab.comparison.schedules, lab.comparison.kinetic_energy, strict=True))
    optimal = energies.pop(paths.SCHEDULE_NAMES["tabulated"])
    assert optimal < min(energies.values())


def test_errors_shrink_with_the_budget(lab):
    errors = lab.comparison.endpoint_error
    assert np.all(errors[:, -1] < errors[:, 0])


def test_time_slider_changes_only_the_density(lab):
    lab.time = 0.2
    before = lab.result
    lab.time = 0.9
    assert not np.allclose(before.density, lab.result.density)
    np.testing.assert_array_equal(before.endpoints, lab.result.endpoints)


def test_preset_and_click_to_add(lab):
    lab.preset = "Eight on a ring"
    assert len(paths.parse_components(lab.components).weights) == 8
    lab.add_component(0.0, 0.0)
    assert "8 components" in lab.error
    lab.preset = "One Gaussian"
    lab.add_component(-2.0, 1.0)
    rows = paths.parse_components(lab.components)
    assert rows.weights.shape == (2,)
    np.testing.assert_allclose(rows.means[1], [-2.0, 1.0])
    assert lab.error == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"components": "hello"}, "not a list of numbers"),
        ({"components": ""}, "no components"),
        ({"components": "-1, 0, 0, 1"}, "weights must be positive"),
        ({"components": "1, 0, 0, 0"}, "must be positive"),
        ({"components": "1, 0, 0, 1, 1, 1.5"}, "correlation"),
        ({"components": "1, nan, 0, 1"}, "finite"),
        ({"components": "1, 0, 0, 1e9"}, "window"),
        ({"num_steps": 0}, "Steps = 0"),
        ({"num_steps": 10**6}, "Steps = 1000000"),
        ({"source_scale": -1.0}, "must be positive"),
        ({"noise_level": float("nan")}, "not a number"),
        ({"noise_level": -0.5}, "must be ≥ 0"),
        ({"vp_beta_min": 30.0}, "larger than β_min"),
    ],
)
def test_bad_input_explains_and_keeps_the_last_result(change, message):
    lab = PathsLab(run_later=lambda function: None, **SMALL)  # no schedule comparison
    good = lab.result
    lab.param.update(**change)
    assert message in lab.error
    assert lab.result is good
    lab.param.update(**{name: PathsLab.param[name].default for name in change})
    assert lab.error == ""
