"""The paths lab: one student's session with Gaussian probability paths.

A :class:`PathsLab` holds what a student can change -- the target mixture (typed, picked
from a preset or clicked onto the plot), the source's width, the noise schedule and its
parameters, the integrator, the step count, the SDE noise level, the number of
trajectories, the seed and the time shown -- and recomputes, with no training, because
every field of a path to a Gaussian mixture is closed-form:

* ``result`` (:class:`PathsResult`): trajectories from noise to data, the density
  :math:`p_t` and velocity field at the chosen time, the schedule's curves, and how good
  the samples are against the exact target;
* ``comparison`` (:class:`ComparisonResult`): every schedule side by side -- kinetic
  energy, and sample error as a function of the step budget.

Continuous inputs are traced arrays: the mixture is padded to a power of two of
components (unused ones get weight zero; :func:`padded_size`) and the schedule is a
:class:`~posteriorlab.core.paths.schedules.Switchable` whose kind is a traced index, so
editing the mixture, switching schedule or moving ε, β or the time never recompiles.
Only the number of steps and of trajectories (array shapes), the padded component count
(1, 2, 4 or 8) and the integrator (program structure) compile once per value.

Bad input never raises out of the lab: :meth:`PathsLab.problems` lists what is wrong
with the fix, ``error`` shows it, and the last good result stays.
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
from posteriorlab.core.paths import fields, flow_matching, integrators, kinetic, schedules
from posteriorlab.labs import mixture_rows
from posteriorlab.labs.mixture_rows import ComponentRows, format_component
from posteriorlab.labs.scheduling import Recomputation

MAX_COMPONENTS = 8
MAX_STEPS = 1000
MAX_TRAJECTORY_POINTS = 4_000_000  # trajectories × (steps + 1): about 32 MB of float32 pairs
DISPLAYED_TRAJECTORIES = 150
ANIMATED_TRAJECTORY_POINTS = 250_000  # trajectories × (steps + 1) animated: 8 B each, 2 MB
GRID_SIZE = 90
ARROW_GRID_SIZE = 17
REFERENCE_SAMPLES = 1000
COMPARED_STARTS = 400
STEP_BUDGETS = (4, 8, 16, 32, 64, 128)  # field evaluations per sample
# Quadrature for the live kinetic energies: 12 Gauss-Hermite nodes per axis and 48 times
# agree with the library's defaults (48 nodes, 128 times) to 5 digits on the presets, at a
# fifteenth of the cost.
LIVE_QUADRATURE = dict(num_nodes=12, num_times=48)
TRAINING_CHUNK = 200  # Adam steps per press of "Train"
TRAINING_BATCH = 256
TRAINING_EVALUATION = 4096  # fixed path draws on which the network is compared with u_t

SCHEDULE_LABELS = {
    "Cond-OT (straight lines)": "condot",
    "Cosine": "cosine",
    "Polynomial tⁿ": "polynomial",
    "Linear VP": "linear_vp",
    "VP (diffusion)": "vp",
    "VE (variance exploding)": "ve",
    "Kinetic-optimal for this mixture": "tabulated",
}
SCHEDULE_NAMES = {kind: label for label, kind in SCHEDULE_LABELS.items()}
INTEGRATOR_LABELS = {
    "Euler (ODE)": "euler",
    "Heun (ODE)": "heun",
    "Runge–Kutta 4 (ODE)": "rk4",
    "Euler–Maruyama (SDE)": "sde",
}
NOISE_SHAPE_LABELS = {"Constant ε": "constant", "Fading, ε·σ_t²": "noise"}

PRESETS = {
    "Three blobs": "0.5, -2, 0, 0.5\n0.3, 2, 1, 0.7071, 0.5477, 0.5164\n0.2, 0, -2, 0.3162",
    "Eight on a ring": "\n".join(
        f"1, {4 * math.cos(2 * math.pi * k / 8):.4f}, {4 * math.sin(2 * math.pi * k / 8):.4f}, 0.3"
        for k in range(8)
    ),
    "Two moons": "\n".join(
        [f"1, {math.cos(a):.3f}, {math.sin(a) - 0.25:.3f}, 0.25" for a in (0.3, 1.57, 2.84)]
        + [f"1, {1 - math.cos(a):.3f}, {0.25 - math.sin(a):.3f}, 0.25" for a in (0.3, 1.57, 2.84)]
    ),
    "One Gaussian": "1, 1, 0.5, 0.8, 0.5, 0.6",
}


class PathsResult(NamedTuple):
    """One set of trajectories and the fields at the chosen time, as numpy arrays."""

    times: np.ndarray  # (S + 1,)
    trajectories: np.ndarray  # (S + 1, M, 2) float32, M ≤ DISPLAYED_TRAJECTORIES
    animated_trajectories: np.ndarray  # (S + 1, A, 2) float32, A: animated_trajectory_count
    endpoints: np.ndarray  # (n, 2) float32, every trajectory's end
    starts: np.ndarray  # (n, 2) float32
    target_samples: np.ndarray  # (REFERENCE_SAMPLES, 2) exact draws from the target
    grid_x: np.ndarray  # (G,)
    grid_y: np.ndarray  # (G,)
    density: np.ndarray  # (G, G) p_t on the grid, rows = y
    target_density: np.ndarray  # (G, G) p_1 on the grid
    arrows: np.ndarray  # (A, 4) x, y, angle, magnitude of u_t
    time: float
    curve_times: np.ndarray  # (C,)
    alpha: np.ndarray  # (C,)
    sigma: np.ndarray  # (C,)
    kinetic_energy: float
    energy_distance: float  # between the endpoints and exact target draws
    reference_energy_distance: float  # between two exact draws of the same size (noise floor)
    mean_log_prob: float  # average log p_1 at the endpoints
    exact_mean_log_prob: float  # E_{p_1}[log p_1]
    schedule: str
    integrator: str
    num_steps: int
    seconds: float


class ComparisonResult(NamedTuple):
    """Every schedule under the same mixture, integrator and starts."""

    schedules: tuple[str, ...]  # labels
    kinetic_energy: np.ndarray  # (kinds,)
    budgets: np.ndarray  # (B,) field evaluations per sample
    endpoint_error: np.ndarray  # (kinds, B) mean |x̂_1 - x_1| against a fine RK4 solve
    integrator: str
    seconds: float


class TrainingResult(NamedTuple):
    """A flow-matching network's progress, and its field against the exact one."""

    steps: np.ndarray  # (n,) step count after each recorded step
    losses: np.ndarray  # (n,) training loss per step
    evaluations: np.ndarray  # (c,) step count at each evaluation
    evaluated_loss: np.ndarray  # (c,) loss on a fixed evaluation set
    exact_field_loss: np.ndarray  # (c,) the floor: the exact field's loss on the same set
    velocity_error: np.ndarray  # (c,) E|v_θ - u|² on the same set
    arrow_points: np.ndarray  # (A, 2)
    learned_arrows: np.ndarray  # (A, 2) v_θ(t, x) at the shown time
    exact_arrows: np.ndarray  # (A, 2) u_t(x)
    time: float


