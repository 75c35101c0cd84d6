r"""Kinetic energy, data separation, the kinetic-optimal schedule and sample-quality scores.

Oracles, each independent of the Gauss--Hermite quadrature under test:

* a numpy *grid* quadrature of the data separation function: the expectation over
  :math:`z = \cos\theta\,x_0 + \sin\theta\,x_1` is a Riemann sum on a square grid
  (spectrally accurate for these smooth, rapidly decaying integrands; halving the spacing
  changes nothing above 1e-12), with the textbook Gaussian posterior per component;
* closed forms derived in the research digest (seeds-paths-flows-dt.md, sections 1.3-1.4):
  :math:`\mathrm{KE}_\text{CondOT} = d(2 - \pi/2 + \Lambda)`,
  :math:`\mathrm{KE}_\text{cos} = d\,\tfrac{\pi}{2}\Lambda`, and, derived here the same way
  (:math:`r = 1`, :math:`\theta = \arcsin t`), :math:`\mathrm{KE}_\text{linear-VP} =
  d\int_0^{\pi/2}\lambda(\theta)/\cos\theta\,\mathrm d\theta`; Gaussian data give
  :math:`\lambda \equiv 0` and single Gaussians :math:`V(s) = \sum_i v_i/(1 + s^2 v_i)`;
* a Monte Carlo kinetic energy from the exact mixture velocity of :mod:`fields`;
* brute-force numpy for the energy distance, and its known means (zero for equal
  distributions, a closed form for two shifted 1-D normals);
* a numpy grid integral of :math:`p\log p` for the negative entropy.

Reference values that are too slow to recompute here (the polynomial and VP energies,
the kinetic-optimal table, the circle of tight modes) were computed once offline by an
independent route: scipy ``quad`` of the polar integrand :math:`d[\dot r^2 +
\lambda\,r^2\dot\theta^2]` with :math:`\lambda` from a 128-node rule (which agrees with the
grid quadrature to 1e-9), the chord construction with ``quad`` + ``brentq`` for
:math:`\varphi^{-1}`, and the grid quadrature for the circle. They carry 7 digits.

Unless a test says otherwise, tolerances compare the library's *default* rule (32 nodes,
64 angles, 128 times) against the references at half a unit of the last digit the digest
prints for that quantity.

About the digest's own numbers (section 1.5, and -2.3803 in section 2.6). Several of
them do not reproduce at that precision, and the evidence says the digest is off, not
the library: its lambda was estimated by Monte Carlo (its algorithm, section 1.4), and every
discrepancy is consistent with that noise -- e.g. lambda(0.75 pi/2) is 0.42463 by grid
quadrature and by a 128-node rule, and 0.42468 +- 0.00031 by a Monte Carlo of
:math:`\lVert x_1 - \mathbb E[x_1\mid x_\theta]\rVert^2` with 8M draws (exact posterior
mean from :mod:`fields`), against the digest's 0.426. Lambda is 0.295063, not 0.2957, and
all digest energies are off by exactly what Lambda (or Phi) propagates. The digest's own Monte
Carlo column (1.4487, 0.9274, 0.7602) is closer to the references than its formula
column. :func:`test_research_digest_values` lists each digest number; those that do not
reproduce are strict xfails whose reason gives the reference value.

Statistical comparisons use |estimate - expected| <= Z * standard error with Z = 4: a
two-sided false-failure rate of 6.3e-5 per comparison for a correct implementation
(normal approximation; the sample sizes make it good). Seeds are fixed, so the outcome
is deterministic; Z says how lucky a pass would be.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial.legendre import leggauss

from posteriorlab.core import gmm
from posteriorlab.core.paths import kinetic, schedules

from .test_schedules import canonical_target

Z = 4.0
DIM = 2
GAUSSIAN_CONDOT = DIM * (2.0 - 0.5 * math.pi)  # 0.858407..., digest: 0.4292 d

CANONICAL = {
    "weights": np.array([0.5, 0.3, 0.2]),
    "means": np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]),
    "covariances": np.array([0.25 * np.eye(2), [[0.5, 0.2], [0.2, 0.3]], 0.1 * np.eye(2)]),
}
ANGLE_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99)  # theta / (pi / 2), digest section 1.5
KO_TIMES = (0.1, 0.25, 0.5, 0.75, 0.9)

# Offline references (module docstring), normalised canonical mixture.
REFERENCE_POLYNOMIAL_2 = 1.9992194
REFERENCE_VP = 1.6230584  # beta_min = 0.1, beta_max = 20
REFERENCE_KO_ALPHA = (0.2848892, 0.5532881, 0.7780011, 0.9032923, 0.9627759)
REFERENCE_KO_SIGMA = (0.9405435, 0.7890430, 0.5474209, 0.3358266, 0.1970951)
# 8 tight modes on a circle, normalised. Phi_eps and KO_eps use the floored rate
# sqrt(lambda + eps^2), eps = 1e-3, as the library does; KO is the exact minimum.
CIRCLE_REFERENCE = {
    "Lambda": 0.3576471,
    "condot": 1.5737016,
    "cosine": 1.1235817,
    "Phi": 0.545469,
    "Phi_eps": 0.5455888,
    "KO": 0.580464,
    "KO_eps": 0.5807123,
}


def circle_target():
    angles = 2.0 * np.pi * np.arange(8) / 8
    means = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return gmm.from_covariances(np.full(8, 1 / 8), means, np.tile(0.01 * np.eye(2), (8, 1, 1)))


def gaussian_target(variance=1.0):
    return gmm.from_covariances([1.0], [[0.0, 0.0]], [variance * np.eye(2)])


def normalized(target):
    return kinetic.normalize(target).target


def switchable(kind, table=None, exponent=2.0, beta_max=20.0):
    """Every schedule kind as one pytree (``schedules.Switchable``), so that each jitted
    function compiles once per mixture shape instead of once per kind. ``table`` must
    have ``kinetic.NUM_TIMES`` rows (the kinetic-optimal table does)."""
    if table is None:
        times = jnp.linspace(0.0, 1.0, kinetic.NUM_TIMES)
        table = schedules.Tabulated(
            times, times, 1.0 - times, jnp.ones_like(times), -jnp.ones_like(times)
        )
    return schedules.Switchable(
        jnp.asarray(schedules.SWITCHABLE_KINDS.index(kind)),
        schedules.Polynomial(jnp.asarray(exponent)),
        schedules.VP(jnp.asarray(0.1), jnp.asarray(beta_max)),
        schedules.VE(jnp.asarray(0.01), jnp.asarray(10.0)),
        table,
    )


def energy(kind, target, **kwargs):
    """``kinetic_energy`` of one schedule kind; keywords go to :func:`switchable`."""
    return kinetic.kinetic_energy(switchable(kind, **kwargs), target)


def angle_rule(num_nodes=32):
    """Gauss--Legendre nodes and weights for integrals over theta in [0, pi/2]."""
    nodes, weights = leggauss(num_nodes)
    return 0.25 * np.pi * (nodes + 1.0), 0.25 * np.pi * weights


# --------------------------------------------------------------------------------------
# The grid-quadrature oracle (numpy, independent of kinetic.py)
# --------------------------------------------------------------------------------------


def grid_separation(angle, weights, means, covariances, half_width=6.5):
    r"""lambda(theta) of the normalised mixture by a Riemann sum over z on a square grid.

    Given z and component j, x_1 is Gaussian with mean mu_j + s Sigma_j C_j^{-1}(z - s mu_j)
    and covariance Sigma_j - s^2 Sigma_j C_j^{-1} Sigma_j (C_j = c^2 I + s^2 Sigma_j), so
    tr Cov[x_1 | z] = sum_j w_j (tr P_j + |b_j - b|^2). The spacing is a quarter of the
    smallest standard deviation of z (at most 0.04).
    """
    scale = math.sqrt(DIM / (weights @ (np.sum(means**2, -1) + np.trace(covariances, 0, 1, 2))))
    means, covariances = scale * means, scale**2 * covariances
    cos, sin = math.cos(angle), math.sin(angle)
    smallest = math.sqrt(cos**2 + sin**2 * np.linalg.eigvalsh(covariances).min())
    spacing = min(0.04, 0.25 * smallest)
    axis = np.arange(-half_width, half_width + spacing / 2, spacing)
    z = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, DIM)
    log_joint, post_means, post_traces = [], [], []
    for weight, mean, cov in zip(weights, means, covariances, strict=True):
        mixed = cos**2 * np.eye(DIM) + sin**2 * cov
        precision = np.linalg.inv(mixed)
        residual = z - sin * mean
        quadratic = np.einsum("ni,ij,nj->n", residual, precision, residual)
        log_joint.append(
            math.log(weight) - 0.5 * math.log(np.linalg.det(2 * np.pi * mixed)) - 0.5 * quadratic
        )
        post_means.append(mean + sin * residual @ (precision @ cov).T)
        post_traces.append(np.trace(cov - sin**2 * cov @ precision @ cov))
    log_joint = np.array(log_joint)
    peak = log_joint.max(0)
    joint = np.exp(log_joint - peak)
    density = joint.sum(0) * np.exp(peak)
    resp = joint / joint.sum(0)
    post_means = np.array(post_means)
    average = np.sum(resp[..., None] * post_means, 0)
    spread = resp.T @ np.array(post_traces) + np.sum(
        resp * np.sum((post_means - average) ** 2, -1), 0
    )
    posterior_spread = spread @ density * spacing**2  # V(tan theta)
    return 1.0 - posterior_spread / (DIM * cos**2)


@pytest.fixture(scope="module")
def grid_canonical():
    """lambda of the normalised canonical mixture at the digest's angles and at 32
    Gauss--Legendre angles, with the integrals built from the latter."""
    at_fractions = np.array(
        [grid_separation(0.5 * np.pi * f, **CANONICAL) for f in ANGLE_FRACTIONS]
    )
    angles, weights = angle_rule()
    values = np.array([grid_separation(a, **CANONICAL) for a in angles])
    floor = kinetic.SEPARATION_FLOOR
    return {
        "at_fractions": at_fractions,
        "Lambda": weights @ values,
        "Phi": weights @ np.sqrt(np.clip(values, 0.0, None)),
        "Phi_eps": weights @ np.sqrt(np.clip(values, 0.0, None) + floor**2),
        "linear_vp": DIM * weights @ (values / np.cos(angles)),
    }


# --------------------------------------------------------------------------------------
# Normalisation and data separation
# --------------------------------------------------------------------------------------


def test_normalize_gives_second_moment_d():
    target = canonical_target()
    np.testing.assert_allclose(kinetic.second_moment(target), 4.83, rtol=1e-14)  # digest 0.6
    rescaled, scale = kinetic.normalize(target)
    np.testing.assert_allclose(scale, math.sqrt(2 / 4.83), rtol=1e-14)
    np.testing.assert_allclose(kinetic.second_moment(rescaled), DIM, rtol=1e-14)
    # The draws are multiplied by the scale: means by it, covariances by its square.
    np.testing.assert_allclose(gmm.mean(rescaled), scale * gmm.mean(target), rtol=1e-14)
    np.testing.assert_allclose(gmm.covariance(rescaled), scale**2 * gmm.covariance(target))


def test_data_separation_matches_grid_quadrature(grid_canonical):
    target = canonical_target()
    angles = 0.5 * np.pi * np.array(ANGLE_FRACTIONS)
    expected = grid_canonical["at_fractions"]
    # Default rule (32 nodes per axis): within a fifth of half a unit of the 3 digits the
    # digest prints (measured 6.0e-5, at 0.9 pi/2).
    default_error = np.abs(kinetic.data_separation(target, angles) - expected).max()
    assert default_error < 1e-4
    # A finer rule converges onto the grid, so the residual is quadrature error, not a
    # wrong formula. Convergence is algebraic (the responsibilities switch over a narrow
    # width, module docstring): measured 1.0e-6 at 128 nodes.
    fine_error = np.abs(kinetic.data_separation(target, angles, num_nodes=128) - expected).max()
    assert fine_error < min(2e-6, default_error / 20)


def test_separation_is_scale_free_and_in_unit_interval():
    target = canonical_target()
    blown_up = target._replace(means=3.0 * target.means, chol_covs=3.0 * target.chol_covs)
    angles = jnp.linspace(0.0, 0.5 * jnp.pi, 33)
    lam = kinetic.data_separation(target, angles)
    np.testing.assert_allclose(kinetic.data_separation(blown_up, angles), lam, atol=1e-12)
    assert jnp.all((lam >= 0.0) & (lam <= 1.0))
    assert lam[-1] < 1e-10  # full-rank components look Gaussian up close


def test_posterior_covariance_trace_exact_cases():
    target = canonical_target()
    np.testing.assert_allclose(
        kinetic.posterior_covariance_trace(target, jnp.array([0.0, jnp.inf])),
        [3.335 + 1.325, 0.0],  # tr Cov[x1] (digest 0.6), and nothing left at s = inf
        atol=1e-12,
    )
    # One Gaussian N(mu, Sigma): Cov[x1 | x0 + s x1] = (Sigma^-1 + s^2 I)^-1, so
    # V(s) = sum_i v_i / (1 + s^2 v_i) over the eigenvalues v_i of Sigma.
    cov = np.array([[0.7, 0.3], [0.3, 0.4]])
    single = gmm.from_covariances([1.0], [[1.0, -2.0]], [cov])
    snr = np.array([0.0, 0.3, 1.0, 2.5, 40.0])
    eigenvalues = np.linalg.eigvalsh(cov)
    exact = np.sum(eigenvalues / (1.0 + snr[:, None] ** 2 * eigenvalues), axis=-1)
    np.testing.assert_allclose(kinetic.posterior_covariance_trace(single, snr), exact, rtol=1e-12)


def test_opening_matches_grid_quadrature(grid_canonical):
    profile = kinetic.separation_profile(canonical_target())
    # The library floors the rate at sqrt(lambda + eps^2); so does Phi_eps. Half a unit of
    # the 4 decimals the digest prints (measured 8e-7).
    np.testing.assert_allclose(profile.opening, grid_canonical["Phi_eps"], atol=5e-5)
    # The floor moves Phi by "about 1e-5" here (module docstring); offline it is 3.2e-6.
    assert abs(profile.opening - grid_canonical["Phi"]) < 1e-5
    np.testing.assert_allclose(profile.data_radius, math.sqrt(4.83 / 2), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Kinetic energy of the library's schedules
# --------------------------------------------------------------------------------------


def test_kinetic_energy_against_independent_references(grid_canonical):
    target = normalized(canonical_target())
    lam_integral = grid_canonical["Lambda"]
    expected = {
        "condot": DIM * (2.0 - 0.5 * math.pi + lam_integral),
        "cosine": DIM * 0.5 * math.pi * lam_integral,
        "linear_vp": grid_canonical["linear_vp"],
        "polynomial": REFERENCE_POLYNOMIAL_2,  # exponent 2
        "vp": REFERENCE_VP,  # beta 0.1 to 20
    }
    for kind, value in expected.items():
        # Half a unit of the 4 decimals the digest prints; the default rule's largest
        # error is 1.1e-5 (linear-VP: the 1/cos weight magnifies lambda's error at pi/2).
        np.testing.assert_allclose(energy(kind, target), value, atol=5e-5, err_msg=kind)
    # The plain schedule types give what their Switchable stand-ins give.
    np.testing.assert_allclose(
        kinetic.kinetic_energy(schedules.LinearVP(), target),
        energy("linear_vp", target),
        rtol=1e-12,
    )


@pytest.mark.parametrize("target_name", ["canonical", "circle"])
def test_kinetic_energy_identities(target_name):
    """KE_CondOT = d(2 - pi/2 + Lambda), KE_cos = d (pi/2) Lambda with Lambda from the
    library's own lambda (64 Gauss--Legendre angles). Both sides share the Gauss--Hermite
    rule, so they differ only by the Chebyshev interpolation in the angle and the time
    rule: 1e-6 is 1/50 of half a unit at 4 decimals (measured: 1e-11 canonical, 8e-8 for
    the sharper circle)."""
    target = normalized(canonical_target() if target_name == "canonical" else circle_target())
    angles, weights = angle_rule(64)
    lam = np.asarray(kinetic.data_separation(target, angles))
    lam_integral = weights @ lam
    np.testing.assert_allclose(
        energy("condot", target), DIM * (2.0 - 0.5 * math.pi + lam_integral), atol=1e-6
    )
    np.testing.assert_allclose(
        energy("cosine", target), DIM * 0.5 * math.pi * lam_integral, atol=1e-6
    )
    if target_name == "canonical":  # KE_linear-VP = d int lambda / cos (module docstring)
        linear_vp = DIM * weights @ (lam / np.cos(angles))
        np.testing.assert_allclose(energy("linear_vp", target), linear_vp, atol=1e-6)


def test_kinetic_energy_of_unnormalised_data_is_the_raw_formula():
    """Unnormalised data: KE_CondOT = d + m - int_0^inf V(s) ds (digest 1.3), with m = 4.83."""
    # s = tan(theta), ds = dtheta / cos^2; V(tan theta) / cos^2 = (1 + s^2) V(s) is smooth
    # on [0, pi/2] (it tends to d: the posterior of x1 shrinks like I / s^2).
    angles, weights = angle_rule(64)
    spread = kinetic.posterior_covariance_trace(canonical_target(), np.tan(angles), num_nodes=128)
    expected = DIM + 4.83 - weights @ (np.asarray(spread) / np.cos(angles) ** 2)
    np.testing.assert_allclose(energy("condot", canonical_target()), expected, atol=5e-5)


def test_gaussian_data():
    """N(0, I) data: lambda = 0, so the cosine path costs nothing, Cond-OT costs d(2 - pi/2)
    = 0.8584 (digest), and the kinetic-optimal schedule is the cosine one. N(0, 4I)
    normalises to N(0, I)."""
    angles = jnp.linspace(0.0, 0.5 * jnp.pi, 17)
    for variance in (1.0, 4.0):
        target = gaussian_target(variance)
        np.testing.assert_allclose(kinetic.data_separation(target, angles), 0.0, atol=1e-14)
        unit = normalized(target)
        np.testing.assert_allclose(energy("cosine", unit), 0.0, atol=1e-12)
        np.testing.assert_allclose(energy("condot", unit), GAUSSIAN_CONDOT, atol=1e-10)
    unit = gaussian_target()
    # The floored rate is the constant eps, so Phi = eps pi/2 exactly and KO = 4d sin^2(Phi/2).
    opening = kinetic.SEPARATION_FLOOR * 0.5 * math.pi
    np.testing.assert_allclose(kinetic.separation_profile(unit).opening, opening, rtol=1e-12)
    np.testing.assert_allclose(
        kinetic.kinetic_optimal_energy(unit), 4 * DIM * math.sin(opening / 2) ** 2, rtol=1e-10
    )
    # The chord in a wedge of opening Phi: theta_t = pi t / 2 up to O(Phi^3 / eps) and
    # r_t = 1 - t(1-t)(1 - cos Phi) >= 1 - Phi^2 / 8.
    table = kinetic.kinetic_optimal_schedule(unit)
    t = jnp.linspace(0.0, 1.0, 101)
    tolerance = opening**2 / 8 + 1e-8
    np.testing.assert_allclose(table.alpha(t), jnp.sin(0.5 * jnp.pi * t), atol=tolerance)
    np.testing.assert_allclose(table.sigma(t), jnp.cos(0.5 * jnp.pi * t), atol=tolerance)


def test_circle_of_tight_modes():
    """Offline references (grid quadrature), at half a unit of the 3 decimals the digest
    prints (the default rule is within 6e-6 of them)."""
    target = normalized(circle_target())
    ref = CIRCLE_REFERENCE
    condot, cosine = energy("condot", target), energy("cosine", target)
    np.testing.assert_allclose(cosine / (DIM * 0.5 * math.pi), ref["Lambda"], atol=5e-4)
    np.testing.assert_allclose(condot, ref["condot"], atol=5e-4)
    np.testing.assert_allclose(cosine, ref["cosine"], atol=5e-4)
    np.testing.assert_allclose(
        kinetic.separation_profile(target).opening, ref["Phi_eps"], atol=5e-4
    )
    optimum = kinetic.kinetic_optimal_energy(target)
    np.testing.assert_allclose(optimum, ref["KO_eps"], atol=5e-4)
    np.testing.assert_allclose(optimum, ref["KO"], atol=5e-4)
    # lambda < eps^2 over the first tenth of the angles here, so the floor costs 2.5e-4
    # (not the 1e-5 of the canonical mixture); the floored optimum lies above the true one.
    assert optimum > ref["KO"]
    assert optimum < min(condot, cosine)


# --------------------------------------------------------------------------------------
# Monte Carlo kinetic energy
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ko_canonical():
    target = normalized(canonical_target())
    return target, kinetic.kinetic_optimal_schedule(target)


def test_kinetic_energy_matches_monte_carlo(ko_canonical):
    """|MC - formula| <= Z s.e. (Z = 4, false-failure rate 6.3e-5 per schedule, 4e-4 for
    the six) with 2^16 draws (s.e. 0.3-1.3 % of the energy). The KO line is the digest's
    checklist item: MC along the table ~ 4d sin^2(Phi/2)."""
    target, table = ko_canonical
    for seed, kind in enumerate(["condot", "cosine", "polynomial", "linear_vp", "vp", "tabulated"]):
        schedule = switchable(kind, table)
        mean, standard_error = kinetic.kinetic_energy_monte_carlo(
            jax.random.key(seed), schedule, target, 2**16
        )
        formula = kinetic.kinetic_energy(schedule, target)
        assert abs(mean - formula) <= Z * standard_error, (kind, mean, formula, standard_error)
    optimum = kinetic.kinetic_optimal_energy(target)
    assert abs(mean - optimum) <= Z * standard_error, (mean, optimum)
    # Power: the estimator tells the KO path from Cond-OT by far more than Z s.e.
    assert abs(mean - energy("condot", target)) > 20 * standard_error


# --------------------------------------------------------------------------------------
# The kinetic-optimal schedule
# --------------------------------------------------------------------------------------


def test_kinetic_optimal_schedule_table(ko_canonical):
    target, table = ko_canonical
    t = jnp.asarray(KO_TIMES)
    # Half a unit of the 4 decimals the digest prints (measured error 4e-6).
    np.testing.assert_allclose(table.alpha(t), REFERENCE_KO_ALPHA, atol=5e-5)
    np.testing.assert_allclose(table.sigma(t), REFERENCE_KO_SIGMA, atol=5e-5)
    # The chord: r_t = |(1-t)(1,0) + t(cos Phi, sin Phi)|, at t = 1/2 cos(Phi/2) (digest 0.951).
    opening = kinetic.separation_profile(target).opening
    radius = jnp.hypot(table.alpha(t), table.sigma(t))
    chord = jnp.hypot(1 - t + t * jnp.cos(opening), t * jnp.sin(opening))
    np.testing.assert_allclose(radius, chord, atol=1e-6)
    np.testing.assert_allclose(radius[2], 0.951, atol=5e-4)
    # End points, and the SNR rises monotonically (digest 1.4), so snr_inverse exists.
    ends = jnp.array([0.0, 1.0])
    np.testing.assert_array_equal(table.alpha(ends), [0.0, 1.0])
    np.testing.assert_array_equal(table.sigma(ends), [1.0, 0.0])
    fine = jnp.linspace(0.0, 0.999, 2000)
    assert jnp.all(jnp.diff(schedules.signal_to_noise(table, fine)) > 0)


def test_kinetic_optimal_schedule_has_the_least_energy(ko_canonical):
    """KO below every schedule that runs from (sigma, alpha) = (1, 0) to (0, 1) (VE does
    not: it starts at the data blurred by sigma_max, so the bound does not apply), and a
    local minimum: bending the table either way costs energy."""
    target, table = ko_canonical
    optimal = energy("tabulated", target, table=table)
    # The table's energy is the chord cost up to interpolation and the time rule
    # (measured 2.7e-5), within half a unit of the 4 printed decimals.
    np.testing.assert_allclose(optimal, kinetic.kinetic_optimal_energy(target), atol=5e-5)
    others = {
        "condot": {},
        "cosine": {},
        "linear_vp": {},
        **{f"polynomial {n}": {"exponent": n} for n in (0.75, 1.5, 2.0, 3.0)},
        **{f"vp {b}": {"beta_max": b} for b in (10.0, 20.0)},
    }
    energies = {name: float(energy(name.split()[0], target, **kw)) for name, kw in others.items()}
    assert optimal < min(energies.values()), energies
    bump = jnp.sin(jnp.pi * table.times)
    bump_slope = jnp.pi * jnp.cos(jnp.pi * table.times)
    for size in (-0.05, 0.05):
        bent = table._replace(
            alphas=table.alphas + size * bump, alpha_slopes=table.alpha_slopes + size * bump_slope
        )
        assert energy("tabulated", target, table=bent) > optimal + 1e-4


def test_kinetic_optimal_schedule_of_unnormalised_data():
    """Data with E|x|^2 = m: alpha_t = r_t sin(theta_t) / c, the chord ends at radius c and
    costs d(1 + c^2 - 2c cos Phi) (module docstring)."""
    target = canonical_target()
    table = kinetic.kinetic_optimal_schedule(target)
    profile = kinetic.separation_profile(target)
    radius = profile.data_radius
    cost = DIM * (1 + radius**2 - 2 * radius * jnp.cos(profile.opening))
    np.testing.assert_allclose(kinetic.kinetic_optimal_energy(target), cost, rtol=1e-12)
    optimal = energy("tabulated", target, table=table)
    np.testing.assert_allclose(optimal, cost, atol=1e-4)
    ends = jnp.array([0.0, 1.0])
    np.testing.assert_array_equal(table.alpha(ends), [0.0, 1.0])
    np.testing.assert_array_equal(table.sigma(ends), [1.0, 0.0])
    # The table made for the normalised data is a worse path for these data.
    unit_table = kinetic.kinetic_optimal_schedule(normalized(target))
    assert optimal < energy("tabulated", target, table=unit_table) - 1e-3


# --------------------------------------------------------------------------------------
# The digest's numbers, one by one
# --------------------------------------------------------------------------------------


def _library_values():
    """The library at a converged rule (128 nodes per axis for lambda, 96 for E log p,
    64 nodes and 128 angles for the rest: quadrature error at most 1e-6, 1e-8, 2e-6), so
    that the tolerance is the digest's rounding alone."""
    rule = {"num_nodes": 64, "num_angles": 128}
    target = normalized(canonical_target())
    circle = normalized(circle_target())
    angles = 0.5 * np.pi * np.array(ANGLE_FRACTIONS)
    lam = kinetic.data_separation(target, angles, num_nodes=128)
    table = kinetic.kinetic_optimal_schedule(target, **rule)
    t = jnp.asarray(KO_TIMES)

    def fine_energy(kind, data=target, **kwargs):
        return kinetic.kinetic_energy(switchable(kind, **kwargs), data, **rule)

    cosine = fine_energy("cosine")
    circle_cosine = fine_energy("cosine", circle)
    values = {f"lambda({f})": lam[i] for i, f in enumerate(ANGLE_FRACTIONS)}
    values |= {f"alpha({s})": a for s, a in zip(KO_TIMES, table.alpha(t), strict=True)}
    values |= {f"sigma({s})": a for s, a in zip(KO_TIMES, table.sigma(t), strict=True)}
    values |= {
        "scale": kinetic.normalize(canonical_target()).scale,
        "Lambda": cosine / (DIM * 0.5 * math.pi),
        "Phi": kinetic.separation_profile(target, **rule).opening,
        "KE condot": fine_energy("condot"),
        "KE cosine": cosine,
        "KE polynomial 2": fine_energy("polynomial", exponent=2.0),
        "KE linear-VP": fine_energy("linear_vp"),
        "KE VP": fine_energy("vp", beta_max=20.0),
        "KE KO": kinetic.kinetic_optimal_energy(target, **rule),
        "r(0.5)": jnp.hypot(table.alpha(0.5), table.sigma(0.5)),
        "Gaussian KE condot": energy("condot", gaussian_target()),
        "circle Lambda": circle_cosine / (DIM * 0.5 * math.pi),
        "circle KE condot": fine_energy("condot", circle),
        "circle KE cosine": circle_cosine,
        "circle KE KO": kinetic.kinetic_optimal_energy(circle, **rule),
        "E log p": kinetic.target_mean_log_prob(canonical_target(), num_nodes=96),
    }
    return values


