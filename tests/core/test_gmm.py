"""Tests for posteriorlab.core.gmm against exact oracles.

The oracles are independent of the code under test: scipy's multivariate normal for
densities, brute-force quadrature on a fine 2-D grid for integrals and moments, and the
reference numbers of the research digest (seeds-paths-flows-dt.md, section 0.6).

Grid accuracy. The rectangle rule with spacing h on an infinite lattice integrates a
Gaussian with covariance S up to relative terms exp(-2 pi^2 k^T S k / h^2), k a non-zero
integer vector (Poisson summation). With h = 0.025 and smallest eigenvalue 1e-3 (the
ill-conditioned mixture) this is below 1e-13, and the window [-10, 10]^2 leaves out
mass below 1e-14, so quadrature is compared to many digits.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp as np_logsumexp
from scipy.special import ndtr
from scipy.stats import multivariate_normal

from posteriorlab.core import gmm

# --------------------------------------------------------------------------------------
# Fixtures: mixtures, observations, the quadrature grid
# --------------------------------------------------------------------------------------

CANONICAL = {
    "weights": np.array([0.5, 0.3, 0.2]),
    "means": np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]),
    "covariances": np.array([0.25 * np.eye(2), [[0.5, 0.2], [0.2, 0.3]], 0.1 * np.eye(2)]),
}


def _rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _random_mixture(seed, num_components, ill_conditioned=False):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(2.0 * np.ones(num_components))
    means = rng.uniform(-2.5, 2.5, size=(num_components, 2))
    covariances = []
    for index in range(num_components):
        eigenvalues = rng.uniform(0.15, 1.0, size=2)
        if ill_conditioned and index == 0:
            eigenvalues = np.array([1.0, 1e-3])  # condition number 1000
        rotation = _rotation(rng.uniform(0.0, np.pi))
        covariances.append(rotation @ np.diag(eigenvalues) @ rotation.T)
    return {"weights": weights, "means": means, "covariances": np.array(covariances)}


MIXTURES = {
    "canonical": CANONICAL,
    "random-K1": _random_mixture(1, 1),
    "random-K2": _random_mixture(2, 2),
    "random-K4": _random_mixture(4, 4),
    "ill-conditioned-K3": _random_mixture(3, 3, ill_conditioned=True),
}

OBSERVATIONS = {
    "m1": (np.array([[1.0, 0.5]]), np.array([[0.25]]), np.array([0.8])),
    "m2": (
        np.array([[0.7, -0.4], [0.3, 1.2]]),
        np.array([[0.3, 0.1], [0.1, 0.2]]),
        np.array([0.5, -1.0]),
    ),
}

GRID_STEP = 0.025
GRID_AXIS = np.arange(-10.0, 10.0, GRID_STEP) + GRID_STEP / 2
GRID_POINTS = np.stack(np.meshgrid(GRID_AXIS, GRID_AXIS, indexing="ij"), axis=-1).reshape(-1, 2)
CELL_AREA = GRID_STEP**2


def _oracle_log_prob(params, points):
    """Mixture log-density from scipy, one component at a time."""
    per_component = [
        np.log(w) + multivariate_normal(mu, cov).logpdf(points)
        for w, mu, cov in zip(
            params["weights"], params["means"], params["covariances"], strict=True
        )
    ]
    return np_logsumexp(np.stack(per_component, axis=-1), axis=-1)


def _oracle_log_likelihood(observation, points):
    A, R, y = observation
    return multivariate_normal(y, R).logpdf(points @ A.T)


def _quadrature_moments(log_density):
    """Mass, mean and covariance of an (unnormalised) density given on the grid."""
    density = np.exp(log_density)
    mass = np.sum(density) * CELL_AREA
    mean = np.sum(density[:, None] * GRID_POINTS, axis=0) * CELL_AREA / mass
    centred = GRID_POINTS - mean
    covariance = np.einsum("n,ni,nj->ij", density, centred, centred) * CELL_AREA / mass
    return mass, mean, covariance


@functools.cache
def _grid_log_prior(name):
    """The oracle prior log-density on the grid, computed once per mixture."""
    return _oracle_log_prob(MIXTURES[name], GRID_POINTS)


@pytest.fixture(params=list(MIXTURES), scope="module")
def mixture_name(request):
    return request.param


@pytest.fixture(scope="module")
def params(mixture_name):
    return MIXTURES[mixture_name]


@pytest.fixture(params=list(OBSERVATIONS), scope="module")
def observation(request):
    return OBSERVATIONS[request.param]


# --------------------------------------------------------------------------------------
# Density
# --------------------------------------------------------------------------------------


def test_log_prob_matches_scipy_and_integrates_to_one(params, mixture_name):
    mixture = gmm.from_covariances(**params)
    log_density = np.asarray(gmm.log_prob(mixture, GRID_POINTS))
    np.testing.assert_allclose(log_density, _grid_log_prior(mixture_name), rtol=1e-10, atol=1e-10)
    total_mass = np.sum(np.exp(log_density)) * CELL_AREA
    assert total_mass == pytest.approx(1.0, abs=1e-10)


def test_mean_and_covariance_match_quadrature(params, mixture_name):
    mixture = gmm.from_covariances(**params)
    _, grid_mean, grid_covariance = _quadrature_moments(_grid_log_prior(mixture_name))
    np.testing.assert_allclose(gmm.mean(mixture), grid_mean, atol=1e-9)
    np.testing.assert_allclose(gmm.covariance(mixture), grid_covariance, atol=1e-9)


def test_canonical_moments_match_research_digest():
    mixture = gmm.from_covariances(**CANONICAL)
    np.testing.assert_allclose(gmm.mean(mixture), [-0.4, -0.1], atol=1e-12)
    np.testing.assert_allclose(gmm.covariance(mixture), [[3.335, 0.62], [0.62, 1.325]], atol=1e-12)


def test_log_prob_keeps_batch_shape():
    mixture = gmm.from_covariances(**CANONICAL)
    points = jax.random.normal(jax.random.key(0), (3, 4, 2))
    batched = gmm.log_prob(mixture, points)
    assert batched.shape == (3, 4)
    assert gmm.log_prob(mixture, points[1, 2]).shape == ()
    np.testing.assert_allclose(batched[1, 2], gmm.log_prob(mixture, points[1, 2]), rtol=1e-14)
    assert gmm.component_log_prob(mixture, points).shape == (3, 4, 3)


def test_log_prob_rejects_points_of_the_wrong_dimension():
    mixture = gmm.from_covariances(**CANONICAL)
    with pytest.raises(ValueError, match=r"x has shape \(5, 3\).*d = 2"):
        gmm.log_prob(mixture, jnp.zeros((5, 3)))


def test_log_prob_stays_finite_far_from_every_component():
    mixture = gmm.from_covariances(**CANONICAL)
    far = np.array([[300.0, -250.0], [-400.0, 10.0]])
    values = gmm.log_prob(mixture, far)
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, _oracle_log_prob(CANONICAL, far), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Conditioning on a linear-Gaussian observation
# --------------------------------------------------------------------------------------


def test_posterior_is_prior_times_likelihood_over_evidence(params, mixture_name, observation):
    """Pointwise Bayes' rule on the grid, and the evidence and moments by quadrature."""
    A, R, y = observation
    prior = gmm.from_covariances(**params)
    posterior = gmm.condition_on_linear_gaussian(prior, A, R, y)
    log_evidence = float(gmm.log_marginal_likelihood(prior, A, R, y))

    log_joint = _grid_log_prior(mixture_name) + _oracle_log_likelihood(observation, GRID_POINTS)
    np.testing.assert_allclose(
        gmm.log_prob(posterior, GRID_POINTS), log_joint - log_evidence, rtol=1e-9, atol=1e-9
    )

    grid_evidence, grid_mean, grid_covariance = _quadrature_moments(log_joint)
    assert np.log(grid_evidence) == pytest.approx(log_evidence, abs=1e-9)
    np.testing.assert_allclose(gmm.mean(posterior), grid_mean, atol=1e-9)
    np.testing.assert_allclose(gmm.covariance(posterior), grid_covariance, atol=1e-9)


