r"""The distribution-transformer lab: edit a mixture prior, get its posterior in a millisecond.

A :class:`TransformerLab` holds a 2-D Gaussian-mixture prior (typed rows, weights that
sum to one), observations (points on the plane, typed or clicked) and a linear-Gaussian
likelihood: either each point is seen whole, :math:`y_i = x + \sigma\varepsilon_i`, or
only along one direction, :math:`y_i = a^\top x + \sigma\varepsilon_i` with
:math:`a = (\cos\varphi, \sin\varphi)` (a click at :math:`p` records :math:`a^\top p`).
Either way the posterior is again a mixture, known exactly, and four answers are drawn
side by side with their cost:

- the **distribution transformer** (:mod:`posteriorlab.core.transformer`), one forward
  pass of the packaged network;
- the **exact posterior** (component-wise Kalman updates, re-weighted by evidence);
- **importance sampling** from the prior with N particles, the simplest sequential Monte
  Carlo answer (one step, no moves), with its effective sample size;
- **full-rank Gaussian VI** fitted by the ELBO (:mod:`posteriorlab.core.vi`) for a fixed
  budget of Adam steps.

Scores: the forward :math:`\mathrm{KL}(p\,\|\,q)` of each density by Monte Carlo over
exact draws (what the network was trained to make small), the error of each method's
posterior mean, and, after **Simulate data** draws a true parameter from the prior and
data around it, the log-density each answer gives the truth. The table maps each prior
component to its posterior component (the network is permutation-equivariant, so
component :math:`k` of the answer belongs to component :math:`k` of the prior).

Every array is padded to the network's limits (components, scalar observations), so a
new component, a click or a slider never recompiles.
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import param

from posteriorlab.core import gmm
from posteriorlab.core import transformer as dt
from posteriorlab.core.transformer import exact as dt_exact
from posteriorlab.core.transformer import inference
from posteriorlab.core.vi import families, objectives, optimize
from posteriorlab.labs import mixture_rows

GRID_SIZE = 80
EXACT_DRAWS = 4000
VI_STEPS = 300
VI_LEARNING_RATE = 0.05
VI_SAMPLES = 8
TIMING_REPEATS = 5
TRAINED_NOISE = (0.2, 2.0)
PARTICLE_COUNTS = [100, 1000, 10_000]

LIKELIHOOD_LABELS = {
    "See the point: y = x + noise": "identity",
    "See one direction: y = a·x + noise": "projection",
}
DEFAULT_PRIOR = "0.5, -2, 0, 0.8\n0.3, 2, 1, 0.6, 1.0, 0.5\n0.2, 0, -2.5, 0.7"
DEFAULT_OBSERVATIONS = "0.3, -0.6"  # between all three components: each keeps weight


class Answer(NamedTuple):
    """One method's posterior, as numpy arrays, with its cost and scores."""

    name: str
    density: np.ndarray  # (G, G) on the lab's grid; rows = second coordinate
    mean: np.ndarray  # (2,)
    milliseconds: float
    forward_kl: float  # KL(exact ‖ q) by Monte Carlo; nan where q has no density
    forward_kl_se: float
    truth_log_density: float  # log q(x_true); nan without a simulated truth


class TransformerResult(NamedTuple):
    """Everything the dashboard draws."""

    grid_x: np.ndarray
    grid_y: np.ndarray
    prior_density: np.ndarray
    prior_means: np.ndarray  # (K, 2)
    prior_weights: np.ndarray  # (K,)
    points: np.ndarray  # (n, 2) the observations as points on the plane
    direction: np.ndarray | None  # (2,) a, for the projection likelihood
    truth: np.ndarray | None  # (2,) the simulated true parameter
    answers: tuple[Answer, ...]  # transformer, exact, importance sampling, VI
    transformer_components: tuple[np.ndarray, np.ndarray]  # weights (K,), means (K, 2)
    exact_components: tuple[np.ndarray, np.ndarray]
    particles: np.ndarray  # (N, 2) importance-sampling particles
    particle_weights: np.ndarray  # (N,) normalised
    effective_sample_size: float
    log_evidence: float  # exact log p(y)
    log_evidence_estimate: float  # importance sampling's
    note: str  # a warning that is not an error (noise outside the trained range)