def _digest(name, value, decimals, reference=None):
    """A digest number; ``reference`` (the independent value) marks it as not reproducing."""
    if reference is None:
        return pytest.param(name, value, decimals, id=name)
    reason = f"digest {value} is off: independent reference {reference} (module docstring)"
    return pytest.param(
        name, value, decimals, id=name, marks=pytest.mark.xfail(strict=True, reason=reason)
    )


DIGEST = [
    _digest("scale", 0.643489, 6),
    _digest("lambda(0.0)", 0.035, 3),
    _digest("lambda(0.25)", 0.071, 3),
    _digest("lambda(0.5)", 0.215, 3),
    _digest("lambda(0.75)", 0.426, 3, reference=0.42463),
    _digest("lambda(0.9)", 0.198, 3),
    _digest("lambda(0.99)", 0.003, 3),
    _digest("Lambda", 0.2957, 4, reference=0.295063),
    _digest("Phi", 0.6273, 4, reference="0.626796 (0.626799 floored)"),
    _digest("KE condot", 1.4499, 4, reference=1.448534),
    _digest("KE cosine", 0.9290, 4, reference=0.926969),
    _digest("KE polynomial 2", 2.0013, 4, reference=1.999219),
    _digest("KE linear-VP", 1.5249, 4, reference=1.522619),
    _digest("KE VP", 1.6268, 4, reference=1.623058),
    _digest("KE KO", 0.7616, 4, reference="0.760357 (0.760364 floored)"),
    _digest("alpha(0.1)", 0.2851, 4, reference=0.284889),
    _digest("alpha(0.25)", 0.5535, 4, reference=0.553288),
    _digest("alpha(0.5)", 0.7780, 4),
    _digest("alpha(0.75)", 0.9032, 4, reference=0.903292),
    _digest("alpha(0.9)", 0.9627, 4, reference=0.962776),
    _digest("sigma(0.1)", 0.9404, 4, reference=0.940544),
    _digest("sigma(0.25)", 0.7888, 4, reference=0.789043),
    _digest("sigma(0.5)", 0.5473, 4, reference=0.547421),
    _digest("sigma(0.75)", 0.3360, 4, reference=0.335827),
    _digest("sigma(0.9)", 0.1973, 4, reference=0.197095),
    _digest("r(0.5)", 0.951, 3),
    _digest("Gaussian KE condot", 0.8584, 4),
    _digest("circle Lambda", 0.357, 3, reference=0.357647),
    _digest("circle KE condot", 1.573, 3, reference=1.573702),
    _digest("circle KE cosine", 1.123, 3, reference=1.123582),
    _digest("circle KE KO", 0.580, 3, reference="0.580464 exact, 0.580712 floored"),
    _digest("E log p", -2.3803, 4, reference=-2.381037),
]