def test_posterior_weights_are_prior_weights_rescored_by_component_evidence(params, observation):
    A, R, y = observation
    prior = gmm.from_covariances(**params)
    posterior = gmm.condition_on_linear_gaussian(prior, A, R, y)
    rescored = prior.log_weights + gmm.component_log_evidence(prior, A, R, y)
    np.testing.assert_allclose(
        posterior.log_weights, rescored - gmm.log_marginal_likelihood(prior, A, R, y), atol=1e-12
    )
    expected = [
        multivariate_normal(A @ mu, A @ cov @ A.T + R).logpdf(y)
        for mu, cov in zip(params["means"], params["covariances"], strict=True)
    ]
    np.testing.assert_allclose(gmm.component_log_evidence(prior, A, R, y), expected, rtol=1e-12)


def test_posterior_factors_are_lower_triangular_with_positive_diagonal(params, observation):
    posterior = gmm.condition_on_linear_gaussian(gmm.from_covariances(**params), *observation)
    chol = np.asarray(posterior.chol_covs)
    assert np.all(np.triu(chol, k=1) == 0.0)
    assert np.all(np.diagonal(chol, axis1=-2, axis2=-1) > 0.0)


def test_research_reference_posterior_of_the_canonical_mixture():
    """seeds-paths-flows-dt.md section 0.6: A = [1, 0.5], R = 0.25, y = 0.8."""
    prior = gmm.from_covariances(**CANONICAL)
    A, R, y = jnp.array([1.0, 0.5]), 0.25, 0.8  # the scalar conveniences for m = 1
    assert float(gmm.log_marginal_likelihood(prior, A, R, y)) == pytest.approx(-3.478576, abs=5e-7)
    posterior = gmm.condition_on_linear_gaussian(prior, A, R, y)
    np.testing.assert_allclose(gmm.weights(posterior), [0.008110, 0.935721, 0.056169], atol=5e-7)
    np.testing.assert_allclose(
        posterior.means,
        [[-0.755556, 0.622222], [1.004878, 0.419512], [0.48, -1.76]],
        atol=5e-7,
    )
    np.testing.assert_allclose(
        gmm.covariances(posterior),
        [
            [[0.138889, -0.055556], [-0.055556, 0.222222]],
            [[0.148780, -0.004878], [-0.004878, 0.180488]],
            [[0.073333, -0.013333], [-0.013333, 0.093333]],
        ],
        atol=5e-7,
    )
    np.testing.assert_allclose(gmm.mean(posterior), [0.961120, 0.298735], atol=5e-7)