@functools.cache
def packaged_network():
    """The packaged network, loaded once per process and shared (it is immutable)."""
    return dt.load_pretrained()


# --------------------------------------------------------------------------------------
# Compiled computations (padded shapes: one compilation for every prior and data set)
# --------------------------------------------------------------------------------------


@jax.jit
def _exact(prior, rows, values, noise_sd, mask):
    return dt_exact.exact_posterior(prior, rows, values, noise_sd, mask)


def _log_likelihood(rows, values, noise_sd, mask):
    def log_likelihood(x):
        terms = jax.scipy.stats.norm.logpdf(values, rows @ x, noise_sd)
        return jnp.sum(jnp.where(mask, terms, 0.0))

    return log_likelihood


@functools.partial(jax.jit, static_argnames="num_particles")
def _importance(key, prior, rows, values, noise_sd, mask, num_particles):
    return dt.importance_sample(key, prior, _log_likelihood(rows, values, noise_sd, mask),
                                num_particles)  # fmt: skip


class _PosteriorTarget(NamedTuple):
    """log p(x) + log p(y | x) for VI, a pytree so new data never recompile."""

    prior: gmm.GaussianMixture
    rows: jax.Array
    values: jax.Array
    noise_sd: jax.Array
    mask: jax.Array

    def __call__(self, x):
        likelihood = _log_likelihood(self.rows, self.values, self.noise_sd, self.mask)
        return gmm.log_prob(self.prior, x) + likelihood(x)


def _moment_matched_start(prior) -> families.FullRankGaussian:
    chol = jnp.linalg.cholesky(gmm.covariance(prior))
    raw = jnp.tril(chol, -1) + jnp.diag(jnp.log(jnp.diagonal(chol)))
    return families.FullRankGaussian(gmm.mean(prior), raw)


@jax.jit
def _variational(key, prior, rows, values, noise_sd, mask):
    target = _PosteriorTarget(prior, rows, values, noise_sd, mask)
    state = optimize.init(_moment_matched_start(prior))
    state, _ = optimize.run_chunk(
        key, state, target, objectives.elbo, learning_rate=VI_LEARNING_RATE,
        num_steps=VI_STEPS, num_samples=VI_SAMPLES,
    )  # fmt: skip
    return state.params


@jax.jit
def _log_density_on(mixture, points):
    return gmm.log_prob(mixture, points)


def _timed(function, *args):
    """The result and the median wall time of :data:`TIMING_REPEATS` calls, in ms
    (compiled before timing)."""
    result = jax.block_until_ready(function(*args))
    times = []
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return result, 1e3 * float(np.median(times))