@pytest.fixture(scope="module")
def library_values():
    return _library_values()


@pytest.mark.parametrize(("name", "value", "decimals"), DIGEST)
def test_research_digest_values(library_values, name, value, decimals):
    """Each number of the digest, within half a unit of its last printed digit."""
    assert abs(float(library_values[name]) - value) <= 0.5 * 10.0**-decimals


# --------------------------------------------------------------------------------------
# Sample quality
# --------------------------------------------------------------------------------------


def brute_energy_distance(x, y, unbiased):
    def mean_distance(a, b, skip_diagonal):
        distances = np.sqrt(np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1))
        if skip_diagonal:
            return (distances.sum() - np.trace(distances)) / (a.shape[0] * (a.shape[0] - 1))
        return distances.mean()

    return (
        2 * mean_distance(x, y, False)
        - mean_distance(x, x, unbiased)
        - mean_distance(y, y, unbiased)
    )


@pytest.mark.parametrize("unbiased", [True, False])
def test_energy_distance_matches_brute_force(unbiased):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))  # > 256: crosses a batch of the row map
    y = rng.normal(size=(37, 2)) * 1.5 + 0.3
    np.testing.assert_allclose(
        kinetic.energy_distance(x, y, unbiased=unbiased),
        brute_energy_distance(x, y, unbiased),
        rtol=1e-12,
    )


