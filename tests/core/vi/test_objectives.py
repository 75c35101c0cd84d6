"""Objectives against exact values: IWAE on the conjugate Gaussian, NumPyro's estimators,
the hierarchical bounds, Rényi limits and the wake-sleep gradients.

Statistical assertions compare a mean over R seeded replicates with its expected value
within Z_SCORE standard errors (estimated from the replicates; for two independent
estimates, of their difference). Z_SCORE = 4.5 gives a two-sided false-failure rate of
about 7e-6 per assertion under the normal approximation (below 1e-3 for the file).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import RenyiELBO, Trace_ELBO

from posteriorlab.core.vi import families, models, objectives, programs

Z_SCORE = 4.5

# The research's conjugate Gaussian: z ~ N(0, 1), x | z ~ N(z, 1), x = 1; q = prior.
CONJUGATE = models.ConjugateGaussian.create([1.0])
LOG_EVIDENCE = -1.51551  # log N(1; 0, 2)
PRIOR_FAMILY = families.MeanFieldGaussian.standard(1)
# IWAE_K with q = prior: K = 1 exact, others Monte Carlo (value, standard error).
IWAE_REFERENCE = {
    1: (-1.9189, 0.0),
    2: (-1.6523, 0.0014),
    5: (-1.5575, 0.0007),
    10: (-1.5354, 0.0005),
    100: (-1.5172, 0.0001),
    1000: (-1.5159, 0.0001),
}


def mean_and_standard_error(samples):
    samples = np.asarray(samples)
    return samples.mean(), samples.std(ddof=1) / np.sqrt(samples.size)


@functools.partial(jax.jit, static_argnames=("objective", "num_replicates"))
def values(key, objective, family, log_joint, args=(), num_replicates=20_000, estimators=None):
    def one(k):
        return programs.value_and_surrogate(
            objective, k, family, log_joint, *args, estimators=estimators
        )[0]

    return jax.vmap(one)(jax.random.split(key, num_replicates))


def test_conjugate_oracle_reproduces_the_reference_evidence():
    assert float(CONJUGATE.log_evidence()) == pytest.approx(LOG_EVIDENCE, abs=1e-5)
    mean, scale = CONJUGATE.posterior()
    assert float(mean[0]) == pytest.approx(0.5)
    assert float(scale[0] ** 2) == pytest.approx(0.5)


IWAE_BY_K = {k: functools.partial(objectives.iwae, num_particles=k) for k in IWAE_REFERENCE}


def test_iwae_increases_with_k_towards_the_log_evidence(key):
    means = []
    for i, (k, (reference, reference_se)) in enumerate(IWAE_REFERENCE.items()):
        replicates = 20_000 if k < 1000 else 2_000
        mean, se = mean_and_standard_error(
            values(jax.random.fold_in(key, i), IWAE_BY_K[k], PRIOR_FAMILY, CONJUGATE,
                   num_replicates=replicates)
        )
        assert abs(mean - reference) < Z_SCORE * np.hypot(se, reference_se), k
        assert mean < LOG_EVIDENCE + Z_SCORE * se
        means.append((mean, se))
    for (low, low_se), (high, high_se) in zip(means[:-1], means[1:], strict=True):
        assert high - low > -Z_SCORE * np.hypot(low_se, high_se)
    print(means)
