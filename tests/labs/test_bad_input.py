"""The bad-input matrix: every kind of nonsense a class types, in every lab.

Each row of ``CASES`` is one input a student (or a link) can give: a count that is zero,
negative, huge or not whole; a variance that is not positive or not a number; a
covariance that is not positive definite; data that are NaN or infinite; a computation
whose answer is not finite. For each, the lab must

* say what is wrong in ``error``, naming the value it was given and what it allows
  (the fragments listed in the row must all appear);
* keep its last good result, so the page goes on showing it;
* recover when the input is put right;
* touch nothing outside its own state: another session's lab, and the class defaults
  every new session starts from, are unchanged.

Values that a parameter itself refuses (a count of 2.5, ``N=abc`` in an address) never
reach a lab: they arrive through the address, and :func:`apply_url_values` explains
them on the page (``URL_CASES``). The README's "Bad input" table is this matrix.
"""

import math

import pytest

from posteriorlab.dashboards import paths as paths_dashboard
from posteriorlab.dashboards import smc as smc_dashboard
from posteriorlab.dashboards import transformer as transformer_dashboard
from posteriorlab.dashboards import vi as vi_dashboard
from posteriorlab.dashboards.app import apply_url_values
from posteriorlab.labs.paths import PathsLab
from posteriorlab.labs.smc import SMCLab
from posteriorlab.labs.steering import SteeringLab
from posteriorlab.labs.transformer import TransformerLab
from posteriorlab.labs.vi import VILab

LABS = {
    "smc": lambda: SMCLab(num_steps=20, replicates=20),
    "paths": lambda: PathsLab(num_trajectories=100, num_steps=10),
    "steering": lambda: SteeringLab(num_particles=16),
    "vi": VILab,
    "transformer": TransformerLab,
}

# (lab, kind of input, the changes, fragments the message must contain)
CASES = [
    ("smc", "count zero", {"num_particles": 0}, ["N = 0", "≥ 1"]),
    ("smc", "count negative", {"num_particles": -5}, ["N = -5", "≥ 1"]),
    ("smc", "count huge", {"num_particles": 10**9}, ["1,000,000,000", "200,000"]),
    ("smc", "count × steps too big", {"num_particles": 150_000, "smoother": "paris",
                                       "num_steps": 200}, ["150,000 × 200", "20,000,000"]),
    ("smc", "count × steps × dimension too big",
     {"model": "linear_gaussian_2d", "num_particles": 60_000, "smoother": "paris",
      "num_steps": 200}, ["60,000 × 200 × 2", "20,000,000"]),
    ("paths", "count zero", {"num_steps": 0}, ["Steps = 0", "1 to"]),
    ("paths", "count huge", {"num_steps": 10**7}, ["Steps = 10000000", "1 to"]),
    ("vi", "count zero", {"objective": "iwae", "num_particles": 0}, ["Samples K = 0", "1 to"]),
    ("vi", "count negative", {"objective": "iwhvi", "family": "hierarchical", "num_inner": -3},
     ["Inner samples m = -3", "1 to"]),
    ("smc", "variance zero", {"sigma_x": 0.0}, ["σ_x", "0.0", "positive"]),
    ("smc", "variance NaN", {"sigma_y": math.nan}, ["σ_y", "nan"]),
    ("paths", "variance zero", {"components": "1, 0, 0, 0"},
     ["Component 1", "standard deviations (0.0, 0.0)", "positive"]),
    ("paths", "variance NaN", {"noise_level": math.nan}, ["nan", "not a number"]),
    ("steering", "variance zero", {"obs_noise_sd": 0.0}, ["0.0", "positive"]),
    ("vi", "variance zero", {"target": "regression", "noise_scale": 0.0},
     ["σ = 0.0", "positive"]),
    ("vi", "variance NaN", {"noise_scale": math.nan}, ["nan", "not a number"]),
    ("transformer", "variance zero", {"noise_sd": 0.0}, ["0.0", "positive"]),
    ("transformer", "variance NaN", {"noise_sd": math.nan}, ["nan"]),
    ("paths", "covariance not positive definite", {"components": "1, 0, 0, 1, 1, 1.5"},
     ["1.5", "correlation"]),
    ("transformer", "covariance not positive definite",
     {"components": "0.5, 0, 0, 1, 1, 1.2\n0.5, 2, 2, 1"}, ["1.2", "correlation"]),
    ("transformer", "weights not summing to 1", {"components": "0.5, 0, 0, 1\n0.6, 2, 2, 1"},
     ["1.1", "sum"]),
    ("transformer", "too many components",
     {"components": "\n".join(f"0.2, {k}, 0, 1" for k in range(5))}, ["5", "4"]),
    ("smc", "data NaN", {"observations_text": "0.5, nan, 1.0"}, ["nan", "number"]),
    ("smc", "data infinite", {"observations_text": "0.5, inf"}, ["inf", "number"]),
    ("transformer", "data NaN", {"observations": "nan, 1"}, ["nan"]),
    ("steering", "data NaN", {"obs_y": math.nan}, ["nan", "not a number"]),
    ("smc", "all weights zero", {"observations_text": "0, 0, 1e200, 0", "sigma_y": 0.01},
     ["every particle weight became zero", "t = 2"]),
]


