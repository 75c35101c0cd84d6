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
        (dict(objective="hvi"), "this family has not: choose the hierarchical Gaussian or"),
        (dict(family="ring", objective="iwhvi", num_inner=0), "Inner samples m = 0 is not"),
        (dict(family="ring", objective="diwhvi", num_particles=-2), "Samples K = -2 is not"),
        (dict(target="cone", cone_observation=0.0), "Observed o = 0.0 must be positive"),
        (dict(target="cone", cone_observation=float("nan")), "= nan is not a number"),
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


def test_cone_with_the_ring_family_fits_below_the_exact_evidence():
    lab = VILab(target="cone", family="ring", objective="diwhvi", num_particles=5, num_inner=5)
    assert lab.result.exact_log_evidence == pytest.approx(-5.3232, abs=1e-4)
    assert lab.result.target_density.shape == (vi.CONE_GRID_SIZE,) * 2
    for _ in range(30):
        lab.advance()
    result = lab.result
    assert lab.error == ""
    recent = result.bounds[-500:]
    # The bound climbs from about -440 at the start; the mean of the last 500 steps must
    # lie below the evidence (a bound) by more than 4.5 standard errors of that mean
    # allows, and have left the start far behind.
    standard_error = recent.std() / np.sqrt(recent.size)
    assert recent.mean() < result.exact_log_evidence + 4.5 * standard_error
    assert recent.mean() > -12.0
    assert result.kl[-1] < result.kl[0] / 10


def test_changing_the_observation_or_inner_objective_settings_never_recompiles():
    lab = VILab(target="cone", family="ring", objective="iwhvi")
    lab.advance()
    size = optimize.run_chunk._cache_size()
    lab.cone_observation = 9.0
    lab.advance()
    assert optimize.run_chunk._cache_size() == size


def conjugate_2d_model(observations):
    import numpyro
    import numpyro.distributions as dist

    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=observations)


def test_numpyro_model_is_fitted_with_its_evidence_by_grid_quadrature():
    import jax.numpy as jnp

    from posteriorlab.core.vi import models

    observations = jnp.array([[1.0, -0.5], [0.6, 0.1], [1.4, -0.2]])
    lab = VILab(family="full_rank")
    lab.use_numpyro_model(conjugate_2d_model, observations, name="conjugate", window=(-3, 4, -4, 3))
    assert lab.target == "numpyro"
    assert "NumPyro: conjugate" in lab.param.target.names
    assert "NumPyro: conjugate" not in VILab().param.target.names  # per session
    exact = models.ConjugateGaussian.create(observations)
    assert lab.result.exact_log_evidence == pytest.approx(float(exact.log_evidence()), abs=1e-6)
    assert lab.result.evidence_label == "log p(x) by grid quadrature"
    np.testing.assert_allclose(lab.result.exact_mean, exact.posterior()[0], atol=1e-6)
    for _ in range(40):
        lab.advance()
    # A full-rank Gaussian holds this posterior exactly; Adam's steps at a fixed rate
    # keep q jittering around it, so judge the median KL of the last 20 chunks.
    assert lab.result.kl[0] > 2.0
    assert np.median(lab.result.kl[-20:]) < 0.05


def three_latents(observations):
    import numpyro
    import numpyro.distributions as dist

    loc = numpyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    numpyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=observations)


def test_numpyro_model_of_another_dimension_is_explained():
    import jax.numpy as jnp

    lab = VILab()
    before = lab.result
    lab.use_numpyro_model(three_latents, jnp.ones((3, 2)), name="three")
    assert "has 3 unconstrained latent dimensions, but the lab's families" in lab.error
    assert lab.result is before