def _replicate_energy_distances(shift, unbiased, replicates=256, sizes=(64, 48)):
    keys = jax.random.split(jax.random.key(11), (replicates, 2))

    def one(key_pair):
        x = jax.random.normal(key_pair[0], (sizes[0], 1))
        y = jax.random.normal(key_pair[1], (sizes[1], 1)) + shift
        return kinetic.energy_distance(x, y, unbiased=unbiased)

    values = np.asarray(jax.vmap(one)(keys))
    return values.mean(), values.std(ddof=1) / math.sqrt(replicates)


def test_energy_distance_expectations():
    """Means over 256 seeded replicates (n = 64, m = 48), each within Z s.e. (Z = 4).

    1-D normals N(0, 1) and N(mu, 1): E|X - X'| = 2/sqrt(pi), and
    E|X - Y| = E|N(mu, 2)| = 2/sqrt(pi) exp(-mu^2/4) + mu erf(mu/2), so the population
    energy distance is 4/sqrt(pi) (exp(-mu^2/4) - 1) + 2 mu erf(mu/2). The U-statistic is
    unbiased for it (0 when mu = 0); the V-statistic at mu = 0 has mean
    (2/sqrt(pi))(1/n + 1/m).
    """
    n, m = 64, 48
    mean, error = _replicate_energy_distances(0.0, unbiased=True)
    assert abs(mean) <= Z * error, (mean, error)

    shift = 0.8
    exact = 4 / math.sqrt(math.pi) * (math.exp(-(shift**2) / 4) - 1) + 2 * shift * math.erf(
        shift / 2
    )
    mean, error = _replicate_energy_distances(shift, unbiased=True)
    assert abs(mean - exact) <= Z * error, (mean, exact, error)
    assert mean > Z * error  # and different distributions are told apart

    mean, error = _replicate_energy_distances(0.0, unbiased=False)
    bias = 2 / math.sqrt(math.pi) * (1 / n + 1 / m)
    assert abs(mean - bias) <= Z * error, (mean, bias, error)


