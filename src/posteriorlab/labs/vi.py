r"""The VI lab: one student's session fitting a variational family to a 2-D target.

A :class:`VILab` holds the target (banana, funnel, two-mode mixture, a Bayesian
linear-regression posterior or the noisy cone, each with its exact density and exact
:math:`\log p(x)`; or a 2-D NumPyro model given from a notebook with
:meth:`VILab.use_numpyro_model`, whose evidence is found by grid quadrature), the family
(mean-field, full-rank, mixture of two Gaussians, or one of two auxiliary-variable
families: a hierarchical Gaussian and a ring), the objective (ELBO, IWAE(K), Rényi-α,
and for the auxiliary families HVI, IWHVI(m) and DIWHVI(K, m)) written in the program
language of :mod:`posteriorlab.core.vi`, the gradient estimator at each sample site, the
learning rate, samples per step and seed.

Training streams: :meth:`VILab.advance` runs one jitted chunk of :data:`CHUNK_STEPS`
optimiser steps and publishes ``result`` (:class:`VIResult`): :math:`q` and the exact
posterior on a grid, the bound per step against the exact :math:`\log p(x)`,
:math:`\mathrm{KL}(q\,\|\,p)` by grid quadrature after every chunk, and the variance of
each estimator's gradient at the current parameters on common random numbers. A
dashboard calls :meth:`advance` from a periodic callback while ``running`` is true.

Any change of input starts the fit again from the family's standard start. The learning
rate and every continuous setting of the target (curvature, separation, noise) are
traced, so they never recompile; the target kind, family, objective, K and the
estimators compile once per combination.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import param

from posteriorlab.core import gmm
from posteriorlab.core.vi import exact, families, models, objectives, optimize, programs, variance
from posteriorlab.labs.scheduling import Recomputation

CHUNK_STEPS = 50
MAX_STEPS = 20_000
MAX_PARTICLES = 1000
GRID_SIZE = 90
CONE_GRID_SIZE = 160  # the cone's ring is ~0.03 wide: a finer grid resolves it
VARIANCE_SAMPLES = 256
REGRESSION_POINTS = 12

TARGET_LABELS = {
    "Banana": "banana",
    "Funnel": "funnel",
    "Two-mode mixture": "mixture",
    "Linear-regression posterior": "regression",
    "Noisy cone (a ring)": "cone",
}
FAMILY_LABELS = {
    "Mean-field Gaussian": "mean_field",
    "Full-rank Gaussian": "full_rank",
    "Mixture of two Gaussians": "mixture",
    "Hierarchical Gaussian (auxiliary u)": "hierarchical",
    "Ring (auxiliary angle)": "ring",
}
AUXILIARY_FAMILIES = ("hierarchical", "ring")
OBJECTIVE_LABELS = {
    "ELBO": "elbo",
    "IWAE (K samples)": "iwae",
    "Rényi-α (K samples)": "renyi",
    "HVI (auxiliary families)": "hvi",
    "IWHVI (m inner samples)": "iwhvi",
    "DIWHVI (K outer, m inner)": "diwhvi",
}
OBJECTIVE_NAMES = {kind: label for label, kind in OBJECTIVE_LABELS.items()}
HIERARCHICAL_OBJECTIVES = ("hvi", "iwhvi", "diwhvi")
ESTIMATOR_LABELS = {
    "Reparameterisation": "reparam",
    "Score function (REINFORCE)": "score",
    "Score function with baseline": "baseline",
}
ESTIMATOR_NAMES = {kind: label for label, kind in ESTIMATOR_LABELS.items()}
COMPONENT_ESTIMATOR_LABELS = {"Score function": "score", "Enumeration (exact sum)": "enum"}


class NumPyroTarget(NamedTuple):
    """A NumPyro model given from a notebook (see :meth:`VILab.use_numpyro_model`)."""

    log_joint: Callable  # a pytree over the flat unconstrained latent vector
    name: str
    dimension: int
    window: tuple[float, float, float, float]


class VIResult(NamedTuple):
    """The fit so far, as numpy arrays."""

    grid_x: np.ndarray  # (G,)
    grid_y: np.ndarray  # (G,)
    target_density: np.ndarray  # (G, G) the exact posterior, rows = y
    q_density: np.ndarray  # (G, G)
    steps: np.ndarray  # (n,) step index of each recorded bound
    bounds: np.ndarray  # (n,) the objective's value (a lower bound on log p(x)) per step
    kl_steps: np.ndarray  # (c,) step count after each chunk
    kl: np.ndarray  # (c,) KL(q ‖ p) on the grid after each chunk
    exact_log_evidence: float
    estimator_labels: tuple[str, ...]
    gradient_variance: np.ndarray  # (E,) total variance of each estimator's gradient
    gradient_snr: np.ndarray  # (E,) mean |mean| / sd over the parameters
    chosen_estimator: str
    q_mean: np.ndarray  # (2,)
    exact_mean: np.ndarray  # (2,)
    seconds_per_step: float
    evidence_label: str = "exact log p(x)"  # or "log p(x) by grid quadrature"


# --------------------------------------------------------------------------------------
# Targets and families (traced values; kinds static)
# --------------------------------------------------------------------------------------


def make_target(
    kind: str, *, curvature=1.0, separation=1.5, noise_scale=0.5, observation=5.0,
    dtype=jnp.float32,
):  # fmt: skip
    """The target of ``kind`` (a value of :data:`TARGET_LABELS`) as a pytree callable,
    its continuous settings traced: banana curvature, mode separation, regression noise
    σ and the cone's observation (the lab's defaults)."""
    curvature, separation, noise_scale, observation = (
        jnp.asarray(v, dtype) for v in (curvature, separation, noise_scale, observation)
    )
    if kind == "cone":
        return exact.NoisyCone(observation, jnp.asarray(10.0, dtype))
    if kind == "banana":
        return models.Banana(curvature, jnp.asarray(1.0, dtype))
    if kind == "funnel":
        return models.Funnel(jnp.asarray(1.5, dtype))
    if kind == "mixture":
        means = separation * jnp.asarray([[-1.0, 0.0], [1.0, 0.0]], dtype) + jnp.asarray(
            [[0.0, 0.0], [0.0, 0.5]], dtype
        )
        covariances = jnp.asarray([[[0.5, 0.3], [0.3, 0.5]], [[0.4, -0.2], [-0.2, 0.6]]], dtype)
        chol = jnp.linalg.cholesky(covariances)
        log_weights = jnp.log(jnp.asarray([0.6, 0.4], dtype))
        return exact.MixtureTarget(gmm.GaussianMixture(log_weights, means, chol))
    inputs = jnp.linspace(0.0, 2.0, REGRESSION_POINTS, dtype=dtype)
    design = jnp.stack([jnp.ones_like(inputs), inputs], axis=1)
    observations = 0.5 - inputs + 0.4 * jnp.sin(3.0 * inputs)  # fixed data
    prior = gmm.GaussianMixture(
        jnp.zeros((1,), dtype), jnp.zeros((1, 2), dtype), jnp.eye(2, dtype=dtype)[None]
    )
    return exact.LinearRegression(design, observations, noise_scale, prior)


@jax.jit
def exact_log_density_and_evidence(target, points):
    """The exact posterior log-density at ``points`` and log p(x) (0 for the targets that
    are normalised densities already)."""
    log_evidence = target.log_evidence() if hasattr(target, "log_evidence") else 0.0
    log_evidence = jnp.asarray(log_evidence, points.dtype)
    return jax.vmap(jax.vmap(target))(points) - log_evidence, log_evidence


def initial_family(kind: str, dtype):
    """The standard start of each family (the mixture's two means set apart)."""
    if kind == "mean_field":
        return families.MeanFieldGaussian(jnp.zeros(2, dtype), jnp.zeros(2, dtype))
    if kind == "full_rank":
        return families.FullRankGaussian.standard(2)
    if kind == "hierarchical":
        return families.HierarchicalGaussian.standard(2, 1)
    if kind == "ring":
        return families.RingGaussian.create(radius=1.0, scale=0.5)
    return families.GaussianMixture(
        jnp.zeros(2, dtype),
        jnp.asarray([[-1.0, 0.3], [1.0, -0.3]], dtype),
        jnp.zeros((2, 2), dtype),
    )


@functools.cache
def objective_program(kind: str, num_particles: int, num_inner: int = 1):
    """The objective as a program ``(t, family, log_joint, *args) -> value``; cached so
    that the same choice is the same static argument (no recompilation)."""
    programs_by_kind = {
        "elbo": lambda: objectives.elbo,
        "iwae": lambda: functools.partial(objectives.iwae, num_particles=num_particles),
        "renyi": lambda: functools.partial(objectives.renyi, num_particles=num_particles),
        "hvi": lambda: objectives.hvi,
        "iwhvi": lambda: functools.partial(objectives.iwhvi, num_inner=num_inner),
        "diwhvi": lambda: functools.partial(
            objectives.diwhvi, num_outer=num_particles, num_inner=num_inner
        ),
    }
    return programs_by_kind[kind]()


def site_estimators(estimator: str, component_estimator: str, baseline, family_kind: str):
    """The per-site estimator mapping: the point site ``z`` and, for the mixture family,
    the component site ``z_component``."""
    point = {
        "reparam": programs.Reparam(),
        "score": programs.Score(jnp.zeros_like(baseline)),
        "baseline": programs.Score(baseline),
    }[estimator]
    chosen = {"z": point}
    if family_kind == "mixture":
        chosen["z_component"] = (
            programs.Enumerate() if component_estimator == "enum" else programs.Score(baseline)
        )
    return chosen


@jax.jit
def grid_normalised_log_density(log_joint, points, cell_area):
    """The posterior's log-density and log p(x) by quadrature of p(x, z) over the grid
    (for a 2-D target without a closed form; exact up to the grid's resolution and
    the mass outside it)."""
    log_joint_values = jax.vmap(jax.vmap(log_joint))(points)
    log_evidence = jax.scipy.special.logsumexp(log_joint_values) + jnp.log(cell_area)
    return log_joint_values - log_evidence, log_evidence


@jax.jit
def snapshot(family, log_target, points, cell_area):
    """q on the grid and KL(q ‖ p) = ∫ q (log q − log p) by quadrature over the grid."""
    log_q = jax.vmap(jax.vmap(family.log_prob))(points)
    q = jnp.exp(log_q)
    kl = jnp.sum(jnp.where(q > 0, q * (log_q - log_target), 0.0)) * cell_area
    return q, kl


class VILab(param.Parameterized):
    """State and results of one VI-lab session (see the module docstring)."""

    target = param.Selector(objects=TARGET_LABELS, default="banana", label="Target")
    curvature = param.Number(
        1.0, softbounds=(0.0, 2.0), step=0.05, label="Banana curvature b",
        doc="z₂ | z₁ ~ N(b (z₁² − 1), 1): b = 0 is a Gaussian.",
    )  # fmt: skip
    separation = param.Number(
        1.5, softbounds=(0.0, 4.0), step=0.1, label="Mode separation",
        doc="The two modes sit at ∓ this value on the first axis.",
    )  # fmt: skip
    noise_scale = param.Number(
        0.5, softbounds=(0.05, 3.0), step=0.05, label="Regression noise σ",
        doc="Observation noise of the regression; the posterior narrows as σ falls.",
    )  # fmt: skip
    cone_observation = param.Number(
        5.0, softbounds=(0.5, 20.0), step=0.5, label="Observed o = x² + y² + noise",
        doc="The cone's observation; the posterior is a ring of radius about √o.",
    )  # fmt: skip
    family = param.Selector(objects=FAMILY_LABELS, default="mean_field", label="Family q")
    objective = param.Selector(objects=OBJECTIVE_LABELS, default="elbo", label="Objective")
    num_particles = param.Integer(
        5, label="Samples K (IWAE, Rényi, DIWHVI outer)",
        doc="Importance samples inside the bound; K = 1 is the ELBO.",
    )  # fmt: skip
    num_inner = param.Integer(
        5, label="Inner samples m (IWHVI, DIWHVI)",
        doc="Auxiliary draws estimating log q(z); m = 1 is HVI.",
    )  # fmt: skip
    alpha = param.Number(0.5, softbounds=(0.0, 1.0), step=0.05, label="Rényi α")
    estimator = param.Selector(
        objects=ESTIMATOR_LABELS, default="reparam", label="Gradient estimator at z",
        doc="How the gradient passes through the draw z ~ q.",
    )  # fmt: skip
    component_estimator = param.Selector(
        objects=COMPONENT_ESTIMATOR_LABELS, default="score", label="Estimator at the component"
    )
    learning_rate = param.Number(
        0.02,
        softbounds=(0.001, 0.3),
        step=0.001,
        label="Learning rate (Adam)",
        doc="Adam's step size: too large and q jitters around the optimum (watch the KL).",
    )
    samples_per_step = param.Selector(
        objects=[1, 4, 16, 64], default=4, label="Samples per step",
        doc="Independent objective draws averaged in each gradient step.",
    )  # fmt: skip
    seed = param.Integer(0, bounds=(0, None), label="Seed")

    running = param.Boolean(False, label="Run / pause", doc="Train chunk after chunk.")
    step = param.Event(label=f"Step ({CHUNK_STEPS} steps)")
    reset = param.Event(label="Reset")

    result = param.ClassSelector(class_=VIResult, allow_None=True, constant=True)
    error = param.String("", constant=True, doc="What is wrong with the current input.")

    INPUTS = (
        "target", "curvature", "separation", "noise_scale", "cone_observation", "family",
        "objective", "num_particles", "num_inner", "alpha", "estimator",
        "component_estimator", "samples_per_step", "seed",
    )  # fmt: skip

    def __init__(self, compute: bool = True, **params):
        super().__init__(**params)
        self._recomputation = Recomputation()
        self._fit = None
        self._numpyro_target = None
        if compute:
            self.restart()
        self.param.watch(lambda *_: self.restart(), list(self.INPUTS) + ["reset"])
        self.param.watch(lambda *_: self.advance(), ["step"])
        self.param.watch(lambda *_: self._check_learning_rate(), ["learning_rate"])

    # ----------------------------------------------------------------- validation
    def problems(self) -> list[str]:
        """Everything wrong with the input, each with what is allowed."""
        found = []
        for name in ("curvature", "separation", "noise_scale", "cone_observation", "alpha",
                     "learning_rate"):  # fmt: skip
            value = getattr(self, name)
            if value is None or not math.isfinite(value):
                found.append(f"{self.param[name].label} = {value} is not a number.")
        if found:
            return found
        if self.learning_rate <= 0 or self.learning_rate > 10:
            found.append(
                f"Learning rate = {self.learning_rate} must lie in (0, 10]; try 0.01 to 0.1."
            )
        if self.noise_scale <= 0:
            found.append(f"Regression noise σ = {self.noise_scale} must be positive.")
        if self.separation < 0:
            found.append(f"Mode separation = {self.separation} must be ≥ 0.")
        if self.cone_observation <= 0:
            found.append(
                f"Observed o = {self.cone_observation} must be positive: it is a noisy "
                "squared radius. Try 5 (the paper's value)."
            )
        found += self._count_problems() + self._family_problems()
        return found

    def _count_problems(self) -> list[str]:
        found = []
        counts = [("num_particles", "Samples K", ("iwae", "renyi", "diwhvi")),
                  ("num_inner", "Inner samples m", ("iwhvi", "diwhvi"))]  # fmt: skip
        for name, label, objectives_using in counts:
            value = getattr(self, name)
            if self.objective in objectives_using and not (
                isinstance(value, int) and 1 <= value <= MAX_PARTICLES
            ):
                found.append(
                    f"{label} = {value} is not allowed: use a whole number from 1 to "
                    f"{MAX_PARTICLES}."
                )
        return found

    def _family_problems(self) -> list[str]:
        found = []
        if self.objective in HIERARCHICAL_OBJECTIVES and self.family not in AUXILIARY_FAMILIES:
            found.append(
                f"{OBJECTIVE_NAMES[self.objective]} estimates log q(z) by "
                "importance sampling over an auxiliary variable, which this family has not: "
                "choose the hierarchical Gaussian or the ring family, or the ELBO or IWAE."
            )
        if self.target == "numpyro" and self._numpyro_target is not None:
            size = self._numpyro_target.dimension
            if size != 2:
                found.append(
                    f"The NumPyro model has {size} unconstrained latent dimension"
                    f"{'s' if size != 1 else ''}, but the lab's families and pictures are "
                    "2-D: give a model with two scalar latent sites (or one of size 2)."
                )
        if (
            self.family == "mixture"
            and self.component_estimator == "enum"
            and self.objective != "elbo"
        ):
            found.append(
                "Enumeration sums over one component choice; with K samples there are K "
                "choices (2ᴷ terms). Use the ELBO, or the score function at the component."
            )
        return found

    def _check_learning_rate(self) -> None:
        with param.edit_constant(self):
            self.error = " ".join(self.problems())

    # ----------------------------------------------------------------- training
    # ----------------------------------------------------------------- NumPyro models
    def use_numpyro_model(
        self, model, *args, name: str = "NumPyro model", window=(-4.0, 4.0, -4.0, 4.0),
        **kwargs,
    ) -> None:  # fmt: skip
        """Fit a NumPyro model of two latent dimensions (its data in ``args``/``kwargs``).

        The lab works on the model's unconstrained latent vector (a positive site as its
        logarithm, see :func:`~posteriorlab.core.vi.models.numpyro_log_joint`); its
        "exact" log p(x) and posterior are found by quadrature over the grid spanning
        ``window`` = (min₁, max₁, min₂, max₂), so the window must hold the posterior's mass.
        The target menu gains the model's name and the lab switches to it.
        """
        log_joint, _ = models.numpyro_log_joint(model, *args, **kwargs)
        self._numpyro_target = NumPyroTarget(
            log_joint, name, models.numpyro_latent_size(model, *args, **kwargs),
            tuple(float(edge) for edge in window),
        )  # fmt: skip
        self.param.target.objects = {**TARGET_LABELS, f"NumPyro: {name}": "numpyro"}
        if self.target == "numpyro":
            self.restart()
        else:
            self.target = "numpyro"

    def _make_target(self, dtype):
        if self.target == "numpyro":
            return self._numpyro_target.log_joint
        return make_target(
            self.target, curvature=self.curvature, separation=self.separation,
            noise_scale=self.noise_scale, observation=self.cone_observation, dtype=dtype,
        )  # fmt: skip

    def _setup(self):
        dtype = jnp.result_type(float)
        target = self._make_target(dtype)
        window = self._window(target)
        size = CONE_GRID_SIZE if self.target == "cone" else GRID_SIZE
        grid_x = np.linspace(window[0], window[1], size)
        grid_y = np.linspace(window[2], window[3], size)
        points = jnp.stack(jnp.meshgrid(jnp.asarray(grid_x, dtype), jnp.asarray(grid_y, dtype)), -1)
        cell = (grid_x[1] - grid_x[0]) * (grid_y[1] - grid_y[0])
        if self.target == "numpyro":
            log_density, log_evidence = grid_normalised_log_density(target, points, cell)
        else:
            log_density, log_evidence = exact_log_density_and_evidence(target, points)
        density = jnp.exp(log_density)
        num_particles = 1 if self.objective in ("elbo", "hvi", "iwhvi") else self.num_particles
        return {
            "target": target,
            "program": objective_program(self.objective, num_particles, self.num_inner),
            "args": (jnp.asarray(self.alpha, dtype),) if self.objective == "renyi" else (),
            "grid": (grid_x, grid_y, points, jnp.asarray(cell, dtype)),
            "density": density,
            "log_density": log_density,
            "log_evidence": float(log_evidence),
            "exact_mean": self._exact_mean(target, density, grid_x, grid_y, cell),
            "state": optimize.init(initial_family(self.family, dtype)),
            "bounds": [],
            "kl": [],
            "kl_steps": [],
            "chunks": 0,
        }

    def _window(self, target) -> tuple[float, float, float, float]:
        if self.target == "numpyro":
            return self._numpyro_target.window
        if self.target == "cone":
            half = math.sqrt(self.cone_observation) + 1.0
            return -half, half, -half, half
        if self.target == "banana":
            b = abs(self.curvature)
            return -3.5, 3.5, -3.0 - b, 3.0 + 8.0 * b
        if self.target == "funnel":
            return -5.0, 5.0, -8.0, 8.0
        if self.target == "mixture":
            s = abs(self.separation)
            return -s - 3.0, s + 3.0, -3.0, 3.5
        posterior = target.posterior()
        centre = np.asarray(gmm.mean(posterior))
        spread = 5.0 * np.sqrt(np.diag(np.asarray(gmm.covariance(posterior))))
        return (
            centre[0] - spread[0],
            centre[0] + spread[0],
            centre[1] - spread[1],
            centre[1] + spread[1],
        )

    @staticmethod
    def _exact_mean(target, density, grid_x, grid_y, cell):
        if isinstance(target, exact.LinearRegression | exact.MixtureTarget):
            return np.asarray(gmm.mean(target.posterior()))
        weights = np.asarray(density) * cell
        xs, ys = np.meshgrid(grid_x, grid_y)
        return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()

    def restart(self) -> None:
        """Start the fit again from the family's standard start (after any input change).

        Restarts and chunks never run at once (a served page takes its changes and its
        fit's ticks on several threads): :mod:`posteriorlab.labs.scheduling`."""
        self._recomputation.request(self._restart)

    def _restart(self) -> None:
        found = self.problems()
        if found:
            with param.edit_constant(self):
                self.error = " ".join(found)
            return
        self._fit = self._setup()
        with param.edit_constant(self):
            self.error = ""
        self._publish(seconds_per_step=float("nan"))

    def _baseline(self):
        bounds = self._fit["bounds"]
        last = float(np.mean(bounds[-1][-10:])) if bounds else 0.0
        return jnp.asarray(last, jnp.result_type(float))

    def _estimators(self, estimator=None, baseline=None):
        """The per-site estimators; the baseline defaults to the latest bound."""
        baseline = self._baseline() if baseline is None else baseline
        return site_estimators(estimator or self.estimator, self.component_estimator,
                               baseline, self.family)  # fmt: skip

    def advance(self) -> None:
        """Run one chunk of :data:`CHUNK_STEPS` steps and publish the new fit."""
        self._recomputation.request(self._advance, supersedes=False)

    def _advance(self) -> None:
        found = self.problems()
        if found or self._fit is None:
            with param.edit_constant(self):
                self.error = " ".join(found) or self.error
                self.running = False
            return
        fit = self._fit
        if fit["chunks"] * CHUNK_STEPS >= MAX_STEPS:
            with param.edit_constant(self):
                self.running = False
            return
        start = time.perf_counter()
        key = jax.random.fold_in(jax.random.key(self.seed), fit["chunks"])
        state, info = optimize.run_chunk(
            key, fit["state"], fit["target"], fit["program"], fit["args"],
            learning_rate=self.learning_rate, num_steps=CHUNK_STEPS,
            num_samples=self.samples_per_step, estimators=self._estimators(),
        )  # fmt: skip
        losses = np.asarray(info.loss)
        if not np.all(np.isfinite(losses)) or not all(
            bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(state.params)
        ):
            with param.edit_constant(self):
                self.error = (
                    f"The fit diverged at learning rate {self.learning_rate} (the bound "
                    "became non-finite); press Reset and use a smaller learning rate, more "
                    "samples per step or the reparameterisation estimator."
                )
                self.running = False
            return
        fit.update(state=state, chunks=fit["chunks"] + 1)
        fit["bounds"].append(-losses)
        self._publish(seconds_per_step=(time.perf_counter() - start) / CHUNK_STEPS)

    def _gradient_statistics(self, family) -> dict:
        """Each estimator's gradient moments at ``family`` on the same random numbers;
        the baseline is the current bound, estimated on those draws."""
        fit = self._fit

        def statistics(estimators):
            return variance.gradient_statistics(
                jax.random.key(1_000 + self.seed), fit["program"], family,
                (fit["target"], *fit["args"]), estimators=estimators,
                num_samples=VARIANCE_SAMPLES,
            )  # fmt: skip

        reparam = statistics(self._estimators("reparam"))
        current_bound = reparam.value_mean
        return {
            "reparam": reparam,
            "score": statistics(self._estimators("score", current_bound)),
            "baseline": statistics(self._estimators("baseline", current_bound)),
        }

    def _publish(self, seconds_per_step: float) -> None:
        fit = self._fit
        family = fit["state"].params
        grid_x, grid_y, points, cell = fit["grid"]
        q, kl = snapshot(family, fit["log_density"], points, cell)
        fit["kl"].append(float(kl))
        fit["kl_steps"].append(fit["chunks"] * CHUNK_STEPS)
        labels = tuple(ESTIMATOR_LABELS.values())
        statistics = self._gradient_statistics(family)
        bounds = np.concatenate(fit["bounds"]) if fit["bounds"] else np.zeros(0)
        q_np = np.asarray(q)
        xs, ys = np.meshgrid(grid_x, grid_y)
        mass = q_np.sum()
        with param.edit_constant(self):
            self.result = VIResult(
                grid_x=grid_x,
                grid_y=grid_y,
                target_density=np.asarray(fit["density"], np.float32),
                q_density=q_np.astype(np.float32),
                steps=np.arange(1, bounds.size + 1),
                bounds=bounds,
                kl_steps=np.asarray(fit["kl_steps"]),
                kl=np.asarray(fit["kl"]),
                exact_log_evidence=fit["log_evidence"],
                estimator_labels=tuple(ESTIMATOR_NAMES[kind] for kind in labels),
                gradient_variance=np.array(
                    [float(jnp.sum(statistics[kind].variance)) for kind in labels]
                ),
                gradient_snr=np.array([float(jnp.mean(statistics[kind].snr)) for kind in labels]),
                chosen_estimator=ESTIMATOR_NAMES[self.estimator],
                q_mean=np.array([(q_np * xs).sum(), (q_np * ys).sum()]) / max(mass, 1e-300),
                exact_mean=fit["exact_mean"],
                seconds_per_step=seconds_per_step,
                evidence_label=(
                    "log p(x) by grid quadrature" if self.target == "numpyro" else "exact log p(x)"
                ),
            )