# --------------------------------------------------------------------------------------
# Input parsing
# --------------------------------------------------------------------------------------


class _TrainingLog(NamedTuple):
    state: flow_matching.TrainingState
    losses: list  # one array of per-step losses per chunk
    evaluations: list  # one LossDecomposition per chunk
    evaluation_steps: list


class PerTarget(NamedTuple):
    """Results that depend on the target mixture and source only."""

    table: schedules.Tabulated  # the kinetic-optimal schedule
    reference: TargetReference


def parse_components(text: str) -> ComponentRows:
    """The target's rows (see :func:`~posteriorlab.labs.mixture_rows.parse_components`);
    relative weights, normalised, at most :data:`MAX_COMPONENTS`."""
    return mixture_rows.parse_components(text, max_components=MAX_COMPONENTS)


def padded_size(count: int) -> int:
    """The component count a mixture of ``count`` rows is padded to: the next power of
    two (1, 2, 4 or 8), so that a few shapes cover every target."""
    return 1 << max(count - 1, 0).bit_length()


def padded_mixture(rows: ComponentRows) -> gmm.GaussianMixture:
    """The mixture padded to :func:`padded_size` components; the extra ones weigh zero.

    A fixed number of components is a fixed shape, so adding a component by clicking
    does not recompile anything until the count passes a power of two (each field
    evaluation costs in proportion to the padded count, so padding everything to
    :data:`MAX_COMPONENTS` would slow the common small targets threefold). Zero-weight
    components change no density or field.
    """
    count = rows.weights.shape[0]
    padding = padded_size(count) - count
    with np.errstate(divide="ignore"):
        log_weights = np.log(np.concatenate([rows.weights, np.zeros(padding)]))
    means = np.concatenate([rows.means, np.zeros((padding, 2))])
    covariances = np.concatenate([rows.covariances, np.broadcast_to(np.eye(2), (padding, 2, 2))])
    dtype = jnp.result_type(float)
    return gmm.GaussianMixture(
        jnp.asarray(log_weights, dtype),
        jnp.asarray(means, dtype),
        jnp.linalg.cholesky(jnp.asarray(covariances, dtype)),
    )


