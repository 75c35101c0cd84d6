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
            values(
                jax.random.fold_in(key, i),
                IWAE_BY_K[k],
                PRIOR_FAMILY,
                CONJUGATE,
                num_replicates=replicates,
            )
        )
        assert abs(mean - reference) < Z_SCORE * np.hypot(se, reference_se), k
        assert mean < LOG_EVIDENCE + Z_SCORE * se
        means.append((mean, se))
    # Gaps up to K = 100 are at least ten standard errors: strictly increasing. The last
    # (about 0.0013) is a few: not significantly decreasing.
    pairs = list(zip(means[:-1], means[1:], strict=True))
    for (low, _), (high, _) in pairs[:-1]:
        assert high > low
    (low, low_se), (high, high_se) = pairs[-1]
    assert high - low > -Z_SCORE * np.hypot(low_se, high_se)


# The same conjugate model and a Gaussian guide in NumPyro.


def numpyro_model(x):
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def numpyro_guide(x):
    loc = numpyro.param("loc", 0.0)
    scale = numpyro.param("scale", 1.0)
    numpyro.sample("z", dist.Normal(loc, scale))


GUIDE_PARAMS = {"loc": 0.3, "scale": 0.6}
GUIDE_FAMILY = families.MeanFieldGaussian(jnp.array([0.3]), jnp.log(jnp.array([0.6])))


def exact_gaussian_elbo(loc, scale):
    """E_q[log N(z; 0, 1) + log N(1; z, 1)] + H(q) for q = N(loc, scale^2)."""
    second_moment = loc**2 + scale**2
    expected_log_joint = (
        -np.log(2 * np.pi) - 0.5 * second_moment - 0.5 * (1 - 2 * loc + second_moment)
    )
    return expected_log_joint + 0.5 * np.log(2 * np.pi * np.e * scale**2)


@pytest.mark.parametrize("num_particles", [1, 5])
def test_elbo_and_iwae_agree_with_numpyro(key, num_particles):
    key_ours, key_numpyro = jax.random.split(key)
    if num_particles == 1:
        estimator = Trace_ELBO()
        ours = values(key_ours, objectives.elbo, GUIDE_FAMILY, CONJUGATE)
    else:
        estimator = RenyiELBO(alpha=0.0, num_particles=num_particles)
        ours = values(key_ours, IWAE_BY_K[num_particles], GUIDE_FAMILY, CONJUGATE)
    theirs = -jax.jit(
        jax.vmap(lambda k: estimator.loss(k, GUIDE_PARAMS, numpyro_model, numpyro_guide, 1.0))
    )(jax.random.split(key_numpyro, 20_000))
    (m1, se1), (m2, se2) = mean_and_standard_error(ours), mean_and_standard_error(theirs)
    assert abs(m1 - m2) < Z_SCORE * np.hypot(se1, se2)
    if num_particles == 1:
        exact = exact_gaussian_elbo(0.3, 0.6)
        assert abs(m1 - exact) < Z_SCORE * se1
        assert abs(m2 - exact) < Z_SCORE * se2


def test_numpyro_log_joint_is_our_target(key):
    log_joint, to_constrained = models.numpyro_log_joint(numpyro_model, 1.0)
    z = jax.random.normal(key, (5, 1))
    np.testing.assert_allclose(jax.vmap(log_joint)(z), jax.vmap(CONJUGATE)(z), rtol=1e-12)
    assert to_constrained(z[0])["z"] == z[0, 0]


def test_numpyro_log_joint_includes_the_jacobian_of_constrained_sites():
    def half_normal_model():
        numpyro.sample("s", dist.HalfNormal(2.0))

    log_joint, to_constrained = models.numpyro_log_joint(half_normal_model)
    u = jnp.linspace(-30.0, 6.0, 20_001)[:, None]
    density = jnp.exp(jax.vmap(log_joint)(u))
    assert float(jnp.trapezoid(density, u[:, 0])) == pytest.approx(1.0, abs=1e-8)
    assert float(to_constrained(jnp.array([0.0]))["s"]) == pytest.approx(1.0)


# Hierarchical family on a 2-D conjugate target: marginal q is Gaussian, so the ELBO of
# the marginal and the HVI bound are closed-form.
TARGET_2D = models.ConjugateGaussian.create([[1.0, -0.5], [0.4, 0.2]], prior_scale=[1.0, 2.0])
HIERARCHICAL = families.HierarchicalGaussian(
    jnp.array([0.3, -0.2]), jnp.array([[0.8], [0.4]]), jnp.log(jnp.array([0.3, 0.5]))
)


def expected_log_joint(target, loc, covariance):
    variance = jnp.diag(covariance)
    terms = dist.Normal(loc, target.prior_scale).log_prob(target.prior_loc) - variance / (
        2 * target.prior_scale**2
    )
    likelihood = dist.Normal(loc, target.noise_scale).log_prob(target.observations) - variance / (
        2 * target.noise_scale**2
    )
    return terms.sum() + likelihood.sum()


