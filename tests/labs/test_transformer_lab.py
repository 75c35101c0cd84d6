"""The distribution-transformer lab without a browser: its exact answer against the
core's conditioning (and, for distances, the core's quadrature), the packaged networks'
accuracy, compile counts, bad input.

Statistical assertions allow Z_SCORE = 4.5 standard errors (two-sided false-failure
rate about 7e-6 each, normal approximation).
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.transformer import inference, quadrature
from posteriorlab.labs import transformer
from posteriorlab.labs.transformer import TransformerLab

Z_SCORE = 4.5


@pytest.fixture(scope="module")
def lab():
    return TransformerLab()


def unpadded_exact(lab):
    rows = lab._prior_rows()
    prior = gmm.from_covariances(rows.weights, rows.means, rows.covariances)
    scalar_rows, values = lab._scalar_observations()
    noise = lab.noise_sd**2 * jnp.eye(values.size)
    return (
        gmm.condition_on_linear_gaussian(prior, scalar_rows, noise, values),
        gmm.log_marginal_likelihood(prior, scalar_rows, noise, values),
    )


@pytest.mark.parametrize("likelihood", ["identity", "projection"])
def test_exact_answer_is_the_cores_conditioning_on_unpadded_data(lab, likelihood):
    lab.likelihood = likelihood
    posterior, log_evidence = unpadded_exact(lab)
    result = lab.result
    weights, means = result.exact_components
    np.testing.assert_allclose(weights, np.exp(posterior.log_weights), atol=1e-5)
    np.testing.assert_allclose(means, posterior.means, atol=1e-4)
    assert result.log_evidence == pytest.approx(float(log_evidence), abs=1e-4)
    np.testing.assert_allclose(result.answers[1].mean, gmm.mean(posterior), atol=1e-4)
    cell = (result.grid_x[1] - result.grid_x[0]) * (result.grid_y[1] - result.grid_y[0])
    assert result.answers[1].density.sum() * cell == pytest.approx(1.0, abs=0.01)
    lab.likelihood = "identity"


def test_packaged_network_is_close_to_exact_and_fast(lab):
    network, exact = lab.result.answers[0], lab.result.answers[1]
    assert network.forward_kl < 0.1 + Z_SCORE * network.forward_kl_se
    assert np.linalg.norm(network.mean - exact.mean) < 0.1
    assert network.milliseconds < 50  # the 5 ms target is measured in bench/


def test_importance_sampling_mean_agrees_with_exact_within_its_error():
    lab = TransformerLab(num_particles=10_000, seed=3)
    result = lab.result
    exact = result.answers[1]
    particles, weights = result.particles, result.particle_weights
    spread = np.sqrt(weights @ (particles - exact.mean) ** 2)
    standard_error = spread / math.sqrt(result.effective_sample_size)
    assert np.all(np.abs(result.answers[2].mean - exact.mean) < Z_SCORE * standard_error)


COMPILED = [inference.padded_posterior, transformer._exact, transformer._quadrature,
            transformer._importance, transformer._tempered, transformer._variational,
            transformer._kernel_density_on, transformer._quadrature_log_density_on]  # fmt: skip


def test_no_change_recompiles(lab):
    compiled = COMPILED
    lab.likelihood = "norm"  # each likelihood compiles its programs once
    lab.likelihood = "identity"
    sizes = [function._cache_size() for function in compiled]
    lab.noise_sd = 0.9
    lab.add_observation(0.5, -1.0)
    lab.components = "0.6, -1, 0, 1\n0.4, 1.5, 0.5, 0.5, 0.7, -0.3"  # two components
    lab.likelihood = "projection"
    lab.direction_degrees = 75.0
    lab.likelihood = "norm"
    lab.add_observation(1.0, 2.0)  # one more distance
    lab.distances = "1.5"
    assert lab.error == ""
    assert [function._cache_size() for function in compiled] == sizes
    lab.param.update(likelihood="identity", components=transformer.DEFAULT_PRIOR,
                     observations=transformer.DEFAULT_OBSERVATIONS,
                     distances=transformer.DEFAULT_DISTANCES, noise_sd=1.0)  # fmt: skip


def test_moving_a_component_rewrites_its_row_and_every_posterior_follows(lab):
    before = lab.result
    sizes = [function._cache_size() for function in COMPILED]
    lab.move_component(1, (2.5, -1.0))  # what dropping the second + at (2.5, -1) does
    rows = lab.components.splitlines()
    assert rows == ["0.5, -2, 0, 0.8", "0.3, 2.500, -1.000, 0.6, 1.0, 0.5", "0.2, 0, -2.5, 0.7"]
    result = lab.result
    assert result.prior_means.tolist() == [[-2, 0], [2.5, -1], [0, -2.5]]
    for answer, old in zip(result.answers, before.answers, strict=True):
        assert np.linalg.norm(answer.mean - old.mean) > 0.05, answer.name  # each followed
    exact_means = result.exact_components[1]
    assert np.linalg.norm(exact_means[1] - before.exact_components[1][1]) > 0.5
    assert [function._cache_size() for function in COMPILED] == sizes  # nothing recompiled
    lab.components = transformer.DEFAULT_PRIOR


@pytest.mark.parametrize(
    "text", ["0.5, -2, 0, 0.8\n0.5, oops, 1, 0.6", "0.7, -2, 0, 0.8\n0.7, 2, 1, 0.6"]
)
def test_a_drag_while_the_components_do_not_parse_is_ignored(lab, text):
    lab.components = text
    message, shown = lab.error, lab.result
    assert message
    lab.move_component(0, (1.0, 1.0))
    assert lab.components == text
    assert lab.error == message
    assert lab.result is shown
    lab.components = transformer.DEFAULT_PRIOR
    assert lab.error == ""


def test_simulated_truth_is_scored_by_every_density(lab):
    lab.param.trigger("simulate")
    result = lab.result
    assert result.truth is not None
    assert result.points.shape[0] >= 3
    for answer in result.answers:  # the particle answers through their density estimates
        assert math.isfinite(answer.truth_log_density)
    lab.add_observation(0.0, 0.0)  # more data: the truth stays
    assert lab.result.truth is not None
    lab.components = "0.5, -2, 0, 0.8\n0.5, 2, 1, 0.6"  # a new prior forgets it
    assert lab.result.truth is None
    lab.param.update(components=transformer.DEFAULT_PRIOR,
                     observations=transformer.DEFAULT_OBSERVATIONS)  # fmt: skip


def test_noise_outside_the_trained_range_is_noted():
    lab = TransformerLab(noise_sd=3.0)
    assert lab.error == ""
    assert "outside the noise the network was trained on" in lab.result.note


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(components="0.5, 0, 0, 1\n0.6, 1, 1, 1"), "weights sum to 1.1; they must sum"),
        (dict(components="1, 0, 0, 1, 1, 1.2"), "correlation 1.2; it must be within"),
        (dict(components="1, 0, 0, -1"), "standard deviations (-1.0, -1.0); both must be"),
        (dict(components="0.2,0,0,1;0.2,1,0,1;0.2,2,0,1;0.2,3,0,1;0.2,4,0,1"),
         "has 5 components; this lab allows up to 4"),
        (dict(components=""), "The prior mixture has no components"),
        (dict(observations="1, nan"), "must be two finite numbers"),
        (dict(observations="1, 2, 3"), "must be two finite numbers"),
        (dict(observations="\n".join(["0, 0"] * 11)), "11 observed points"),
        (dict(noise_sd=0.0), "Noise σ = 0.0 must be positive"),
        (dict(likelihood="norm", distances="2, abc"), "Distance 2 ('abc') is not a number"),
        (dict(likelihood="norm", distances="1, nan"), "Distance 2 is 'nan'"),
        (dict(likelihood="norm", distances="-6"), "a distance ‖x‖ is never negative"),
        (dict(likelihood="norm", distances=", ".join(["1"] * 21)), "21 observed distances"),
        (dict(noise_sd=float("nan")), "Noise σ = nan is not a number"),
    ],
)  # fmt: skip
def test_bad_input_is_explained_and_the_last_result_stays(change, message):
    lab = TransformerLab()
    before = lab.result
    lab.param.update(**change)
    assert message in lab.error
    assert lab.result is before
    lab.param.update(components=transformer.DEFAULT_PRIOR, likelihood="identity",
                     observations=transformer.DEFAULT_OBSERVATIONS,
                     distances=transformer.DEFAULT_DISTANCES, noise_sd=1.0)  # fmt: skip
    assert lab.error == ""


@pytest.fixture(scope="module")
def distance_lab():
    return TransformerLab(likelihood="norm", num_particles=10_000, seed=1)


def test_distance_exact_answer_is_the_cores_quadrature(distance_lab):
    rows = distance_lab._prior_rows()
    prior = gmm.from_covariances(rows.weights, rows.means, rows.covariances)
    _, values = distance_lab._scalar_observations()
    noise = np.full(values.size, distance_lab.noise_sd)
    posterior = quadrature.norm_posterior(prior, values, noise, np.ones(values.size, bool))
    result = distance_lab.result
    assert result.log_evidence == pytest.approx(float(posterior.log_evidence), abs=1e-4)
    np.testing.assert_allclose(result.answers[1].mean, quadrature.mean(posterior), atol=1e-4)
    assert result.exact_components is None
    cell = (result.grid_x[1] - result.grid_x[0]) * (result.grid_y[1] - result.grid_y[0])
    assert result.answers[1].density.sum() * cell == pytest.approx(1.0, abs=0.01)


def test_distance_answers_agree_with_the_quadrature(distance_lab):
    result = distance_lab.result
    exact = result.answers[1]
    # Tempered SMC's particles are equally weighted draws; their mean is within Z_SCORE
    # standard errors of the exact mean (the ESS of a resampled, moved cloud is below N:
    # the standard error uses N / 4, a generous allowance for the correlation).
    spread = result.smc_particles.std(axis=0, ddof=1)
    error = spread / math.sqrt(result.smc_particles.shape[0] / 4)
    assert np.all(np.abs(result.answers[3].mean - exact.mean) < Z_SCORE * error)
    assert result.smc_temperatures[-1] == 1.0
    assert result.smc_log_evidence == pytest.approx(result.log_evidence, abs=0.05)


def test_a_click_adds_the_distance_of_the_point(distance_lab):
    before = distance_lab.result.distances.size
    distance_lab.add_observation(3.0, -4.0)
    assert distance_lab.distances.endswith("5.000")
    assert distance_lab.result.distances.size == before + 1
    assert distance_lab.result.points.shape == (0, 2)
    distance_lab.distances = transformer.DEFAULT_DISTANCES


def test_a_negative_reading_is_explained_not_refused(distance_lab):
    distance_lab.distances = "-0.4, 0.3"
    assert distance_lab.error == ""
    assert "negative distance reading is possible" in distance_lab.result.note
    distance_lab.distances = transformer.DEFAULT_DISTANCES
    assert distance_lab.result.note == ""


def test_simulated_distances_score_every_answer(distance_lab):
    distance_lab.param.trigger("simulate")
    result = distance_lab.result
    assert result.truth is not None
    assert result.distances.size >= 3
    for answer in result.answers:
        assert math.isfinite(answer.truth_log_density)
    distance_lab.distances = transformer.DEFAULT_DISTANCES