def grid_negative_entropy(spacing=0.02, half_width=9.0):
    """E_p log p of the canonical mixture by a Riemann sum (halving the spacing changes
    nothing above 1e-15)."""
    axis = np.arange(-half_width, half_width + spacing / 2, spacing)
    x = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, DIM)
    density = np.zeros(x.shape[0])
    for weight, mean, cov in zip(*CANONICAL.values(), strict=True):
        residual = x - mean
        quadratic = np.einsum("ni,ij,nj->n", residual, np.linalg.inv(cov), residual)
        density += weight * np.exp(-0.5 * quadratic) / math.sqrt(np.linalg.det(2 * np.pi * cov))
    positive = density > 0
    return np.sum(density[positive] * np.log(density[positive])) * spacing**2


def test_target_mean_log_prob():
    target = canonical_target()
    exact = grid_negative_entropy()  # -2.3810372; the digest's -2.3803 is a Monte Carlo value
    # Default rule: within half a unit of the 4 decimals printed (measured 1.1e-5); a finer
    # rule converges onto the grid value.
    np.testing.assert_allclose(kinetic.target_mean_log_prob(target), exact, atol=5e-5)
    np.testing.assert_allclose(kinetic.target_mean_log_prob(target, num_nodes=96), exact, atol=1e-8)
    # A single Gaussian: -log det(2 pi e Sigma) / 2, exactly.
    cov = np.array([[0.7, 0.3], [0.3, 0.4]])
    single = gmm.from_covariances([1.0], [[1.0, -2.0]], [cov])
    np.testing.assert_allclose(
        kinetic.target_mean_log_prob(single),
        -0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov)),
        rtol=1e-12,
    )


