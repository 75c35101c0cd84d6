"""Families: normalised densities, the ring's quadrature against its closed form, and
the hierarchical bounds on the noisy cone.

Statistical assertions compare means over seeded replicates within Z_SCORE standard
errors of the difference; Z_SCORE = 4.5 is a two-sided false-failure rate of about
7e-6 per assertion (normal approximation).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import i0e

from posteriorlab.core.vi import exact, families, objectives, programs

Z_SCORE = 4.5
RING = families.RingGaussian.create(radius=2.0, scale=[0.3, 0.5], centre=[0.5, -0.2])


def grid_points(half_width, size=601, centre=(0.0, 0.0)):
    xs = jnp.linspace(centre[0] - half_width, centre[0] + half_width, size)
    ys = jnp.linspace(centre[1] - half_width, centre[1] + half_width, size)
    return jnp.stack(jnp.meshgrid(xs, ys), axis=-1), (xs[1] - xs[0]) * (ys[1] - ys[0])


def test_ring_density_is_normalised_and_has_its_mean():
    points, cell = grid_points(5.0, centre=(0.5, -0.2))
    density = jnp.exp(RING.log_prob(points))
    assert float(density.sum() * cell) == pytest.approx(1.0, abs=1e-6)
    mean = jnp.einsum("ij,ijk->k", density, points) * cell
    np.testing.assert_allclose(mean, [0.5, -0.2], atol=1e-6)  # the circle's centre


@pytest.mark.parametrize("scale", [1.0, 0.2, 0.03])
def test_isotropic_ring_density_is_the_rice_closed_form(scale):
    """With one scale, ∫ N(z; ρ e(θ), σ² I) dθ/2π = e^{-(|z|² + ρ²)/2σ²} I₀(ρ|z|/σ²)/(2πσ²)."""
    radius = np.sqrt(5.0)
    ring = families.RingGaussian.create(radius=radius, scale=scale)
    angles = jnp.linspace(0.0, 2 * np.pi, 7)
    distances = radius + scale * jnp.array([-2.0, -0.5, 0.0, 0.7, 3.0])
    z = distances[:, None, None] * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)[None]
    norm = jnp.linalg.norm(z, axis=-1)
    argument = radius * norm / scale**2
    closed_form = (
        -(norm**2 + radius**2) / (2 * scale**2)
        + jnp.log(i0e(argument))
        + argument
        - jnp.log(2 * np.pi * scale**2)
    )
    np.testing.assert_allclose(ring.log_prob(z), closed_form, rtol=0, atol=1e-9)


def test_hierarchical_standard_start_is_not_a_saddle():
    family = families.HierarchicalGaussian.standard(2, 1)
    assert float(jnp.abs(family.weights).sum()) > 0
    marginal = family.marginal()
    np.testing.assert_allclose(marginal.covariance_matrix, [[1.25, 0.0], [0.0, 1.0]])


@functools.partial(jax.jit, static_argnames=("objective",))
def values(key, objective, family, log_joint):
    def one(k):
        return programs.value_and_surrogate(objective, k, family, log_joint)[0]

    return jax.vmap(one)(jax.random.split(key, 4_000))


def test_ring_bounds_on_the_cone_are_ordered_below_the_evidence(key):
    """HVI ≤ IWHVI(5) ≤ IWHVI(50) ≤ ELBO of the marginal ring (by quadrature) ≤ log p(o)."""
    cone = exact.NoisyCone.create(5.0, 10.0)
    ring = families.RingGaussian.create(radius=np.sqrt(5.0), scale=0.1)
    in_order = [
        ("hvi", objectives.hvi),
        ("iwhvi5", functools.partial(objectives.iwhvi, num_inner=5)),
        ("iwhvi50", functools.partial(objectives.iwhvi, num_inner=50)),
        ("elbo", objectives.elbo),
    ]
    estimates = []
    for index, (_, program) in enumerate(in_order):
        draws = values(jax.random.fold_in(key, index), program, ring, cone)
        estimates.append((float(draws.mean()), float(draws.std() / np.sqrt(draws.size))))
    for (low, low_se), (high, high_se) in zip(estimates[:-1], estimates[1:], strict=True):
        assert high - low > -Z_SCORE * np.hypot(low_se, high_se)
    assert estimates[1][0] - estimates[0][0] > Z_SCORE * np.hypot(
        estimates[0][1], estimates[1][1]
    )  # the inner samples close a real gap
    elbo, elbo_se = estimates[-1]
    assert elbo < float(cone.log_evidence()) + Z_SCORE * elbo_se
