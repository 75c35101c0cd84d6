"""The packaged networks: small, documented, and as accurate as their records say -- the
linear-Gaussian one against the closed form, the distance one against the quadrature.

Statistical checks use held-out problems drawn with seeds the trainer and the recorded
evaluation never used, and a tolerance of z standard errors with z = 3.09 (a one-sided
false-failure rate of 1e-3 per check).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posteriorlab.core import gmm
from posteriorlab.core.transformer import (
    checkpoints,
    evaluation,
    exact,
    inference,
    load_pretrained,
    pretrained_metadata,
    simulate,
)
from posteriorlab.core.transformer.model import apply

Z = 3.09


@pytest.fixture(scope="module")
def model():
    return load_pretrained()


@pytest.fixture(scope="module")
def record():
    return pretrained_metadata()


def mean_and_error(values):
    values = np.asarray(values)
    return values.mean(), values.std(ddof=1) / math.sqrt(values.size)


@pytest.mark.parametrize("name", ["linear_gaussian", "norm"])
def test_packaged_files(name):
    record = pretrained_metadata(name)
    weights = checkpoints.WEIGHTS_DIR / f"{name}.eqx"
    assert weights.stat().st_size < 2_000_000
    for field in ("model_config", "training_config", "seed", "commands", "steps", "held_out"):
        assert field in record
    assert record["commands"][0].startswith("posteriorlab train-transformer")
    assert record["model_config"].get("likelihood", "linear_gaussian") == name
    assert load_pretrained(name).config.likelihood == name
    assert not any(checkpoints.WEIGHTS_DIR.glob("*.state.eqx"))


def test_distance_network_is_as_accurate_as_its_record():
    model, record = load_pretrained("norm"), pretrained_metadata("norm")
    stated = record["held_out"]
    meta = simulate.MetaPrior(**record["training_config"]["meta_prior"])
    assert stated["eval_seed"] != 12_345
    # Against the quadrature oracle on 256 problems the trainer and the record never saw.
    result = evaluation.evaluate(jax.random.key(12_345), model, meta, num_problems=256,
                                 batch_size=256)  # fmt: skip
    tolerance = Z * math.hypot(result.standard_error, stated["standard_error"])
    assert abs(result.mean_log_density_gap - stated["mean_log_density_gap"]) <= tolerance
    assert result.mean_log_density_gap > -tolerance  # a KL: not below zero beyond noise


def test_distance_network_is_equivariant():
    model = load_pretrained("norm")
    config = model.config
    problems = jax.jit(simulate.sample_problems, static_argnums=(2, 3, 4, 5))(
        jax.random.key(31), simulate.MetaPrior(), 8, config.max_components,
        config.max_observations, "norm",
    )  # fmt: skip
    args = (problems.prior, problems.component_mask, problems.rows, problems.values,
            problems.noise_sd, problems.observation_mask)
    direct = jax.jit(apply)(model, *args)
    components = jnp.array([3, 1, 0, 2])
    observations = jax.random.permutation(jax.random.key(2), config.max_observations)
    permuted_prior = jax.tree.map(lambda a: a[:, components], problems.prior)
    shuffled = jax.jit(apply)(model, permuted_prior, problems.component_mask[:, components],
                     *(a[:, observations] for a in args[2:]))  # fmt: skip
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(shuffled), strict=True):
        np.testing.assert_allclose(np.asarray(a)[:, components], b, rtol=1e-6, atol=1e-6)


def test_held_out_accuracy_matches_the_record(model, record):
    stated = record["held_out"]
    assert stated["mean_log_density_gap"] <= 0.1  # the accuracy the lab promises, in nats
    meta = simulate.MetaPrior(**record["training_config"]["meta_prior"])
    assert stated["eval_seed"] != 12_345
    result = evaluation.evaluate(jax.random.key(12_345), model, meta, num_problems=2048)
    tolerance = Z * math.hypot(result.standard_error, stated["standard_error"])
    assert result.mean_log_density_gap <= stated["mean_log_density_gap"] + tolerance
    assert result.mean_log_density_gap > -tolerance  # a KL: not below zero beyond noise


def test_no_data_gives_back_the_prior(model, record):
    config = model.config
    problems = simulate.sample_problems(jax.random.key(777), simulate.MetaPrior(), 1024,
                                        config.max_components, config.max_observations)
    no_data = jnp.zeros_like(problems.observation_mask)
    q = apply(model, problems.prior, problems.component_mask, problems.rows, problems.values,
              problems.noise_sd, no_data)
    log_prior = jax.vmap(exact.log_density)(problems.prior, problems.truth, problems.is_1d)
    log_q = jax.vmap(exact.log_density)(q, problems.truth, problems.is_1d)
    gap, error = mean_and_error(log_prior - log_q)
    # Problems without data are part of the held-out distribution; the network must do at
    # least as well there as it does on average.
    assert gap <= record["held_out"]["mean_log_density_gap"] + Z * error


def test_sequential_filter_tracks_the_exact_one(model):
    config = model.config
    problems = simulate.sample_problems(jax.random.key(4242), simulate.MetaPrior(
        probability_1d=0.0), 32, config.max_components, 12)
    gaps_network, gaps_prior = [], []
    for b in range(32):
        problem = jax.tree.map(lambda a, b=b: a[b], problems)
        count = int(problem.component_mask.sum())
        prior = gmm.GaussianMixture(problem.prior.log_weights[:count],
                                    problem.prior.means[:count], problem.prior.chol_covs[:count])
        batches = (problem.rows.reshape(4, 3, 2), problem.values.reshape(4, 3),
                   problem.noise_sd.reshape(4, 3), jnp.ones((4, 3), bool))
        steps = inference.sequential_posteriors(model, prior, *batches)
        truth = exact.sequential_posteriors(prior, *batches)
        final = jax.tree.map(lambda a: a[-1], steps)
        exact_final = jax.tree.map(lambda a: a[-1], truth)
        log_exact = gmm.log_prob(exact_final, problem.truth)
        gaps_network.append(float(log_exact - gmm.log_prob(final, problem.truth)))
        gaps_prior.append(float(log_exact - gmm.log_prob(prior, problem.truth)))
    difference, error = mean_and_error(np.array(gaps_prior) - np.array(gaps_network))
    # After 12 observations in 4 batches, the filtered network is far closer to the exact
    # posterior than the prior is.
    assert difference > Z * error