# --------------------------------------------------------------------------------------
# Compiled computations (traced values; shapes and structure static)
# --------------------------------------------------------------------------------------


def isotropic_source(scale, dtype) -> gmm.GaussianMixture:
    """The source :math:`\\mathcal{N}(0, s^2 I_2)` as a one-component mixture."""
    return gmm.GaussianMixture(
        jnp.zeros((1,), dtype), jnp.zeros((1, 2), dtype), scale * jnp.eye(2, dtype=dtype)[None]
    )


def shrink(target: gmm.GaussianMixture, scale) -> gmm.GaussianMixture:
    """The target divided by ``scale`` (for a source N(0, s²I) the path of x_1 equals s
    times the path of x_1/s from N(0, I), so schedules computed for the standard source
    apply to x_1/s)."""
    return target._replace(means=target.means / scale, chol_covs=target.chol_covs / scale)


def make_schedule(kind_index, settings, table) -> schedules.Switchable:
    exponent, beta_min, beta_max, sigma_min, sigma_max = settings
    return schedules.Switchable(
        kind_index,
        schedules.Polynomial(exponent),
        schedules.VP(beta_min, beta_max),
        schedules.VE(sigma_min, sigma_max),
        table,
    )


@jax.jit
def optimal_schedule_table(target, source_scale) -> schedules.Tabulated:
    """The kinetic-optimal schedule of this mixture (for the standard source, rescaled)."""
    return kinetic.kinetic_optimal_schedule(shrink(target, source_scale), num_nodes=12)


def _path_fields(schedule, target, source):
    def velocity(t, x):
        return fields.velocity(fields.marginal(schedule, target, t, source), x)

    def velocity_and_score(t, x):
        return fields.velocity_and_score(fields.marginal(schedule, target, t, source), x)

    return velocity, velocity_and_score


