r"""The distribution-transformer lab: edit a mixture prior, get its posterior in a millisecond.

A :class:`TransformerLab` holds a 2-D Gaussian-mixture prior (typed rows, weights that
sum to one, a mean also dragged on the prior plot: :meth:`TransformerLab.move_component`),
observations and one of three likelihoods, each with its own packaged network
(:func:`posteriorlab.core.transformer.load_pretrained`):

- **see the point**, :math:`y_i = x + \sigma\varepsilon_i`, and **see one direction**,
  :math:`y_i = a^\top x + \sigma\varepsilon_i` with :math:`a = (\cos\varphi, \sin\varphi)`
  (points typed or clicked; a click at :math:`p` records :math:`p`, or :math:`a^\top p`).
  The posterior is again a mixture, known exactly (component-wise Kalman updates,
  re-weighted by evidence);
- **see the distance**, :math:`r_i = \lVert x\rVert + \sigma\varepsilon_i`: each
  observation is one number, typed or clicked (a click at :math:`p` records
  :math:`\lVert p\rVert`). A prior component near the origin becomes a ring, one far
  from it an arc: no closed form, but in 2-D a quadrature in polar coordinates is exact
  to many digits (:mod:`posteriorlab.core.transformer.quadrature`), and that is the
  exact answer drawn.

Five answers are drawn side by side with their cost:

- the **distribution transformer** (:mod:`posteriorlab.core.transformer`), one forward
  pass of the likelihood's network;
- the **exact posterior** (closed form, or by grid quadrature for distances);
- **importance sampling** from the prior with N particles, the simplest sequential Monte
  Carlo answer (one step, no moves), with its effective sample size;
- **tempered SMC** with N particles (:mod:`posteriorlab.core.smc.tempering`): from the
  prior to the posterior through adaptively chosen temperatures, with resampling and
  random-walk Metropolis moves;
- **full-rank Gaussian VI** fitted by the ELBO (:mod:`posteriorlab.core.vi`) for a fixed
  budget of Adam steps.

Scores: the forward :math:`\mathrm{KL}(p\,\|\,q)` of each density by Monte Carlo over
exact draws (what the network was trained to make small), the error of each method's
posterior mean, and, after **Simulate data** draws a true parameter from the prior and
data around it, the log-density each answer gives the truth. The particle answers are
scored through a weighted kernel density estimate of their particles
(:func:`posteriorlab.core.transformer.evaluation.kernel_density_log_prob`). The table maps
each prior component to its posterior component (the network is permutation-equivariant,
so component :math:`k` of the answer belongs to component :math:`k` of the prior).

Every array is padded to the network's limits (components, scalar observations), so a
new component, a dragged mean, a click or a slider never recompiles; each likelihood
compiles once.
"""

from __future__ import annotations

import functools
import math
import re
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import param

from posteriorlab.core import gmm
from posteriorlab.core import transformer as dt
from posteriorlab.core.smc import tempering
from posteriorlab.core.transformer import evaluation, inference, likelihoods, quadrature
from posteriorlab.core.transformer import exact as dt_exact
from posteriorlab.core.vi import families, objectives, optimize
from posteriorlab.labs import mixture_rows
from posteriorlab.labs.scheduling import Recomputation

GRID_SIZE = 80
EXACT_DRAWS = 4000
VI_STEPS = 300
VI_LEARNING_RATE = 0.05
VI_SAMPLES = 8
SMC_ESS_FRACTION = 0.5
SMC_MOVES = 5
SMC_MAX_STEPS = 64
TIMING_REPEATS = 5
TRAINED_NOISE = (0.2, 2.0)
PARTICLE_COUNTS = [100, 1000, 10_000]
IMPOSSIBLE_READING = 5.0
"""A distance reading below -IMPOSSIBLE_READING * σ is refused: for any x it has a
probability below 3e-7."""

LIKELIHOOD_LABELS = {
    "See the point: y = x + noise": "identity",
    "See one direction: y = a·x + noise": "projection",
    "See the distance: r = ‖x‖ + noise": "norm",
}
NETWORK_OF_LIKELIHOOD = {"identity": "linear_gaussian", "projection": "linear_gaussian",
                         "norm": "norm"}  # fmt: skip
