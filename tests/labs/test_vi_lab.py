"""The VI lab, driven without a browser: exact answers, convergence, compile counts, bad
input."""

import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.vi import optimize
from posteriorlab.labs import vi
from posteriorlab.labs.vi import VILab


@pytest.fixture(scope="module")
def lab():
    return VILab()


def test_default_result_is_complete(lab):
    result = lab.result
    assert lab.error == ""
    assert result.target_density.shape == result.q_density.shape == (vi.GRID_SIZE,) * 2
    assert result.exact_log_evidence == 0.0  # the banana is a normalised density
    assert result.gradient_variance.shape == (3,)
    lab.advance()
    assert lab.result.bounds.size == vi.CHUNK_STEPS
    assert np.isfinite(lab.result.bounds).all()


def test_exact_posterior_on_the_grid_is_normalised(lab):
    for target in vi.TARGET_LABELS.values():
        lab.target = target
        result = lab.result
        cell = (result.grid_x[1] - result.grid_x[0]) * (result.grid_y[1] - result.grid_y[0])
        # The funnel's neck is narrower than a cell, so it only holds to 2 %.
        assert result.target_density.sum() * cell == pytest.approx(1.0, abs=0.02), target
    lab.target = "banana"


@pytest.fixture(scope="module")
def converged():
    """2,000 Adam steps at a small learning rate from a fixed seed (a deterministic run)
    of a full-rank Gaussian on the regression posterior, which it can represent exactly."""
    lab = VILab(target="regression", family="full_rank", learning_rate=0.01)
    for _ in range(40):
        lab.advance()
    return lab


def test_full_rank_reparam_elbo_reaches_the_exact_posterior(converged):
    result = converged.result
    assert result.kl[0] > 1.0
    assert result.kl[-1] < 0.05
    assert result.bounds[-100:].mean() == pytest.approx(result.exact_log_evidence, abs=0.1)
    np.testing.assert_allclose(result.q_mean, result.exact_mean, atol=0.05)


def test_grid_kl_is_the_closed_form_gaussian_kl(converged):
    """q and p are both Gaussian here, so KL(q ‖ p) has a closed form; the lab's grid
    quadrature (q well inside the window) must agree with it."""
    q = converged._fit["state"].params
    posterior = converged._fit["target"].posterior()
    mean_p, cov_p = np.asarray(gmm.mean(posterior)), np.asarray(gmm.covariance(posterior))
    mean_q, chol_q = np.asarray(q.loc), np.asarray(q.scale_tril)
    cov_q = chol_q @ chol_q.T
    gap = mean_p - mean_q
    closed_form = 0.5 * (
        np.trace(np.linalg.solve(cov_p, cov_q)) + gap @ np.linalg.solve(cov_p, gap) - 2
        + np.log(np.linalg.det(cov_p) / np.linalg.det(cov_q))
    )  # fmt: skip
    assert converged.result.kl[-1] == pytest.approx(closed_form, rel=1e-3, abs=1e-5)


def test_score_function_gradient_is_noisier_than_reparameterisation():
    result = VILab(target="regression").result
    reparam, score, baseline = result.gradient_variance
    assert score > 10 * reparam
    assert baseline < score


def test_continuous_changes_never_recompile(lab):
    lab.param.update(target="banana", family="mean_field", objective="elbo")
    lab.advance()
    size = optimize.run_chunk._cache_size()
    lab.param.update(curvature=0.4, learning_rate=0.05, seed=3)
    lab.advance()
    lab.curvature = 1.3
    lab.advance()
    assert optimize.run_chunk._cache_size() == size


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(learning_rate=float("nan")), "Learning rate (Adam) = nan is not a number"),
        (dict(learning_rate=0.0), "Learning rate = 0.0 must lie in (0, 10]"),
        (dict(objective="iwae", num_particles=0), "Samples K = 0 is not allowed"),
        (dict(target="regression", noise_scale=-1.0), "Regression noise σ = -1.0 must be"),
        (
            dict(family="mixture", component_estimator="enum", objective="iwae"),
            "Enumeration sums over one component choice",
        ),
    ],
)
def test_bad_input_is_explained_and_the_last_result_stays(change, message):
    lab = VILab()
    before = lab.result
    lab.param.update(**change)
    assert message in lab.error
    lab.advance()
    assert lab.result is before
    assert not lab.running


def test_mixture_family_with_enumerated_component_trains():
    lab = VILab(target="mixture", family="mixture", component_estimator="enum")
    for _ in range(4):
        lab.advance()
    assert lab.error == ""
    assert lab.result.kl[-1] < lab.result.kl[0]