def _changed_away_from(lab, changes):
    """Whatever the case leaves as it was before, as the values to restore."""
    return {name: getattr(lab, name) for name in changes}


@pytest.mark.parametrize(
    ("lab_name", "changes", "fragments"),
    [pytest.param(lab, changes, fragments, id=f"{lab}: {kind}")
     for lab, kind, changes, fragments in CASES],
)  # fmt: skip
def test_bad_input_is_explained_and_loses_nothing(lab_name, changes, fragments):
    lab, other_session = LABS[lab_name](), LABS[lab_name]()
    good, defaults = _changed_away_from(lab, changes), {
        name: type(lab).param[name].default for name in changes
    }
    last_result = lab.result
    assert lab.error == ""
    assert last_result is not None

    lab.param.update(**changes)

    assert all(fragment.lower() in lab.error.lower() for fragment in fragments), lab.error
    assert lab.result is last_result, "the last good result must stay on the page"
    assert other_session.error == ""
    assert other_session.result is not None
    assert {name: type(lab).param[name].default for name in changes} == defaults

    lab.param.update(**good)
    assert lab.error == ""
    assert lab.result is not None


def test_a_diverging_fit_is_explained_and_keeps_the_last_good_fit():
    lab = VILab(target="funnel", learning_rate=10.0)
    lab.advance()
    assert "diverged at learning rate 10.0" in lab.error
    assert lab.result is not None
    assert all(math.isfinite(value) for value in lab.result.bounds), "a NaN fit was shown"


URL_CASES = [
    (SMCLab, smc_dashboard.URL_PARAMETERS, "N", "2.5"),
    (SMCLab, smc_dashboard.URL_PARAMETERS, "N", "abc"),
    (SMCLab, smc_dashboard.URL_PARAMETERS, "seed", "-1"),
    (PathsLab, paths_dashboard.URL_PARAMETERS, "steps", "ten"),
    (PathsLab, paths_dashboard.URL_PARAMETERS, "schedule", "nonsense"),
    (VILab, vi_dashboard.URL_PARAMETERS, "K", "1e400"),
    (VILab, vi_dashboard.URL_PARAMETERS, "target", "unicorn"),
    (TransformerLab, transformer_dashboard.URL_PARAMETERS, "sigma", "x"),
]


@pytest.mark.parametrize(("lab_class", "names", "key", "value"), URL_CASES)
def test_malformed_or_out_of_bounds_address_values_are_named(lab_class, names, key, value):
    lab = lab_class()
    before = {name: getattr(lab, name) for name in names}
    problems = apply_url_values({key: value}, [(lab, names)])
    assert len(problems) == 1
    assert f"{key}={value!r}" in problems[0]
    assert "kept" in problems[0]
    assert {name: getattr(lab, name) for name in names} == before