"""The packaged network (and core likelihood) behind each of the lab's likelihoods."""
DEFAULT_PRIOR = "0.5, -2, 0, 0.8\n0.3, 2, 1, 0.6, 1.0, 0.5\n0.2, 0, -2.5, 0.7"
DEFAULT_OBSERVATIONS = "0.3, -0.6"  # between all three components: each keeps weight
DEFAULT_DISTANCES = "2.1, 2.4"  # a ring through all three components


class Answer(NamedTuple):
    """One method's posterior, as numpy arrays, with its cost and scores."""

    name: str
    density: np.ndarray  # (G, G) on the lab's grid; rows = second coordinate
    mean: np.ndarray  # (2,)
    milliseconds: float
    forward_kl: float  # KL(exact ‖ q) by Monte Carlo over exact draws
    forward_kl_se: float
    truth_log_density: float  # log q(x_true); nan without a simulated truth


class TransformerResult(NamedTuple):
    """Everything the dashboard draws."""

    grid_x: np.ndarray
    grid_y: np.ndarray
    prior_density: np.ndarray
    prior_means: np.ndarray  # (K, 2)
    prior_weights: np.ndarray  # (K,)
    points: np.ndarray  # (n, 2) the observations as points on the plane ((0, 2) for distances)
    direction: np.ndarray | None  # (2,) a, for the projection likelihood
    distances: np.ndarray | None  # (n,) the observed distances, for the distance likelihood
    truth: np.ndarray | None  # (2,) the simulated true parameter
    answers: tuple[Answer, ...]  # transformer, exact, importance sampling, SMC, VI
    transformer_components: tuple[np.ndarray, np.ndarray]  # weights (K,), means (K, 2)
    exact_components: tuple[np.ndarray, np.ndarray] | None  # None: the posterior is no mixture
    particles: np.ndarray  # (N, 2) importance-sampling particles
    particle_weights: np.ndarray  # (N,) normalised
    effective_sample_size: float
    smc_particles: np.ndarray  # (N, 2) tempered-SMC particles, equally weighted
    smc_temperatures: np.ndarray  # (T,) the ladder β_1 < ... < β_T = 1
    smc_acceptance: float  # mean Metropolis acceptance rate over the ladder
    log_evidence: float  # exact log p(y)
    log_evidence_estimate: float  # importance sampling's
    smc_log_evidence: float  # tempered SMC's
    note: str  # a warning that is not an error (noise outside the trained range)


@functools.cache
def packaged_network(name: str = "linear_gaussian"):
    """A packaged network, loaded once per process and shared (it is immutable)."""
    return dt.load_pretrained(name)


# --------------------------------------------------------------------------------------
# Compiled computations (padded shapes: one compilation for every prior and data set;
# the core likelihood's name is static, so each likelihood compiles once)
# --------------------------------------------------------------------------------------


def _log_likelihood(likelihood, rows, values, noise_sd, mask):
    return functools.partial(likelihoods.log_likelihood, likelihood, rows=rows, values=values,
                             noise_sd=noise_sd, observation_mask=mask)  # fmt: skip


@jax.jit
def _exact(prior, rows, values, noise_sd, mask):
    return dt_exact.exact_posterior(prior, rows, values, noise_sd, mask)


@jax.jit
def _quadrature(prior, values, noise_sd, mask):
    return quadrature.norm_posterior(prior, values, noise_sd, mask)


@functools.partial(jax.jit, static_argnames=("num_particles", "likelihood"))
def _importance(key, prior, rows, values, noise_sd, mask, num_particles, likelihood):
    return dt.importance_sample(
        key, prior, _log_likelihood(likelihood, rows, values, noise_sd, mask), num_particles
    )


@functools.partial(jax.jit, static_argnames=("num_particles", "likelihood"))
def _tempered(key, prior, rows, values, noise_sd, mask, num_particles, likelihood):
    return tempering.run_mixture_prior(
        key, prior, _log_likelihood(likelihood, rows, values, noise_sd, mask), num_particles,
        target_ess_fraction=SMC_ESS_FRACTION, num_moves=SMC_MOVES, max_steps=SMC_MAX_STEPS,
    )  # fmt: skip


def _moment_matched_start(prior) -> families.FullRankGaussian:
    chol = jnp.linalg.cholesky(gmm.covariance(prior))
    raw = jnp.tril(chol, -1) + jnp.diag(jnp.log(jnp.diagonal(chol)))
    return families.FullRankGaussian(gmm.mean(prior), raw)


def _log_joint(likelihood, prior, rows, values, noise_sd, mask, x):
    return gmm.log_prob(prior, x) + likelihoods.log_likelihood(likelihood, x, rows, values,
                                                               noise_sd, mask)  # fmt: skip