class TransformerLab(param.Parameterized):
    """State and results of one distribution-transformer session (module docstring)."""

    components = param.String(
        DEFAULT_PRIOR, label="Prior components",
        doc="One row per component: weight, mean_x, mean_y, sd_x[, sd_y[, correlation]]; "
        "weights sum to 1.",
    )  # fmt: skip
    observations = param.String(
        DEFAULT_OBSERVATIONS, label="Observed points",
        doc="One point per row (x, y); click on the prior plot to add one.",
    )  # fmt: skip
    likelihood = param.Selector(objects=LIKELIHOOD_LABELS, default="identity", label="Likelihood")
    direction_degrees = param.Number(
        30.0, softbounds=(0.0, 180.0), step=5.0, label="Direction φ of a (degrees)",
        doc="a = (cos φ, sin φ): only a·x is observed.",
    )  # fmt: skip
    noise_sd = param.Number(
        1.0, softbounds=(0.2, 2.0), step=0.05, label="Noise σ",
        doc="Observation noise; the network was trained on 0.2 to 2.",
    )  # fmt: skip
    num_particles = param.Selector(
        objects=PARTICLE_COUNTS, default=1000, label="Importance-sampling particles N"
    )
    seed = param.Integer(0, bounds=(0, None), label="Seed")
    simulate = param.Event(label="Simulate data from the prior")

    result = param.ClassSelector(class_=TransformerResult, allow_None=True, constant=True)
    error = param.String("", constant=True, doc="What is wrong with the current input.")

    INPUTS = ("components", "observations", "likelihood", "direction_degrees", "noise_sd",
              "num_particles", "seed")  # fmt: skip

    def __init__(self, network=None, compute: bool = True, **params):
        super().__init__(**params)
        self._network = network
        self._truth = None
        if compute:
            self.update()
        self.param.watch(self._inputs_changed, list(self.INPUTS))
        self.param.watch(lambda *_: self.simulate_data(), ["simulate"])

    @property
    def network(self):
        if self._network is None:
            self._network = packaged_network()
        return self._network

    # ----------------------------------------------------------------- input
    def _inputs_changed(self, *events) -> None:
        if {event.name for event in events} & {"components", "likelihood", "direction_degrees"}:
            self._truth = None  # the truth belonged to the old prior or likelihood
        self.update()

    def _prior_rows(self) -> mixture_rows.ComponentRows:
        return mixture_rows.parse_components(
            self.components, max_components=self.network.config.max_components,
            what="The prior", normalise=False,
        )  # fmt: skip

    def _points(self) -> np.ndarray:
        rows = [r.strip() for r in self.observations.replace(";", "\n").splitlines() if r.strip()]
        points = []
        for number, row in enumerate(rows, start=1):
            try:
                values = [float(v) for v in row.replace(",", " ").split()]
            except ValueError:
                raise ValueError(
                    f"Observation {number} ({row!r}) is not a pair of numbers; write 'x, y'."
                ) from None
            if len(values) != 2 or not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"Observation {number} ({row!r}) must be two finite numbers, 'x, y'."
                )
            points.append(values)
        per_point = 2 if self.likelihood == "identity" else 1
        limit = self.network.config.max_observations // per_point
        if len(points) > limit:
            raise ValueError(
                f"{len(points)} observed points: the network takes at most "
                f"{self.network.config.max_observations} scalar observations, i.e. {limit} "
                f"points with this likelihood. Remove some rows."
            )
        return np.asarray(points, float).reshape(-1, 2)

    def _direction(self) -> np.ndarray:
        angle = math.radians(self.direction_degrees)
        return np.array([math.cos(angle), math.sin(angle)])

    def _scalar_observations(self, points: np.ndarray):
        """Rows a_j and values y_j of the scalar observations the points stand for."""
        if self.likelihood == "identity":
            rows = np.tile(np.eye(2), (points.shape[0], 1))
            return rows, points.reshape(-1)
        a = self._direction()
        return np.tile(a, (points.shape[0], 1)), points @ a

    def problems(self) -> list[str]:
        """Everything wrong with the input, each with what is allowed."""
        found = []
        for name in ("noise_sd", "direction_degrees"):
            value = getattr(self, name)
            if value is None or not math.isfinite(value):
                found.append(f"{self.param[name].label} = {value} is not a number.")
        if not found and self.noise_sd <= 0:
            found.append(f"Noise σ = {self.noise_sd} must be positive (e.g. 0.5).")
        for read in (self._prior_rows, self._points):
            try:
                read()
            except ValueError as error:
                found.append(str(error))
        return found

    # ----------------------------------------------------------------- actions
    def add_observation(self, x: float, y: float) -> None:
        """Append the point (x, y) (what a click on the prior plot does)."""
        rows = [r for r in self.observations.splitlines() if r.strip()]
        self.observations = "\n".join([*rows, f"{x:.3f}, {y:.3f}"])

    def simulate_data(self) -> None:
        """Draw a true parameter from the prior and as many points as are shown now
        (at least 3) from the likelihood around it; the scores then include log q(truth)."""
        try:
            rows = self._prior_rows()
            count = max(3, self._points().shape[0])
        except ValueError:
            self.update()  # shows the message
            return
        rng = np.random.default_rng(self.seed)
        component = rng.choice(rows.weights.size, p=rows.weights)
        truth = rng.multivariate_normal(rows.means[component], rows.covariances[component])
        noise = self.noise_sd * rng.standard_normal((count, 2))
        if self.likelihood == "identity":
            points = truth + noise
        else:  # the point's coordinate along a carries the data; across a it is arbitrary
            a = self._direction()
            along = truth @ a + noise[:, 0]
            points = along[:, None] * a + noise[:, 1:] * np.array([-a[1], a[0]])
        self._truth = truth
        with param.discard_events(self):
            self.observations = "\n".join(f"{x:.3f}, {y:.3f}" for x, y in points)
        self.update()

    def update(self) -> None:
        """Recompute every answer, or explain what is wrong and keep the last result."""
        found = self.problems()
        with param.edit_constant(self):
            self.error = " ".join(found)
        if found:
            return
        result = self._compute()
        with param.edit_constant(self):
            self.result = result

    # ----------------------------------------------------------------- computing
    def _compute(self) -> TransformerResult:
        network = self.network
        config = network.config
        dtype = jnp.float32
        rows = self._prior_rows()
        prior = gmm.GaussianMixture(
            jnp.log(jnp.asarray(rows.weights, dtype)), jnp.asarray(rows.means, dtype),
            jnp.linalg.cholesky(jnp.asarray(rows.covariances, dtype)),
        )  # fmt: skip
        points = self._points()
        scalar_rows, scalar_values = self._scalar_observations(points)
        padded_prior, component_mask = inference.pad_prior(prior, config.max_components)
        data = inference.pad_observations(
            jnp.asarray(scalar_rows, dtype).reshape(-1, 2), jnp.asarray(scalar_values, dtype),
            jnp.asarray(self.noise_sd, dtype), None, config.max_observations,
        )  # fmt: skip
        key_is, key_vi, key_draws = jax.random.split(jax.random.key(self.seed), 3)

        network_posterior, network_ms = _timed(
            inference.padded_posterior, network, padded_prior, component_mask, *data
        )
        exact_posterior, exact_ms = _timed(_exact, padded_prior, *data)
        weighted, importance_ms = _timed(
            functools.partial(_importance, num_particles=self.num_particles),
            key_is, padded_prior, *data,
        )  # fmt: skip
        vi_family, vi_ms = _timed(_variational, key_vi, padded_prior, *data)

        window = self._window(rows, points)
        grid_x = np.linspace(window[0], window[1], GRID_SIZE)
        grid_y = np.linspace(window[2], window[3], GRID_SIZE)
        grid = jnp.asarray(np.stack(np.meshgrid(grid_x, grid_y), -1), dtype)
        exact_draws = gmm.sample(key_draws, exact_posterior, EXACT_DRAWS)
        exact_log_q = _log_density_on(exact_posterior, exact_draws)
        truth = None if self._truth is None else jnp.asarray(self._truth, dtype)

        def scored(name, log_density, mean, milliseconds):
            gaps = np.asarray(exact_log_q - log_density(exact_draws), np.float64)
            return Answer(
                name, np.exp(np.asarray(log_density(grid), np.float64)).astype(np.float32),
                np.asarray(mean, np.float64), milliseconds, float(gaps.mean()),
                float(gaps.std() / math.sqrt(gaps.size)),
                float(log_density(truth)) if truth is not None else math.nan,
            )  # fmt: skip

        particle_weights = np.exp(np.asarray(weighted.log_weights, np.float64))
        particles = np.asarray(weighted.particles, np.float64)
        importance = Answer(
            f"Importance sampling, N = {self.num_particles}",
            _binned(particles, particle_weights, grid_x, grid_y),
            particle_weights @ particles, importance_ms, math.nan, math.nan, math.nan,
        )  # fmt: skip
        answers = (
            scored("Distribution transformer",
                   functools.partial(_log_density_on, network_posterior),
                   gmm.mean(network_posterior), network_ms),
            scored("Exact posterior", functools.partial(_log_density_on, exact_posterior),
                   gmm.mean(exact_posterior), exact_ms),
            importance,
            scored(f"Full-rank VI, {VI_STEPS} Adam steps", vi_family.log_prob, vi_family.loc,
                   vi_ms),
        )  # fmt: skip
        count = rows.weights.size
        return TransformerResult(
            grid_x=grid_x, grid_y=grid_y,
            prior_density=np.exp(np.asarray(_log_density_on(prior, grid))).astype(np.float32),
            prior_means=rows.means, prior_weights=rows.weights, points=points,
            direction=None if self.likelihood == "identity" else self._direction(),
            truth=self._truth,
            answers=answers,
            transformer_components=_components(network_posterior, count),
            exact_components=_components(exact_posterior, count),
            particles=particles, particle_weights=particle_weights,
            effective_sample_size=float(weighted.effective_sample_size),
            log_evidence=float(gmm.log_marginal_likelihood(
                padded_prior, data[0] * data[3][:, None], jnp.diag(data[2] ** 2),
                data[1] * data[3],
            ) - _padding_evidence(data)),
            log_evidence_estimate=float(weighted.log_evidence),
            note=self._note(),
        )  # fmt: skip

    def _note(self) -> str:
        low, high = TRAINED_NOISE
        if not low <= self.noise_sd <= high:
            return (
                f"σ = {self.noise_sd} lies outside the noise the network was trained on "
                f"({low} to {high}): it extrapolates, compare it with the exact posterior."
            )
        return ""

    @staticmethod
    def _window(rows, points) -> tuple[float, float, float, float]:
        spread = 3.0 * np.sqrt(np.diagonal(rows.covariances, axis1=1, axis2=2))
        low = np.min(rows.means - spread, axis=0)
        high = np.max(rows.means + spread, axis=0)
        if points.size:
            low = np.minimum(low, points.min(axis=0) - 0.5)
            high = np.maximum(high, points.max(axis=0) + 0.5)
        return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def _components(mixture, count) -> tuple[np.ndarray, np.ndarray]:
    weights = np.exp(np.asarray(mixture.log_weights[:count], np.float64))
    return weights / weights.sum(), np.asarray(mixture.means[:count], np.float64)


def _padding_evidence(data) -> jax.Array:
    """The log-density the padded (masked) observations add to log p(y): each is the
    observation y = 0 of a zero row, a constant N(0; 0, σ²)."""
    _, _, noise_sd, mask = data
    return jnp.sum(jnp.where(mask, 0.0, jax.scipy.stats.norm.logpdf(0.0, 0.0, noise_sd)))


def _binned(particles, weights, grid_x, grid_y) -> np.ndarray:
    """The weighted particles binned on the grid cells, as a density (a picture of the
    importance-sampling answer)."""
    step_x, step_y = grid_x[1] - grid_x[0], grid_y[1] - grid_y[0]
    edges_x = np.append(grid_x - 0.5 * step_x, grid_x[-1] + 0.5 * step_x)
    edges_y = np.append(grid_y - 0.5 * step_y, grid_y[-1] + 0.5 * step_y)
    histogram, _, _ = np.histogram2d(
        particles[:, 1], particles[:, 0], bins=(edges_y, edges_x), weights=weights
    )
    return (histogram / (step_x * step_y)).astype(np.float32)