def test_hierarchical_bounds_match_closed_forms_and_are_ordered(key):
    marginal = HIERARCHICAL.marginal()
    e_log_p = expected_log_joint(TARGET_2D, marginal.loc, marginal.covariance_matrix)
    exact_elbo = e_log_p + marginal.entropy()
    d = 2
    exact_hvi = e_log_p + 0.5 * d * np.log(2 * np.pi * np.e) + HIERARCHICAL.log_scale.sum()
    assert exact_hvi < exact_elbo < TARGET_2D.log_evidence()

    programs_in_order = [
        ("hvi", objectives.hvi, exact_hvi),
        ("iwhvi5", functools.partial(objectives.iwhvi, num_inner=5), None),
        ("iwhvi50", functools.partial(objectives.iwhvi, num_inner=50), None),
        ("elbo", objectives.elbo, exact_elbo),
    ]
    estimates = {}
    for i, (name, program, exact) in enumerate(programs_in_order):
        mean, se = mean_and_standard_error(
            values(
                jax.random.fold_in(key, i), program, HIERARCHICAL, TARGET_2D, num_replicates=4_000
            )
        )
        if exact is not None:
            assert abs(mean - exact) < Z_SCORE * se, name
        estimates[name] = (mean, se)
    # HVI <= IWHVI(5) <= IWHVI(50) <= ELBO of the marginal: each against its neighbours
    # within Z standard errors of the difference (the last gaps are small).
    names = list(estimates)
    for low, high in zip(names[:-1], names[1:], strict=True):
        (m_low, se_low), (m_high, se_high) = estimates[low], estimates[high]
        assert m_high - m_low > -Z_SCORE * np.hypot(se_low, se_high), (low, high)
    assert estimates["iwhvi5"][0] > estimates["hvi"][0]  # a gap of many standard errors
    diwhvi = functools.partial(objectives.diwhvi, num_outer=5, num_inner=5)
    iwhvi = programs_in_order[1][1]
    v_outer = values(key, diwhvi, HIERARCHICAL, TARGET_2D, num_replicates=4_000)
    v_inner = values(
        jax.random.fold_in(key, 9), iwhvi, HIERARCHICAL, TARGET_2D, num_replicates=4_000
    )
    assert v_outer.mean() > v_inner.mean()
    assert v_outer.mean() < TARGET_2D.log_evidence()


def test_renyi_limits_and_monotone_in_alpha(key):
    k = 8

    def renyi(alpha, program_key=key):
        program = functools.partial(objectives.renyi, num_particles=k)
        return programs.value_and_surrogate(program, program_key, GUIDE_FAMILY, CONJUGATE, alpha)[0]

    iwae = programs.value_and_surrogate(
        functools.partial(objectives.iwae, num_particles=k), key, GUIDE_FAMILY, CONJUGATE
    )[0]
    assert renyi(0.0) == pytest.approx(float(iwae), abs=1e-12)

    def mean_log_weight(t, family, log_joint):
        return objectives.log_weights(t, family, log_joint, k).mean()

    elbo_k = programs.value_and_surrogate(mean_log_weight, key, GUIDE_FAMILY, CONJUGATE)[0]
    assert renyi(1.0) == pytest.approx(float(elbo_k), abs=1e-12)
    assert renyi(1.0 + 1e-4) == pytest.approx(float(elbo_k), abs=1e-3)
    # On fixed draws the power mean decreases in alpha.
    curve = [float(renyi(a)) for a in [-1.0, 0.0, 0.5, 0.9, 1.0, 2.0]]
    assert curve == sorted(curve, reverse=True)


def test_wake_gradients_at_the_exact_posterior(key):
    # q = exact posterior: the self-normalised weights are all 1/K, so both wake
    # gradients are unbiased. wake-q: E[grad log q] = 0; wake-p: Fisher's identity,
    # E[grad_theta log p(x, z)] = grad_theta log p(x).
    mean, scale = CONJUGATE.posterior()
    exact_q = families.MeanFieldGaussian(mean, jnp.log(scale))
    wake_q = functools.partial(objectives.wake_q, num_particles=4)
    wake_p = functools.partial(objectives.wake_p, num_particles=4)

    def gradients(k):
        gq = programs.grad_estimate(wake_q, k, exact_q, CONJUGATE)[1]
        gp = jax.grad(lambda target: programs.value_and_surrogate(wake_p, k, exact_q, target)[1])(
            CONJUGATE
        )
        return jnp.concatenate([gq.loc, gq.log_scale, gp.prior_loc, gp.noise_scale])

    samples = np.asarray(jax.jit(jax.vmap(gradients))(jax.random.split(key, 20_000)))
    score = jax.grad(lambda target: target.log_evidence())(CONJUGATE)
    expected = np.array([0.0, 0.0, float(score.prior_loc[0]), float(score.noise_scale[0])])
    se = samples.std(0, ddof=1) / np.sqrt(samples.shape[0])
    np.testing.assert_array_less(np.abs(samples.mean(0) - expected), Z_SCORE * se)