_LOG_JOINTS = {name: functools.partial(_log_joint, name) for name in likelihoods.LIKELIHOODS}
"""One function object per likelihood, so that VI's target (a pytree, traced data) is
the same program for every prior and data set."""


@functools.partial(jax.jit, static_argnames="likelihood")
def _variational(key, prior, rows, values, noise_sd, mask, likelihood):
    target = jax.tree_util.Partial(_LOG_JOINTS[likelihood], prior, rows, values, noise_sd, mask)
    state = optimize.init(_moment_matched_start(prior))
    state, _ = optimize.run_chunk(
        key, state, target, objectives.elbo, learning_rate=VI_LEARNING_RATE,
        num_steps=VI_STEPS, num_samples=VI_SAMPLES,
    )  # fmt: skip
    return state.params


@jax.jit
def _log_density_on(mixture, points):
    return gmm.log_prob(mixture, points)


@jax.jit
def _quadrature_log_density_on(posterior, prior, values, noise_sd, mask, points):
    return quadrature.log_density(posterior, prior, values, noise_sd, mask, points)


KDE_CHUNK = 256
"""Points per chunk of a kernel density evaluation: memory of KDE_CHUNK x N, not 4000 x N."""


@jax.jit
def _kernel_density_on(particles, log_weights, points):
    flat = points.reshape(-1, points.shape[-1])
    values = jax.lax.map(
        lambda point: evaluation.kernel_density_log_prob(particles, log_weights, point),
        flat, batch_size=KDE_CHUNK,
    )  # fmt: skip
    return values.reshape(points.shape[:-1])


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
    distances = param.String(
        DEFAULT_DISTANCES, label="Observed distances ‖x‖ + noise",
        doc="Measured distances from the origin, separated by commas or new lines; a click "
        "on the prior plot adds the distance of the clicked point.",
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
        objects=PARTICLE_COUNTS, default=1000, label="Particles N (importance sampling, SMC)"
    )
    seed = param.Integer(0, bounds=(0, None), label="Seed")
    simulate = param.Event(label="Simulate data from the prior")

    result = param.ClassSelector(class_=TransformerResult, allow_None=True, constant=True)
    error = param.String("", constant=True, doc="What is wrong with the current input.")

    INPUTS = ("components", "observations", "distances", "likelihood", "direction_degrees",
              "noise_sd", "num_particles", "seed")  # fmt: skip

    def __init__(self, network=None, distance_network=None, compute: bool = True, **params):
        super().__init__(**params)
        self._recomputation = Recomputation()
        self._networks = {"linear_gaussian": network, "norm": distance_network}
        self._truth = None
        if compute:
            self.update()
        self.param.watch(self._inputs_changed, list(self.INPUTS))
        self.param.watch(lambda *_: self.simulate_data(), ["simulate"])

    @property
    def core_likelihood(self) -> str:
        """The core likelihood of the current choice (``"linear_gaussian"`` or ``"norm"``)."""
        return NETWORK_OF_LIKELIHOOD[self.likelihood]

    @property
    def network(self):
        """The network of the current likelihood (the packaged one unless given)."""
        name = self.core_likelihood
        if self._networks[name] is None:
            self._networks[name] = packaged_network(name)
        return self._networks[name]

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

    def _distances(self) -> np.ndarray:
        """The typed distances; a negative reading is allowed (noise on a short distance)
        unless it is impossible, below -IMPOSSIBLE_READING σ."""
        texts = [t for t in re.split(r"[,;\s]+", self.distances.strip()) if t]
        distances = []
        for number, text in enumerate(texts, start=1):
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    f"Distance {number} ({text!r}) is not a number; type distances from the "
                    "origin such as '2.1, 2.4', or click on the prior plot."
                ) from None
            if not math.isfinite(value):
                raise ValueError(f"Distance {number} is {text!r}: it must be a finite number.")
            if value < -IMPOSSIBLE_READING * self.noise_sd:
                raise ValueError(
                    f"Distance {number} is {value}: a distance ‖x‖ is never negative, and "
                    f"noise of σ = {self.noise_sd} makes a reading below "
                    f"{-IMPOSSIBLE_READING * self.noise_sd:.2f} practically impossible "
                    "(probability below 3e-7). Type a distance of at least 0."
                )
            distances.append(value)
        limit = self.network.config.max_observations
        if len(distances) > limit:
            raise ValueError(
                f"{len(distances)} observed distances: the network takes at most {limit}. "
                "Remove some."
            )
        return np.asarray(distances, float)

    def _direction(self) -> np.ndarray:
        angle = math.radians(self.direction_degrees)
        return np.array([math.cos(angle), math.sin(angle)])

    def _scalar_observations(self):
        """Rows a_j and values y_j of the scalar observations the current data stand for."""
        if self.likelihood == "norm":
            distances = self._distances()
            return np.asarray(likelihoods.distance_rows(distances.size, 2)), distances
        points = self._points()
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
        readers = [self._prior_rows]
        if self.likelihood != "norm":
            readers.append(self._points)
        elif not found:  # reading distances needs a valid σ
            readers.append(self._distances)
        for read in readers:
            try:
                read()
            except ValueError as error:
                found.append(str(error))
        return found

    # ----------------------------------------------------------------- actions
    def add_observation(self, x: float, y: float) -> None:
        """What a click at (x, y) on the prior plot does: append the point, or, for the
        distance likelihood, its distance from the origin."""
        if self.likelihood == "norm":
            texts = [t for t in re.split(r"[,;\s]+", self.distances.strip()) if t]
            self.distances = ", ".join([*texts, f"{math.hypot(x, y):.3f}"])
            return
        rows = [r for r in self.observations.splitlines() if r.strip()]
        self.observations = "\n".join([*rows, f"{x:.3f}, {y:.3f}"])

    def move_component(self, index: int, mean) -> None:
        """What dropping prior component ``index``'s marker at ``mean`` does: rewrite
        that row's mean in the components text (:func:`mixture_rows.with_mean`, clipped
        to the lab's window), and every answer follows. Only a number changes, so
        nothing recompiles.

        While the components text does not parse, the markers show an older prior (the
        last good result) and their numbering may not match the rows: the drop is
        ignored and the message about the text stays.
        """
        try:
            self._prior_rows()
            components = mixture_rows.with_mean(self.components, index, mean)
        except ValueError:
            return
        self.components = components

    def simulate_data(self) -> None:
        """Draw a true parameter from the prior and as many observations as are shown now
        (at least 3) from the likelihood around it; the scores then include log q(truth)."""
        try:
            rows = self._prior_rows()
            data = self._distances() if self.likelihood == "norm" else self._points()
        except ValueError:
            self.update()  # shows the message
            return
        count = max(3, data.shape[0])
        rng = np.random.default_rng(self.seed)
        component = rng.choice(rows.weights.size, p=rows.weights)
        truth = rng.multivariate_normal(rows.means[component], rows.covariances[component])
        noise = self.noise_sd * rng.standard_normal((count, 2))
        self._truth = truth
        with param.discard_events(self):
            if self.likelihood == "norm":
                readings = np.linalg.norm(truth) + noise[:, 0]
                self.distances = ", ".join(f"{r:.3f}" for r in readings)
            else:
                self.observations = "\n".join(
                    f"{x:.3f}, {y:.3f}" for x, y in self._simulated_points(truth, noise)
                )
        self.update()

    def _simulated_points(self, truth, noise) -> np.ndarray:
        if self.likelihood == "identity":
            return truth + noise
        # The point's coordinate along a carries the data; across a it is arbitrary.
        a = self._direction()
        along = truth @ a + noise[:, 0]
        return along[:, None] * a + noise[:, 1:] * np.array([-a[1], a[0]])

    def update(self) -> None:
        """Recompute every answer, or explain what is wrong and keep the last result
        (serialised and coalesced: :mod:`posteriorlab.labs.scheduling`)."""
        self._recomputation.request(self._recompute)

    def _recompute(self) -> None:
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
        likelihood = self.core_likelihood
        dtype = jnp.float32
        rows = self._prior_rows()
        prior = gmm.GaussianMixture(
            jnp.log(jnp.asarray(rows.weights, dtype)), jnp.asarray(rows.means, dtype),
            jnp.linalg.cholesky(jnp.asarray(rows.covariances, dtype)),
        )  # fmt: skip
        scalar_rows, scalar_values = self._scalar_observations()
        padded_prior, component_mask = inference.pad_prior(prior, config.max_components)
        data = inference.pad_observations(
            jnp.asarray(scalar_rows, dtype).reshape(-1, 2), jnp.asarray(scalar_values, dtype),
            jnp.asarray(self.noise_sd, dtype), None, config.max_observations,
        )  # fmt: skip
        key_is, key_smc, key_vi, key_draws = jax.random.split(jax.random.key(self.seed), 4)

        network_posterior, network_ms = _timed(
            inference.padded_posterior, network, padded_prior, component_mask, *data
        )
        reference = (self._grid_reference if likelihood == "norm"
                     else self._closed_form_reference)(padded_prior, data, key_draws)  # fmt: skip
        weighted, importance_ms = _timed(
            functools.partial(_importance, num_particles=self.num_particles,
                              likelihood=likelihood),
            key_is, padded_prior, *data,
        )  # fmt: skip
        smc, smc_ms = _timed(
            functools.partial(_tempered, num_particles=self.num_particles,
                              likelihood=likelihood),
            key_smc, padded_prior, *data,
        )  # fmt: skip
        vi_family, vi_ms = _timed(
            functools.partial(_variational, likelihood=likelihood), key_vi, padded_prior, *data
        )

        points = self._points() if likelihood == "linear_gaussian" else np.zeros((0, 2))
        window = self._window(rows, points, scalar_values if likelihood == "norm" else None)
        grid_x = np.linspace(window[0], window[1], GRID_SIZE)
        grid_y = np.linspace(window[2], window[3], GRID_SIZE)
        grid = jnp.asarray(np.stack(np.meshgrid(grid_x, grid_y), -1), dtype)
        truth = None if self._truth is None else jnp.asarray(self._truth, dtype)

        def scored(name, log_density, mean, milliseconds, density=None):
            gaps = np.asarray(reference.log_density_of_draws - log_density(reference.draws),
                              np.float64)  # fmt: skip
            if density is None:
                density = np.exp(np.asarray(log_density(grid), np.float64)).astype(np.float32)
            return Answer(
                name, density, np.asarray(mean, np.float64), milliseconds, float(gaps.mean()),
                float(gaps.std() / math.sqrt(gaps.size)),
                float(log_density(truth)) if truth is not None else math.nan,
            )  # fmt: skip

        def particle_answer(name, particles, log_weights, milliseconds):
            weights = np.exp(np.asarray(log_weights, np.float64))
            weights = weights / weights.sum()
            cloud = np.asarray(particles, np.float64)
            return scored(name, functools.partial(_kernel_density_on, particles, log_weights),
                          weights @ cloud, milliseconds,
                          _binned(cloud, weights, grid_x, grid_y))  # fmt: skip

        exact_name = ("Exact posterior (by grid quadrature)" if likelihood == "norm"
                      else "Exact posterior")  # fmt: skip
        answers = (
            scored("Distribution transformer",
                   functools.partial(_log_density_on, network_posterior),
                   gmm.mean(network_posterior), network_ms),
            scored(exact_name, reference.log_density, reference.mean, reference.milliseconds),
            particle_answer(f"Importance sampling, N = {self.num_particles}",
                            weighted.particles, weighted.log_weights, importance_ms),
            particle_answer(f"Tempered SMC, N = {self.num_particles}", smc.particles,
                            smc.log_weights, smc_ms),
            scored(f"Full-rank VI, {VI_STEPS} Adam steps", vi_family.log_prob, vi_family.loc,
                   vi_ms),
        )  # fmt: skip
        count = rows.weights.size
        steps = int(smc.num_steps)
        particle_weights = np.exp(np.asarray(weighted.log_weights, np.float64))
        return TransformerResult(
            grid_x=grid_x, grid_y=grid_y,
            prior_density=np.exp(np.asarray(_log_density_on(prior, grid))).astype(np.float32),
            prior_means=rows.means, prior_weights=rows.weights, points=points,
            direction=self._direction() if self.likelihood == "projection" else None,
            distances=np.asarray(scalar_values) if likelihood == "norm" else None,
            truth=self._truth,
            answers=answers,
            transformer_components=_components(network_posterior, count),
            exact_components=reference.components(count),
            particles=np.asarray(weighted.particles, np.float64),
            particle_weights=particle_weights / particle_weights.sum(),
            effective_sample_size=float(weighted.effective_sample_size),
            smc_particles=np.asarray(smc.particles, np.float64),
            smc_temperatures=np.asarray(smc.temperatures[:steps], np.float64),
            smc_acceptance=float(np.mean(np.asarray(smc.acceptance_rates[:steps]))),
            log_evidence=reference.log_evidence,
            log_evidence_estimate=float(weighted.log_evidence),
            smc_log_evidence=float(smc.log_evidence),
            note=self._note(scalar_values),
        )  # fmt: skip

    @staticmethod
    def _closed_form_reference(padded_prior, data, key) -> _Reference:
        posterior, milliseconds = _timed(_exact, padded_prior, *data)
        draws = gmm.sample(key, posterior, EXACT_DRAWS)
        log_density = functools.partial(_log_density_on, posterior)
        log_evidence = float(gmm.log_marginal_likelihood(
            padded_prior, data[0] * data[3][:, None], jnp.diag(data[2] ** 2), data[1] * data[3],
        ) - _padding_evidence(data))  # fmt: skip
        return _Reference(log_density, gmm.mean(posterior), milliseconds, draws,
                          log_density(draws), log_evidence,
                          functools.partial(_components, posterior))  # fmt: skip

    @staticmethod
    def _grid_reference(padded_prior, data, key) -> _Reference:
        _, values, noise_sd, mask = data
        posterior, milliseconds = _timed(_quadrature, padded_prior, values, noise_sd, mask)
        draws = quadrature.sample(key, posterior, EXACT_DRAWS)
        log_density = functools.partial(_quadrature_log_density_on, posterior, padded_prior,
                                        values, noise_sd, mask)  # fmt: skip
        return _Reference(log_density, quadrature.mean(posterior), milliseconds, draws,
                          log_density(draws), float(posterior.log_evidence),
                          lambda count: None)  # fmt: skip

    def _note(self, values) -> str:
        notes = []
        low, high = TRAINED_NOISE
        if not low <= self.noise_sd <= high:
            notes.append(
                f"σ = {self.noise_sd} lies outside the noise the network was trained on "
                f"({low} to {high}): it extrapolates, compare it with the exact posterior."
            )
        if self.likelihood == "norm" and np.any(values < 0):
            notes.append(
                "A negative distance reading is possible: noise on a short distance. It "
                "says that x lies near the origin."
            )
        return " ".join(notes)

    @staticmethod
    def _window(rows, points, distances) -> tuple[float, float, float, float]:
        spread = 3.0 * np.sqrt(np.diagonal(rows.covariances, axis1=1, axis2=2))
        low = np.min(rows.means - spread, axis=0)
        high = np.max(rows.means + spread, axis=0)
        if points.size:
            low = np.minimum(low, points.min(axis=0) - 0.5)
            high = np.maximum(high, points.max(axis=0) + 0.5)
        if distances is not None and distances.size:  # show the largest circle whole
            reach = max(float(distances.max()), 0.0) + 0.5
            low, high = np.minimum(low, -reach), np.maximum(high, reach)
        return float(low[0]), float(high[0]), float(low[1]), float(high[1])