def test_mean_log_prob_of_exact_samples():
    """Exact draws score E_p log p on average, within Z s.e. (Z = 4); collapsed draws
    (every component shrunk) score higher, overdispersed ones lower."""
    target = canonical_target()
    exact = kinetic.target_mean_log_prob(target, num_nodes=96)
    samples = gmm.sample(jax.random.key(5), target, 2**16)
    log_p = np.asarray(gmm.log_prob(target, samples))
    np.testing.assert_allclose(kinetic.mean_log_prob(samples, target), log_p.mean(), rtol=1e-12)
    standard_error = log_p.std(ddof=1) / math.sqrt(log_p.size)
    assert abs(log_p.mean() - exact) <= Z * standard_error, (log_p.mean(), exact, standard_error)
    for factor, sign in ((0.5, 1), (2.0, -1)):
        other = target._replace(chol_covs=factor * target.chol_covs)
        draws = gmm.sample(jax.random.key(6), other, 2**16)
        assert sign * (kinetic.mean_log_prob(draws, target) - exact) > 0.05


# --------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------


def test_changing_the_mixture_numbers_never_retraces():
    """Static sizes no other test uses, so the first call compiles exactly once; moving
    weights, means, covariances (and the schedule's exponent) then never recompiles."""
    sizes = {"num_times": 40, "num_angles": 24, "num_nodes": 12}

    def optimal_schedule(target, exponent):
        return kinetic.kinetic_optimal_schedule(target, **sizes)

    def energy_of_polynomial(target, exponent):
        return kinetic.kinetic_energy(schedules.Polynomial(jnp.asarray(exponent)), target, **sizes)

    calls = {
        kinetic.kinetic_optimal_schedule: optimal_schedule,
        kinetic.kinetic_energy: energy_of_polynomial,
    }
    before = {function: function._cache_size() for function in calls}
    for call in calls.values():
        jax.block_until_ready(call(canonical_target(), 2.0))
    compiled = {function: function._cache_size() for function in calls}
    assert all(compiled[function] == before[function] + 1 for function in calls)

    rng = np.random.default_rng(3)
    for _ in range(3):
        factors = rng.normal(size=(3, 2, 2)) * 0.3
        moved = gmm.from_covariances(
            rng.dirichlet(np.ones(3)),
            rng.normal(scale=2.0, size=(3, 2)),
            factors @ np.swapaxes(factors, -1, -2) + 0.1 * np.eye(2),
        )
        for call in calls.values():
            jax.block_until_ready(call(moved, rng.uniform(1.0, 3.0)))
    assert {function: function._cache_size() for function in calls} == compiled

    # Power: a new number of components is a new shape and does compile.
    four = gmm.from_covariances(
        np.full(4, 0.25), rng.normal(size=(4, 2)), np.tile(0.3 * np.eye(2), (4, 1, 1))
    )
    jax.block_until_ready(optimal_schedule(four, 2.0))
    optimal_cache = kinetic.kinetic_optimal_schedule._cache_size()
    assert optimal_cache == compiled[kinetic.kinetic_optimal_schedule] + 1