@pytest.mark.parametrize("noise_variance", [1e-6, 1e-10])
def test_conditioning_on_a_nearly_noiseless_observation(noise_variance):
    """A very precise observation: the covariance subtraction Sigma - K S K^T cancels
    almost completely, the square-root form must still give a valid factor."""
    params = MIXTURES["ill-conditioned-K3"]
    prior = gmm.from_covariances(**params)
    A = np.array([[0.6, -0.8], [0.5, 0.5]])
    R = noise_variance * np.array([[1.0, 0.3], [0.3, 1.0]])
    y = np.array([0.3, -0.2])
    posterior = gmm.condition_on_linear_gaussian(prior, A, R, y)
    chol = np.asarray(posterior.chol_covs)
    assert np.all(np.isfinite(chol))
    assert np.all(np.diagonal(chol, axis1=-2, axis2=-1) > 0.0)
    for k, cov in enumerate(params["covariances"]):
        information = np.linalg.inv(cov) + A.T @ np.linalg.solve(R, A)
        expected_cov = np.linalg.inv(information)
        expected_mean = expected_cov @ (
            np.linalg.solve(cov, params["means"][k]) + A.T @ np.linalg.solve(R, y)
        )
        np.testing.assert_allclose(
            gmm.covariances(posterior)[k], expected_cov, rtol=1e-6, atol=1e-6 * noise_variance
        )
        np.testing.assert_allclose(posterior.means[k], expected_mean, rtol=1e-7, atol=1e-9)
    # Bayes' rule pointwise at points where the posterior has its mass.
    points = np.asarray(gmm.sample(jax.random.key(1), posterior, 64))
    log_joint = _oracle_log_prob(params, points) + _oracle_log_likelihood((A, R, y), points)
    np.testing.assert_allclose(
        gmm.log_prob(posterior, points),
        log_joint - float(gmm.log_marginal_likelihood(prior, A, R, y)),
        rtol=1e-8,
    )


def test_weights_stay_finite_for_an_observation_far_from_every_component():
    prior = gmm.from_covariances(**CANONICAL)
    posterior = gmm.condition_on_linear_gaussian(prior, jnp.array([1.0, 0.5]), 0.25, 200.0)
    assert np.all(np.isfinite(posterior.log_weights))
    assert float(jax.nn.logsumexp(posterior.log_weights)) == pytest.approx(0.0, abs=1e-12)


def test_observation_shapes_are_checked():
    prior = gmm.from_covariances(**CANONICAL)
    with pytest.raises(ValueError, match=r"A has shape \(1, 3\).*\(m, 2\)"):
        gmm.log_marginal_likelihood(prior, jnp.ones((1, 3)), 1.0, 0.0)
    with pytest.raises(ValueError, match=r"noise_cov has shape \(2, 2\).*m = 1"):
        gmm.condition_on_linear_gaussian(prior, jnp.ones((1, 2)), jnp.eye(2), 0.0)
    with pytest.raises(ValueError, match=r"y has shape \(3,\).*length 2"):
        gmm.component_log_evidence(prior, jnp.eye(2), jnp.eye(2), jnp.zeros(3))


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------