class _Reference(NamedTuple):
    """The exact answer as the scores need it."""

    log_density: object  # points (..., 2) -> log p(x | y)
    mean: jax.Array
    milliseconds: float
    draws: jax.Array  # (EXACT_DRAWS, 2) from the exact posterior
    log_density_of_draws: jax.Array
    log_evidence: float
    components: object  # count -> (weights, means) of a mixture posterior, or None


def _components(mixture, count) -> tuple[np.ndarray, np.ndarray]:
    weights = np.exp(np.asarray(mixture.log_weights[:count], np.float64))
    return weights / weights.sum(), np.asarray(mixture.means[:count], np.float64)


def _padding_evidence(data) -> jax.Array:
    """The log-density the padded (masked) observations add to log p(y): each is the
    observation y = 0 of a zero row, a constant N(0; 0, σ²)."""
    _, _, noise_sd, mask = data
    return jnp.sum(jnp.where(mask, 0.0, jax.scipy.stats.norm.logpdf(0.0, 0.0, noise_sd)))


def _binned(particles, weights, grid_x, grid_y) -> np.ndarray:
    """The weighted particles binned on the grid cells, as a density (a picture of a
    particle answer)."""
    step_x, step_y = grid_x[1] - grid_x[0], grid_y[1] - grid_y[0]
    edges_x = np.append(grid_x - 0.5 * step_x, grid_x[-1] + 0.5 * step_x)
    edges_y = np.append(grid_y - 0.5 * step_y, grid_y[-1] + 0.5 * step_y)
    histogram, _, _ = np.histogram2d(
        particles[:, 1], particles[:, 0], bins=(edges_y, edges_x), weights=weights
    )
    return (histogram / (step_x * step_y)).astype(np.float32)