def animated_trajectory_count(num_trajectories: int, num_steps: int) -> int:
    """How many trajectories the animation plays: all of them while trajectories ×
    (steps + 1) stays within :data:`ANIMATED_TRAJECTORY_POINTS`, fewer for long runs."""
    return max(1, min(num_trajectories, ANIMATED_TRAJECTORY_POINTS // (num_steps + 1)))


@functools.partial(
    jax.jit, static_argnames=("integrator", "num_steps", "num_trajectories", "displayed")
)
def simulate(
    key, schedule, target, source_scale, noise_level, fading, *, integrator, num_steps,
    num_trajectories, displayed,
):  # fmt: skip
    """Trajectories from the exact start :math:`p_0` of the path to the end. Returns
    (the first ``displayed`` trajectories, all starts, all ends)."""
    key_start, key_path = jax.random.split(key)
    source = isotropic_source(source_scale, target.means.dtype)
    start = fields.start_distribution(schedule, target, source)
    x0 = gmm.sample(key_start, start, num_trajectories)
    times = integrators.uniform_times(num_steps)
    velocity, velocity_and_score = _path_fields(schedule, target, source)
    if integrator == "sde":

        def diffusion(t):
            shape = fading * schedules.coefficients(schedule, t).sigma ** 2 + (1.0 - fading)
            return noise_level * shape

        path = integrators.euler_maruyama(key_path, velocity_and_score, diffusion, x0, times)
    else:
        path = integrators.ODE_SOLVERS[integrator](velocity, x0, times)
    return path[:, :displayed], x0, path[-1]


class TargetReference(NamedTuple):
    """What samples are judged against; depends on the target only, so it is cached."""

    draws: jax.Array  # (REFERENCE_SAMPLES, 2) exact target draws
    energy_distance_floor: jax.Array  # between two independent sets of exact draws
    exact_mean_log_prob: jax.Array  # E_{p_1}[log p_1]


@jax.jit
def target_reference(target) -> TargetReference:
    r"""Exact draws (from a fixed key), the energy distance two exact samples of this size
    show by chance, and the exact :math:`\mathbb{E}_{p_1}[\log p_1]`."""
    key_draws, key_spare = jax.random.split(jax.random.key(0))
    draws = gmm.sample(key_draws, target, REFERENCE_SAMPLES)
    spare = gmm.sample(key_spare, target, REFERENCE_SAMPLES)
    return TargetReference(
        draws,
        kinetic.energy_distance(spare, draws, unbiased=False),
        kinetic.target_mean_log_prob(target, num_nodes=LIVE_QUADRATURE["num_nodes"]),
    )


@jax.jit
def sample_quality(endpoints, reference: TargetReference, target):
    """Energy distance of the endpoints to the exact draws, and mean log p_1 at them."""
    return (
        kinetic.energy_distance(endpoints[:REFERENCE_SAMPLES], reference.draws, unbiased=False),
        kinetic.mean_log_prob(endpoints, target),
    )


@jax.jit
def snapshot(schedule, target, source_scale, t, grid_x, grid_y, arrow_x, arrow_y):
    """:math:`p_t` and :math:`p_1` on the grid and :math:`u_t` at the arrow points."""
    source = isotropic_source(source_scale, target.means.dtype)
    points = jnp.stack(jnp.meshgrid(grid_x, grid_y), axis=-1)
    at_t = fields.marginal(schedule, target, t, source)
    arrow_points = jnp.stack(jnp.meshgrid(arrow_x, arrow_y), axis=-1).reshape(-1, 2)
    arrows = fields.velocity(at_t, arrow_points)
    return (
        jnp.exp(fields.log_prob(at_t, points)),
        jnp.exp(gmm.log_prob(target, points)),
        arrow_points,
        arrows,
    )


@jax.jit
def schedule_summary(schedule, target, source_scale, curve_times):
    """α_t, σ_t on a grid and the path's kinetic energy (for the source N(0, s² I),
    KE = s² KE(x_1 / s))."""
    c = jax.vmap(lambda t: schedules.coefficients(schedule, t))(curve_times)
    energy = source_scale**2 * kinetic.kinetic_energy(
        schedule, shrink(target, source_scale), **LIVE_QUADRATURE
    )
    return c.alpha, c.sigma, energy


@functools.partial(jax.jit, static_argnames=("integrator",))
def compare_schedules(settings, table, target, source_scale, starts, budgets, *, integrator):
    """Kinetic energy and endpoint error per step budget, for every schedule kind."""
    source = isotropic_source(source_scale, target.means.dtype)
    evaluations = integrators.EVALUATIONS_PER_STEP[integrator]

    def one_kind(kind_index):
        schedule = make_schedule(kind_index, settings, table)
        velocity, _ = _path_fields(schedule, target, source)
        start = fields.start_distribution(schedule, target, source)
        # Starts are standard normal draws, mapped to this schedule's p_0 when it differs.
        x0 = gmm.mean(start) + starts @ jnp.linalg.cholesky(gmm.covariance(start)).T
        reference = integrators.endpoint("rk4", velocity, x0, 256)

        def error(budget):
            steps = jnp.maximum(budget // evaluations, 1)
            ends = integrators.endpoint(integrator, velocity, x0, steps)
            return jnp.mean(jnp.linalg.norm(ends - reference, axis=-1))

        energy = source_scale**2 * kinetic.kinetic_energy(
            schedule, shrink(target, source_scale), **LIVE_QUADRATURE
        )
        return energy, jax.lax.map(error, budgets)

    kinds = jnp.arange(len(schedules.SWITCHABLE_KINDS))
    return jax.lax.map(one_kind, kinds)


@jax.jit
def learned_and_exact_arrows(params, schedule, target, source_scale, t, points):
    """The network's velocity and the exact one at ``points``, at time ``t``."""
    source = isotropic_source(source_scale, target.means.dtype)
    exact = fields.velocity(fields.marginal(schedule, target, t, source), points)
    return flow_matching.learned_velocity(params, t, points), exact


# --------------------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------------------


class PathsLab(param.Parameterized):
    """State and results of one paths-lab session (see the module docstring)."""

    preset = param.Selector(
        objects=list(PRESETS),
        default="Three blobs",
        label="Target preset",
        doc="Load a ready-made target mixture into the components box.",
    )
    components = param.String(
        PRESETS["Three blobs"],
        label="Target components",
        doc="One row per component: weight, mean_x, mean_y, sd_x[, sd_y[, correlation]].",
    )
    source_scale = param.Number(
        1.0,
        softbounds=(0.25, 3.0),
        step=0.05,
        label="Source width s",
        doc="The noise the paths start from is N(0, s² I).",
    )
    schedule = param.Selector(
        objects=SCHEDULE_LABELS,
        default="condot",
        label="Schedule",
        doc="How noise and data are mixed along the path: x_t = σ_t x_0 + α_t x_1.",
    )
    polynomial_exponent = param.Number(
        2.0, softbounds=(0.5, 5.0), step=0.1, label="Exponent n (α_t = tⁿ)"
    )
    vp_beta_min = param.Number(0.1, softbounds=(0.01, 2.0), step=0.01, label="β_min")
    vp_beta_max = param.Number(20.0, softbounds=(1.0, 40.0), step=0.5, label="β_max")
    ve_sigma_min = param.Number(0.01, softbounds=(0.001, 1.0), step=0.001, label="σ_min")
    ve_sigma_max = param.Number(10.0, softbounds=(1.0, 50.0), step=0.5, label="σ_max")
    integrator = param.Selector(
        objects=INTEGRATOR_LABELS,
        default="heun",
        label="Integrator",
        doc="ODE solvers follow the velocity; the SDE adds noise and a score correction.",
    )
    noise_level = param.Number(
        0.5,
        softbounds=(0.0, 3.0),
        step=0.05,
        label="SDE noise level ε",
        doc="dX = [u + ε ∇log p_t] dt + √(2ε) dW has the same marginals for every ε ≥ 0.",
    )
    noise_shape = param.Selector(
        objects=NOISE_SHAPE_LABELS, default="constant", label="Noise over time"
    )
    num_steps = param.Integer(
        50,
        softbounds=(1, 200),
        label="Steps",
        doc="Integration steps from t = 0 to 1 (field evaluations = steps × evaluations/step).",
    )
    num_trajectories = param.Selector(
        objects=[100, 300, 1000, 3000, 10000], default=1000, label="Trajectories"
    )
    seed = param.Integer(0, bounds=(0, None), label="Seed")
    time = param.Number(
        0.5, bounds=(0.0, 1.0), step=0.01, label="Time t", doc="Time of the density and arrows."
    )

    learning_rate = param.Number(
        3e-3,
        softbounds=(1e-4, 3e-2),
        step=1e-4,
        label="Learning rate",
        doc="Adam's step size for the flow-matching network.",
    )
    network_width = param.Selector(
        objects=[32, 64, 128], default=64, label="Network width", doc="Units per hidden layer."
    )
    train = param.Event(label="Train 200 steps", doc="Run one chunk of training.")
    reset_training = param.Event(label="New network", doc="Start again from a random network.")

    result = param.ClassSelector(class_=PathsResult, allow_None=True, constant=True)
    training_result = param.ClassSelector(class_=TrainingResult, allow_None=True, constant=True)
    comparison = param.ClassSelector(class_=ComparisonResult, allow_None=True, constant=True)
    error = param.String("", constant=True, doc="What is wrong with the current input.")

    INPUTS = (
        "components",
        "source_scale",
        "schedule",
        "polynomial_exponent",
        "vp_beta_min",
        "vp_beta_max",
        "ve_sigma_min",
        "ve_sigma_max",
        "integrator",
        "noise_level",
        "noise_shape",
        "num_steps",
        "num_trajectories",
        "seed",
    )
    COMPARISON_INPUTS = (
        "components",
        "source_scale",
        "polynomial_exponent",
        "vp_beta_min",
        "vp_beta_max",
        "ve_sigma_min",
        "ve_sigma_max",
        "integrator",
    )

    def __init__(self, compute: bool = True, run_later=None, **params):
        """``run_later(fn)`` runs the schedule comparison (default: at once)."""
        super().__init__(**params)
        self._recomputation = Recomputation(run_later)
        self._per_target = None
        self._training = None
        self._comparison_inputs = None
        if compute:
            self.update()
        self.param.watch(self._load_preset, ["preset"])
        self.param.watch(lambda *_: self.update(), list(self.INPUTS))
        self.param.watch(lambda *_: self.update_time(), ["time"])

    # ----------------------------------------------------------------- flow matching
    @param.depends("reset_training", "network_width", watch=True)
    def _new_network(self) -> None:
        self._training = None
        with param.edit_constant(self):
            self.training_result = None

    @param.depends("train", watch=True)
    def train_chunk(self) -> None:
        """Run :data:`TRAINING_CHUNK` Adam steps of flow matching on the current target,
        schedule and source, then compare the network with the exact field."""
        found = self.problems()
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            found.append(
                f"Learning rate = {self.learning_rate} must be a positive number "
                "(try 0.001 to 0.01)."
            )
        if found:
            with param.edit_constant(self):
                self.error = " ".join(found)
            return
        target = self.target()
        dtype = target.means.dtype
        schedule = self.current_schedule(target)
        source = isotropic_source(jnp.asarray(self.source_scale, dtype), dtype)
        if self._training is None:
            network = flow_matching.VelocityNet(
                jax.random.key(self.seed), 2, width=self.network_width, dtype=dtype
            )
            self._training = _TrainingLog(flow_matching.init_training(network), [], [], [])
        log = self._training
        key = jax.random.fold_in(jax.random.key(self.seed), int(log.state.step))
        state, info = flow_matching.train_chunk(
            key, log.state, schedule, target, self.learning_rate,
            num_steps=TRAINING_CHUNK, batch_size=TRAINING_BATCH, source=source,
        )  # fmt: skip
        losses = np.asarray(info.loss)
        if not np.all(np.isfinite(losses)):
            with param.edit_constant(self):
                self.error = (
                    f"Training diverged (loss {losses[~np.isfinite(losses)][0]}) at learning "
                    f"rate {self.learning_rate}; press New network and use a smaller rate."
                )
            return
        evaluation = flow_matching.evaluate(
            jax.random.key(12345), state.params, schedule, target, TRAINING_EVALUATION, source
        )
        log = _TrainingLog(state, [*log.losses, losses], [*log.evaluations, evaluation],
                           [*log.evaluation_steps, int(state.step)])  # fmt: skip
        self._training = log
        with param.edit_constant(self):
            self.param.update(error="", training_result=self._training_result(log))

    def _training_result(self, log) -> TrainingResult:
        losses = np.concatenate(log.losses)
        rows = self.result.arrows if self.result is not None else np.zeros((1, 4))
        points = jnp.asarray(rows[:, :2], log.state.params.layers[0].weight.dtype)
        target = self.target()
        learned, exact = learned_and_exact_arrows(
            log.state.params, self.current_schedule(target), target,
            jnp.asarray(self.source_scale, points.dtype), jnp.asarray(self.time, points.dtype),
            points,
        )  # fmt: skip
        return TrainingResult(
            steps=np.arange(1, losses.size + 1),
            losses=losses,
            evaluations=np.asarray(log.evaluation_steps),
            evaluated_loss=np.array([float(e.loss) for e in log.evaluations]),
            exact_field_loss=np.array([float(e.exact_field_loss) for e in log.evaluations]),
            velocity_error=np.array([float(e.velocity_error) for e in log.evaluations]),
            arrow_points=np.asarray(points),
            learned_arrows=np.asarray(learned),
            exact_arrows=np.asarray(exact),
            time=float(self.time),
        )

    def _load_preset(self, event) -> None:
        self.components = PRESETS[event.new]

    def add_component(self, x: float, y: float, sd: float = 0.4) -> None:
        """Append a component at (x, y) with the average weight of the others."""
        rows = [row for row in self.components.replace(";", "\n").splitlines() if row.strip()]
        if len(rows) >= MAX_COMPONENTS:
            with param.edit_constant(self):
                self.error = (
                    f"The target already has {MAX_COMPONENTS} components, the most this lab "
                    "allows; remove a row from the components box first."
                )
            return
        try:
            weight = float(parse_components(self.components).weights.mean())
        except ValueError:
            weight = 1.0
        self.components = "\n".join([*rows, format_component(weight, x, y, sd)])

    # ----------------------------------------------------------------- validation
    def problems(self) -> list[str]:
        """Everything wrong with the current input, each with what is allowed."""
        found = []
        try:
            parse_components(self.components)
        except ValueError as failure:
            found.append(str(failure))
        for name in (
            "source_scale",
            "polynomial_exponent",
            "vp_beta_min",
            "vp_beta_max",
            "ve_sigma_min",
            "ve_sigma_max",
            "noise_level",
        ):
            value = getattr(self, name)
            label = self.param[name].label
            if value is None or not math.isfinite(value):
                found.append(f"{label} = {value} is not a number.")
            elif name == "noise_level" and value < 0:
                found.append(f"{label} = {value}: the noise level must be ≥ 0 (0 is the ODE).")
            elif name != "noise_level" and value <= 0:
                found.append(f"{label} = {value} must be positive.")
        if found:
            return found
        if self.polynomial_exponent < 0.1 and self.schedule == "polynomial":
            found.append(
                f"Exponent n = {self.polynomial_exponent} is too small: below 1 the speed "
                "α̇ = n tⁿ⁻¹ is infinite at t = 0; use n ≥ 0.1."
            )
        if self.vp_beta_max <= self.vp_beta_min:
            found.append(
                f"β_max = {self.vp_beta_max} must be larger than β_min = {self.vp_beta_min}."
            )
        if self.ve_sigma_max <= self.ve_sigma_min:
            found.append(
                f"σ_max = {self.ve_sigma_max} must be larger than σ_min = {self.ve_sigma_min}."
            )
        if self.noise_level > 20:
            found.append(f"SDE noise level ε = {self.noise_level} is too large; use ε ≤ 20.")
        steps = self.num_steps
        if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            found.append(
                f"Steps = {steps} is not allowed: use a whole number from 1 to {MAX_STEPS}."
            )
        elif (steps + 1) * self.num_trajectories > MAX_TRAJECTORY_POINTS:
            found.append(
                f"{self.num_trajectories:,} trajectories × {steps + 1} time points is more than "
                f"this lab keeps ({MAX_TRAJECTORY_POINTS:,}); use fewer steps or trajectories."
            )
        return found

    # ----------------------------------------------------------------- computation
    def target(self) -> gmm.GaussianMixture:
        return padded_mixture(parse_components(self.components))

    def _settings(self):
        dtype = jnp.result_type(float)
        values = (
            self.polynomial_exponent,
            self.vp_beta_min,
            self.vp_beta_max,
            self.ve_sigma_min,
            self.ve_sigma_max,
        )
        return tuple(jnp.asarray(value, dtype) for value in values)

    def per_target(self, target) -> PerTarget:
        """The kinetic-optimal table and the exact reference, recomputed only when the
        mixture or the source changes."""
        inputs = (self.components, self.source_scale)
        if self._per_target is None or self._per_target[0] != inputs:
            computed = PerTarget(
                optimal_schedule_table(target, self.source_scale), target_reference(target)
            )
            self._per_target = (inputs, computed)
        return self._per_target[1]

    def current_schedule(self, target) -> schedules.Switchable:
        kind = jnp.asarray(schedules.SWITCHABLE_KINDS.index(self.schedule))
        return make_schedule(kind, self._settings(), self.per_target(target).table)

    def window(self, rows: ComponentRows) -> tuple[float, float, float, float]:
        """A square view holding the source (±3s) and every component (±3 sd)."""
        spread = 3.0 * np.sqrt(np.max(np.diagonal(rows.covariances, axis1=1, axis2=2), axis=1))
        low = np.minimum((rows.means - spread[:, None]).min(axis=0), -3.0 * self.source_scale)
        high = np.maximum((rows.means + spread[:, None]).max(axis=0), 3.0 * self.source_scale)
        centre, half = (low + high) / 2, (high - low).max() / 2 * 1.05
        return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half

    def compute(self) -> PathsResult:
        start = time.perf_counter()
        rows = parse_components(self.components)
        target = padded_mixture(rows)
        schedule = self.current_schedule(target)
        dtype = target.means.dtype
        key = jax.random.key(self.seed)
        displayed = min(DISPLAYED_TRAJECTORIES, self.num_trajectories)
        animated = animated_trajectory_count(self.num_trajectories, self.num_steps)
        paths, starts, ends = simulate(
            key,
            schedule,
            target,
            jnp.asarray(self.source_scale, dtype),
            jnp.asarray(self.noise_level, dtype),
            jnp.asarray(1.0 if self.noise_shape == "noise" else 0.0, dtype),
            integrator=self.integrator,
            num_steps=self.num_steps,
            num_trajectories=self.num_trajectories,
            displayed=max(displayed, animated),
        )
        if not bool(jnp.all(jnp.isfinite(ends))):
            raise FloatingPointError(
                "Some trajectories left every finite value (the steps are too coarse for this "
                "noise level or schedule); use more steps or a smaller ε."
            )
        reference = self.per_target(target).reference
        distance, mean_log_prob = sample_quality(ends, reference, target)
        curve_times = jnp.linspace(0.0, 1.0, 201, dtype=dtype)
        alpha, sigma, energy = schedule_summary(
            schedule, target, jnp.asarray(self.source_scale, dtype), curve_times
        )
        x_low, x_high, y_low, y_high = self.window(rows)
        grid_x = np.linspace(x_low, x_high, GRID_SIZE)
        grid_y = np.linspace(y_low, y_high, GRID_SIZE)
        density, target_density, arrows = self._fields_at(schedule, target, grid_x, grid_y)
        return PathsResult(
            times=np.linspace(0.0, 1.0, self.num_steps + 1),
            trajectories=np.asarray(paths[:, :displayed], np.float32),
            animated_trajectories=np.asarray(paths[:, :animated], np.float32),
            endpoints=np.asarray(ends, np.float32),
            starts=np.asarray(starts, np.float32),
            target_samples=np.asarray(reference.draws, np.float32),
            grid_x=grid_x,
            grid_y=grid_y,
            density=density,
            target_density=target_density,
            arrows=arrows,
            time=float(self.time),
            curve_times=np.asarray(curve_times),
            alpha=np.asarray(alpha),
            sigma=np.asarray(sigma),
            kinetic_energy=float(energy),
            energy_distance=float(distance),
            reference_energy_distance=float(reference.energy_distance_floor),
            mean_log_prob=float(mean_log_prob),
            exact_mean_log_prob=float(reference.exact_mean_log_prob),
            schedule=SCHEDULE_NAMES[self.schedule],
            integrator=self.integrator,
            num_steps=self.num_steps,
            seconds=time.perf_counter() - start,
        )

    def _fields_at(self, schedule, target, grid_x, grid_y):
        dtype = target.means.dtype
        arrow_x = np.linspace(grid_x[0], grid_x[-1], ARROW_GRID_SIZE + 2)[1:-1]
        arrow_y = np.linspace(grid_y[0], grid_y[-1], ARROW_GRID_SIZE + 2)[1:-1]
        density, target_density, points, velocity = snapshot(
            schedule,
            target,
            jnp.asarray(self.source_scale, dtype),
            jnp.asarray(self.time, dtype),
            *(jnp.asarray(a, dtype) for a in (grid_x, grid_y, arrow_x, arrow_y)),
        )
        points, velocity = np.asarray(points), np.asarray(velocity)
        arrows = np.column_stack([
            points,
            np.arctan2(velocity[:, 1], velocity[:, 0]),
            np.linalg.norm(velocity, axis=1),
        ])  # fmt: skip
        return np.asarray(density, np.float32), np.asarray(target_density, np.float32), arrows

    def compute_comparison(self) -> ComparisonResult:
        start = time.perf_counter()
        target = self.target()
        dtype = target.means.dtype
        table = self.per_target(target).table
        starts = jax.random.normal(jax.random.key(self.seed), (COMPARED_STARTS, 2), dtype)
        energies, errors = compare_schedules(
            self._settings(),
            table,
            target,
            jnp.asarray(self.source_scale, dtype),
            starts,
            jnp.asarray(STEP_BUDGETS),
            integrator="euler" if self.integrator == "sde" else self.integrator,
        )
        labels = tuple(SCHEDULE_NAMES[kind] for kind in schedules.SWITCHABLE_KINDS)
        return ComparisonResult(
            schedules=labels,
            kinetic_energy=np.asarray(energies),
            budgets=np.asarray(STEP_BUDGETS),
            endpoint_error=np.asarray(errors),
            integrator="euler" if self.integrator == "sde" else self.integrator,
            seconds=time.perf_counter() - start,
        )

    # ----------------------------------------------------------------- updates
    def update(self) -> None:
        """Validate, recompute the trajectories and fields, then schedule the comparison
        (serialised and coalesced: :mod:`posteriorlab.labs.scheduling`)."""
        self._recomputation.request(self._recompute)

    def _recompute(self) -> None:
        found = self.problems()
        if not found:
            try:
                result = self.compute()
            except FloatingPointError as failure:
                found = [str(failure)]
        if found:
            with param.edit_constant(self):
                self.error = " ".join(found)
            return
        with param.edit_constant(self):
            self.param.update(result=result, error="")
        comparison_inputs = tuple(getattr(self, name) for name in self.COMPARISON_INPUTS)
        if comparison_inputs != self._comparison_inputs or self.comparison is None:
            self._comparison_inputs = comparison_inputs
            self._recomputation.follow_up(self._update_comparison)

    def update_time(self) -> None:
        """Only the density and arrows depend on the time shown: recompute just those."""
        self._recomputation.request(self._recompute_time, supersedes=False)

    def _recompute_time(self) -> None:
        if self.result is None or self.error:
            return
        target = self.target()
        schedule = self.current_schedule(target)
        density, _, arrows = self._fields_at(
            schedule, target, self.result.grid_x, self.result.grid_y
        )
        with param.edit_constant(self):
            self.result = self.result._replace(
                density=density, arrows=arrows, time=float(self.time)
            )

    def _update_comparison(self, generation: int) -> None:
        comparison = self.compute_comparison()
        if self._recomputation.is_current(generation):
            with param.edit_constant(self):
                self.comparison = comparison
