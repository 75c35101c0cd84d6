"""The estimator language: the flip example and every per-site mix against exact gradients.

Statistical assertions compare a mean over R seeded replicates with its exact value
within Z_SCORE standard errors (estimated from the replicates). Z_SCORE = 4.5 gives a
two-sided false-failure rate of about 7e-6 per assertion under the normal approximation,
so below 1e-3 for the roughly 100 assertions of this file together.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from posteriorlab.core.vi import programs

Z_SCORE = 4.5
NUM_REPLICATES = 20_000


def assert_mean_within(samples, expected):
    samples = np.asarray(samples)
    mean = samples.mean(0)
    standard_error = samples.std(0, ddof=1) / np.sqrt(samples.shape[0])
    np.testing.assert_array_less(np.abs(mean - expected), Z_SCORE * standard_error + 1e-12)


def flip(t, p):
    """L(p) = E_{b ~ Bernoulli(p)}[b ? 0 : -p/2] = -p(1-p)/2, so L'(p) = p - 1/2."""
    b = t.sample("b", dist.Bernoulli(probs=p), programs.Enumerate())
    return jnp.where(b == 1, 0.0, -p / 2)


def flip_gradients(key, p, estimator):
    def one(k):
        return programs.grad_estimate(flip, k, p, estimators={"b": estimator})[1]

    return jax.vmap(one)(jax.random.split(key, NUM_REPLICATES))


flip_gradients_jit = jax.jit(flip_gradients)

PROBABILITIES = [0.1, 0.3, 0.5, 0.7, 0.9]


def test_flip_enumeration_is_exact(key):
    for p in PROBABILITIES:
        value, gradient = programs.grad_estimate(flip, key, p)
        assert value == pytest.approx(-p * (1 - p) / 2, abs=1e-14)
        assert gradient == pytest.approx(p - 0.5, abs=1e-14)


@pytest.mark.parametrize(
    "estimator", [programs.Score(), programs.Score(baseline=-0.1), programs.MeasureValued()]
)
def test_flip_score_and_measure_valued_are_unbiased(key, estimator):
    for i, p in enumerate(PROBABILITIES):
        gradients = flip_gradients_jit(jax.random.fold_in(key, i), p, estimator)
        assert_mean_within(gradients, p - 0.5)


# A three-site program whose expectation we can sum exactly:
#   b ~ Bernoulli(p), c ~ Categorical(softmax(logits)), z ~ N(mu + b + c, 1),
#   f = z^2 (1 + b) + c mu.
# Site order b, c, z puts score sites both before and after enumerated ones.


def mixed_program(t, params):
    p, mu, logits = params["p"], params["mu"], params["logits"]
    b = t.sample("b", dist.Bernoulli(probs=p), "score")
    c = t.sample("c", dist.Categorical(logits=logits), "score")
    z = t.sample("z", dist.Normal(mu + b + c, 1.0), "reparam")
    return z**2 * (1 + b) + c * mu


def mixed_exact(params):
    p, mu, logits = params["p"], params["mu"], params["logits"]
    pc = jax.nn.softmax(logits)
    total = 0.0
    for b, c in itertools.product(range(2), range(3)):
        weight = (p if b else 1 - p) * pc[c]
        total += weight * (((mu + b + c) ** 2 + 1) * (1 + b) + c * mu)
    return total


PARAMS = {"p": 0.3, "mu": 0.4, "logits": jnp.array([0.1, -0.2, 0.3])}

MIXES = list(
    itertools.product(
        [
            programs.Score(),
            programs.Score(baseline=3.0),
            programs.Enumerate(),
            programs.MeasureValued(),
        ],
        [programs.Score(), programs.Enumerate()],
        [programs.Reparam(), programs.Score()],
    )
)


@jax.jit
def mixed_replicates(key, estimators):
    def one(k):
        value, surrogate = programs.value_and_surrogate(
            mixed_program, k, PARAMS, estimators=estimators
        )
        gradient = jax.grad(
            lambda q: programs.value_and_surrogate(mixed_program, k, q, estimators=estimators)[1]
        )(PARAMS)
        flat = jnp.concatenate([gradient["p"][None], gradient["mu"][None], gradient["logits"]])
        return value, surrogate, flat

    return jax.vmap(one)(jax.random.split(key, NUM_REPLICATES))


@pytest.mark.parametrize(("b", "c", "z"), MIXES, ids=lambda e: type(e).__name__)
def test_every_estimator_mix_is_unbiased(key, b, c, z):
    estimators = {"b": b, "c": c, "z": z}
    values, surrogates, gradients = mixed_replicates(key, estimators)
    np.testing.assert_allclose(surrogates, values, rtol=1e-12)  # same value, to rounding
    exact_gradient = jax.grad(mixed_exact)(PARAMS)
    exact = np.concatenate(
        [[exact_gradient["p"]], [exact_gradient["mu"]], np.asarray(exact_gradient["logits"])]
    )
    assert_mean_within(values, mixed_exact(PARAMS))
    assert_mean_within(gradients, exact)


def test_changing_a_baseline_does_not_retrace(key):
    estimators = {"b": programs.Score(baseline=1.0), "c": programs.Score(), "z": programs.Reparam()}
    mixed_replicates(key, estimators)
    size = mixed_replicates._cache_size()
    mixed_replicates(key, {**estimators, "b": programs.Score(baseline=-2.0)})
    assert mixed_replicates._cache_size() == size


def test_enumerating_everything_is_exact(key):
    def discrete(t, params):
        b = t.sample("b", dist.Bernoulli(probs=params["p"]), "enum")
        c = t.sample("c", dist.Categorical(logits=params["logits"]), "enum")
        return (1 + b) * (b + c) ** 2 + c * params["mu"]

    def exact(params):
        pc = jax.nn.softmax(params["logits"])
        return sum(
            (params["p"] if b else 1 - params["p"])
            * pc[c]
            * ((1 + b) * (b + c) ** 2 + c * params["mu"])
            for b, c in itertools.product(range(2), range(3))
        )

    value, gradient = programs.grad_estimate(discrete, key, PARAMS)
    assert value == pytest.approx(exact(PARAMS), abs=1e-12)
    for name, g in jax.grad(exact)(PARAMS).items():
        np.testing.assert_allclose(gradient[name], g, atol=1e-12)


def test_bad_estimator_choices_say_what_is_wrong(key):
    with pytest.raises(ValueError, match="cannot be reparameterised"):
        programs.grad_estimate(flip, key, 0.3, estimators={"b": "reparam"})
    with pytest.raises(ValueError, match="unknown gradient estimator 'reinforce'"):
        programs.grad_estimate(flip, key, 0.3, estimators={"b": "reinforce"})

    def batched(t, p):
        return t.sample("b", dist.Bernoulli(probs=p), "mvd", (3,)).sum()

    with pytest.raises(ValueError, match="needs a scalar site"):
        programs.value_and_surrogate(batched, key, 0.3)

    def normal_mvd(t, mu):
        return t.sample("x", dist.Normal(mu, 1.0), "mvd")

    with pytest.raises(ValueError, match="implemented for Bernoulli"):
        programs.value_and_surrogate(normal_mvd, key, 0.3)

    def twice(t, mu):
        return t.sample("x", dist.Normal(mu, 1.0)) + t.sample("x", dist.Normal(mu, 1.0))

    with pytest.raises(ValueError, match="met twice"):
        programs.value_and_surrogate(twice, key, 0.3)