NUM_SAMPLES = 200_000
Z = 4.0


def test_sample_moments_match_mean_and_covariance(params):
    """Each of the 5 checks (2 means, 3 covariance entries) fails by chance with
    probability 2 (1 - Phi(4)) = 6.3e-5, so this test (5 mixtures, 25 checks) has a
    false-failure rate below 1.6e-3 over seeds (union bound). Standard errors: exact for
    the mean (sqrt(C_jj / n)); for a covariance entry the sample standard deviation of
    the centred products, divided by sqrt(n)."""
    assert 2 * (1 - ndtr(Z)) < 6.4e-5
    mixture = gmm.from_covariances(**params)
    draws = np.asarray(
        jax.jit(gmm.sample, static_argnames="num_samples")(
            jax.random.key(2024), mixture, num_samples=NUM_SAMPLES
        )
    )
    assert draws.shape == (NUM_SAMPLES, 2)
    exact_mean = np.asarray(gmm.mean(mixture))
    exact_cov = np.asarray(gmm.covariance(mixture))

    standard_error = np.sqrt(np.diag(exact_cov) / NUM_SAMPLES)
    assert np.all(np.abs(draws.mean(axis=0) - exact_mean) <= Z * standard_error)

    centred = draws - draws.mean(axis=0)
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        products = centred[:, i] * centred[:, j]
        standard_error = products.std() / np.sqrt(NUM_SAMPLES)
        assert abs(products.mean() - exact_cov[i, j]) <= Z * standard_error, (i, j)


def test_sample_picks_components_in_proportion_to_weights():
    """Well-separated components: classify each draw by its nearest mean; the counts are
    multinomial, each checked at z = 4 (false-failure rate 3 x 6.3e-5)."""
    params = {
        "weights": np.array([0.6, 0.3, 0.1]),
        "means": np.array([[-20.0, 0.0], [0.0, 20.0], [20.0, 0.0]]),
        "covariances": np.array([np.eye(2)] * 3),
    }
    draws = np.asarray(gmm.sample(jax.random.key(7), gmm.from_covariances(**params), 50_000))
    nearest = np.argmin(((draws[:, None, :] - params["means"]) ** 2).sum(-1), axis=1)
    frequencies = np.bincount(nearest, minlength=3) / len(draws)
    standard_error = np.sqrt(params["weights"] * (1 - params["weights"]) / len(draws))
    assert np.all(np.abs(frequencies - params["weights"]) <= Z * standard_error)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _with(**changes):
    return {**CANONICAL, **changes}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (_with(weights=[0.5, 0.6, -0.1]), r"weights\[2\] = -0\.1 is negative.*>= 0"),
        (_with(weights=[0.5, 0.3, 0.1]), r"sum to 0\.9, not 1.*weights / sum\(weights\)"),
        (_with(weights=[0.0, 0.0, 0.0]), r"sum to 0, not 1.*positive weight"),
        (_with(weights=[0.5, np.nan, 0.5]), r"weights\[1\] = nan is not finite"),
        (_with(weights=[[0.5, 0.5]]), r"weights has shape \(1, 2\).*vector"),
        (_with(means=[[0.0, 0.0], [1.0, 1.0]]), r"means has shape \(2, 2\).*K = 3.*\(3, d\)"),
        (_with(means=[0.0, 1.0, 2.0]), r"means has shape \(3,\).*length-1 list"),
        (
            _with(covariances=np.array([np.eye(3)] * 3)),
            r"covariances has shape \(3, 3, 3\).*need shape \(3, 2, 2\)",
        ),
        (
            _with(covariances=[np.eye(2), [[1.0, 2.0], [2.0, 1.0]], np.eye(2)]),
            r"covariances\[1\] = \[\[1\.0, 2\.0\], \[2\.0, 1\.0\]\] is not positive definite"
            r".*smallest eigenvalue is -1.*B @ B\.T \+ eps \* I",
        ),
        (
            _with(covariances=[np.eye(2), np.eye(2), np.zeros((2, 2))]),
            r"covariances\[2\].*not positive definite.*smallest eigenvalue is 0",
        ),
        (
            _with(covariances=[np.eye(2), [[1.0, 0.5], [0.1, 1.0]], np.eye(2)]),
            r"covariances\[1\].*not symmetric.*\(C \+ C\.T\) / 2",
        ),
        (_with(means=[[0.0, np.inf], [1.0, 1.0], [2.0, 2.0]]), r"means\[0\].*not finite"),
    ],
)
def test_from_covariances_explains_bad_input(arguments, message):
    with pytest.raises(ValueError, match=message):
        gmm.from_covariances(**arguments)


def test_from_covariances_refuses_traced_values_and_names_the_unchecked_path():
    with pytest.raises(ValueError, match="weights is a traced value.*from_covariances_unchecked"):
        jax.jit(lambda w: gmm.from_covariances(w, CANONICAL["means"], CANONICAL["covariances"]))(
            jnp.asarray(CANONICAL["weights"])
        )


def test_unchecked_constructor_agrees_with_checked_and_runs_under_jit():
    checked = gmm.from_covariances(**CANONICAL)
    unchecked = jax.jit(gmm.from_covariances_unchecked)(
        2.0 * CANONICAL["weights"], CANONICAL["means"], CANONICAL["covariances"]
    )
    for a, b in zip(checked, unchecked, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(gmm.covariances(checked), CANONICAL["covariances"], atol=1e-15)


# --------------------------------------------------------------------------------------
# Transformations: no retrace on new values, vmap, grad
# --------------------------------------------------------------------------------------


def test_new_component_values_do_not_retrace():
    traces = []

    @jax.jit
    def evaluate(mixture, points, A, R, y):
        traces.append(1)
        posterior = gmm.condition_on_linear_gaussian(mixture, A, R, y)
        return gmm.log_prob(mixture, points), gmm.log_prob(posterior, points)

    points = jnp.asarray(GRID_POINTS[:100])
    A, R, y = (jnp.asarray(v) for v in OBSERVATIONS["m1"])
    first = gmm.from_covariances(**MIXTURES["canonical"])
    moved = gmm.from_covariances(**MIXTURES["ill-conditioned-K3"])  # same K = 3, d = 2
    evaluate(first, points, A, R, y)
    evaluate(moved, points, A, R, y)
    evaluate(first._replace(log_weights=jnp.log(jnp.array([0.2, 0.2, 0.6]))), points, A, 2 * R, -y)
    assert len(traces) == 1

    evaluate(gmm.from_covariances(**MIXTURES["random-K4"]), points, A, R, y)  # new K
    assert len(traces) == 2


def test_log_marginal_likelihood_vmaps_over_observations():
    prior = gmm.from_covariances(**CANONICAL)
    A, R = jnp.array([[1.0, 0.5]]), jnp.array([[0.25]])
    ys = jnp.linspace(-3.0, 3.0, 7)[:, None]
    batched = jax.vmap(gmm.log_marginal_likelihood, in_axes=(None, None, None, 0))(prior, A, R, ys)
    looped = [gmm.log_marginal_likelihood(prior, A, R, y) for y in ys]
    np.testing.assert_allclose(batched, looped, rtol=1e-13)


def test_gradients_match_finite_differences():
    """Gradients flow through the Cholesky solves and the QR of the square-root update."""
    prior = gmm.from_covariances(**CANONICAL)
    A, R, y = (jnp.asarray(v) for v in OBSERVATIONS["m2"])

    def summary(means, y, noise_scale):
        mixture = prior._replace(means=means)
        noise_cov = noise_scale * R
        posterior = gmm.condition_on_linear_gaussian(mixture, A, noise_cov, y)
        return (
            gmm.log_marginal_likelihood(mixture, A, noise_cov, y)
            + jnp.sum(gmm.mean(posterior) ** 2)
            + jnp.sum(gmm.covariance(posterior))
            + jnp.sum(posterior.chol_covs)
        )

    arguments = (prior.means, y, jnp.asarray(1.3))
    gradients = jax.grad(summary, argnums=(0, 1, 2))(*arguments)
    summary = jax.jit(summary)
    step = 1e-6
    for position, (argument, gradient) in enumerate(zip(arguments, gradients, strict=True)):
        for index in np.ndindex(*argument.shape):
            shift = jnp.zeros_like(argument).at[index].set(step)
            plus = list(arguments)
            minus = list(arguments)
            plus[position] = argument + shift
            minus[position] = argument - shift
            difference = (summary(*plus) - summary(*minus)) / (2 * step)
            assert gradient[index] == pytest.approx(float(difference), rel=1e-6, abs=1e-8)
