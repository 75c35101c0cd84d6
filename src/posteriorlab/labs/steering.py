r"""The inference-time steering tab of the paths lab: spend model evaluations on a reward.

A :class:`SteeringLab` reads the target mixture, the source and the schedule from a
:class:`~posteriorlab.labs.paths.PathsLab` (the "flow model", here exact) and adds an
observation :math:`y = a^\top x + \text{noise}`, whose log-likelihood is the reward

.. math::

    r(x) = \log\mathcal{N}(y;\ a^\top x,\ \sigma_y^2),

and a temperature :math:`\lambda`. Three methods then spend the *same* number of model
evaluations (NFE) per answer, :math:`N \times K` for :math:`N` particles and :math:`K`
SDE steps (:mod:`posteriorlab.core.paths.steering`):

* **best-of-N**: :math:`N` independent generations, keep the highest reward;
* **Rollover Budget Forcing**: one greedy SDE search whose unused per-step budget rolls
  over to the next step;
* **SMC**: :math:`N` weighted particles resampled on the change of the reward of their
  denoised guess, targeting :math:`\pi_\lambda \propto p\,e^{r/\lambda}`.

Everything is judged against the exact answer, known because the prior is a mixture and
the reward Gaussian: :math:`\pi_\lambda` is the posterior under noise
:math:`\lambda\sigma_y^2`, with normaliser :math:`Z_\lambda`
(:func:`~posteriorlab.core.paths.steering.tilted_target`). Best-of-N and RBF are repeated
:data:`REPEATS` times so that the *distribution* of their answers can be compared with
:math:`\pi_\lambda`: they climb towards the line :math:`a^\top x = y` (optimisation),
while SMC's weighted particles spread like the posterior (sampling).

For a source :math:`\mathcal{N}(0, s^2 I)` the flow of :math:`x` is :math:`s` times the
flow of :math:`x/s` from :math:`\mathcal{N}(0, I)`, and :math:`r(x) = r_s(x/s)` with the
row :math:`s\,a`; the methods run on the rescaled problem and the samples are scaled back.

Continuous inputs (observation, noise, temperature, diffusion level, ESS threshold,
mixture, schedule parameters) are traced; the particle count, the step count, the
interpolant and the lookahead switch are static and compile once per value.
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
from posteriorlab.core.paths import integrators, kinetic, schedules, steering
from posteriorlab.labs.paths import PathsLab, padded_mixture, parse_components, shrink
from posteriorlab.labs.scheduling import Recomputation

REPEATS = 12  # independent runs of best-of-N and RBF, to show where their answers land
REFERENCE_DRAWS = 2000  # exact draws from the tilted target
DISPLAYED_PARTICLES = 120  # SMC trajectories drawn
GRID_SIZE = 80
PARTICLE_COUNTS = (16, 64, 256)
STEP_COUNTS = (10, 20, 40)
INTERPOLANT_LABELS = {"The path as chosen": "same", "Converted to VP": "vp"}
PATHS_INPUTS = (
    "components",
    "source_scale",
    "schedule",
    "polynomial_exponent",
    "vp_beta_min",
    "vp_beta_max",
    "ve_sigma_min",
    "ve_sigma_max",
)


class MethodSummary(NamedTuple):
    """How one method's answers compare with the exact tilted target."""

    name: str
    nfe: int  # model evaluations per answer
    mean_reward: float  # average r over the answers (SMC: weighted)
    energy_distance: float  # unbiased; answers vs exact draws from π_λ (SMC: drawn by weight)


class SteeringResult(NamedTuple):
    """One steering run of the three methods and the exact answer, as numpy arrays."""

    grid_x: np.ndarray  # (G,)
    grid_y: np.ndarray  # (G,)
    prior_density: np.ndarray  # (G, G) p_1, rows = y
    tilted_density: np.ndarray  # (G, G) π_λ
    observation: tuple[float, float, float]  # a₁, a₂, y: the line a·x = y of largest reward
    smc_particles: np.ndarray  # (N, 2) float32
    smc_weights: np.ndarray  # (N,) normalised
    smc_trajectories: np.ndarray  # (K + 1, M, 2) float32
    smc_ess: np.ndarray  # (K + 1,) ESS / N
    smc_resampled: np.ndarray  # (K,) bool
    smc_log_evidence: float
    best_of_n: np.ndarray  # (REPEATS, 2) one answer per repeat
    rbf: np.ndarray  # (REPEATS, 2)
    rbf_budget: np.ndarray  # (K,) proposals per step, averaged over the repeats
    exact_log_normalizer: float  # log Z_λ
    exact_mean: np.ndarray  # (2,) mean of π_λ
    smc_mean: np.ndarray  # (2,) weighted mean of the SMC particles
    exact_mean_reward: float  # E_{π_λ}[r]
    max_reward: float  # sup_x r(x), reached on the line a·x = y
    energy_distance_noise: float  # sd of the distance of REPEATS exact draws (mean 0)
    methods: tuple[MethodSummary, ...]
    num_particles: int
    num_steps: int
    seconds: float


class Problem(NamedTuple):
    """The steering problem rescaled to a standard normal source (traced values only)."""

    flow: steering.Flow  # the exact mixture flow of x / s, possibly converted to VP
    reward: steering.LinearGaussianReward  # r_s(z) = r(s z): the row a scaled by s
    prior: gmm.GaussianMixture  # the target of x / s
    times: jax.Array  # (K + 1,)


def rescaled_problem(schedule, target, source_scale, reward, num_steps: int, to_vp: bool):
    """The flow, reward and time grid of the problem in units of the source width."""
    prior = shrink(target, source_scale)
    flow = steering.MixtureFlow(schedule, prior)
    if to_vp:
        flow = steering.convert_schedule(flow, schedules.VP())
    times = integrators.uniform_times(num_steps, target.means.dtype)
    return Problem(flow, reward._replace(A=reward.A * source_scale), prior, times)


_STATIC = ("num_particles", "num_steps", "to_vp")


@functools.partial(jax.jit, static_argnames=(*_STATIC, "use_lookahead"))
def run_smc(
    key, schedule, target, source_scale, reward, temperature, diffusion, ess_threshold, *,
    num_particles, num_steps, to_vp, use_lookahead,
) -> steering.SMCResult:  # fmt: skip
    """SMC towards π_λ with N particles and K steps; positions in the original units."""
    problem = rescaled_problem(schedule, target, source_scale, reward, num_steps, to_vp)
    lookahead = None
    if use_lookahead:
        lookahead = steering.MixtureLookahead(problem.flow.schedule, problem.prior, problem.reward)
    found = steering.smc(
        key, problem.flow, problem.reward, problem.times, num_particles=num_particles,
        temperature=temperature, diffusion=diffusion, ess_threshold=ess_threshold,
        lookahead=lookahead, dim=2,
    )  # fmt: skip
    return found._replace(
        particles=source_scale * found.particles, trajectory=source_scale * found.trajectory
    )


@functools.partial(jax.jit, static_argnames=_STATIC)
def run_best_of_n(
    key, schedule, target, source_scale, reward, diffusion, *, num_particles, num_steps, to_vp
) -> tuple[jax.Array, jax.Array]:
    """:data:`REPEATS` independent best-of-N answers (one batch of REPEATS × N samples,
    the best of each group of N) and their rewards."""
    problem = rescaled_problem(schedule, target, source_scale, reward, num_steps, to_vp)
    samples = steering.sample_sde(
        key, problem.flow, problem.times, REPEATS * num_particles, 2, diffusion
    )[-1].reshape(REPEATS, num_particles, 2)
    rewards = problem.reward(samples)
    best = jnp.argmax(rewards, axis=1)
    rows = jnp.arange(REPEATS)
    return source_scale * samples[rows, best], rewards[rows, best]


@functools.partial(jax.jit, static_argnames=_STATIC)
def run_rbf(
    key, schedule, target, source_scale, reward, diffusion, *, num_particles, num_steps, to_vp
) -> steering.RBFResult:
    """One Rollover Budget Forcing search with N·K evaluations, N initial samples."""
    problem = rescaled_problem(schedule, target, source_scale, reward, num_steps, to_vp)
    found = steering.rollover_budget_forcing(
        key, problem.flow, problem.reward, problem.times, max_nfe=num_particles * num_steps,
        num_initial=num_particles, diffusion=diffusion, dim=2, record_size=1,
    )  # fmt: skip
    return found._replace(sample=source_scale * found.sample)


class _Exact(NamedTuple):
    tilted: steering.TiltedTarget
    draws: jax.Array  # (REFERENCE_DRAWS, d)
    mean_reward: jax.Array
    max_reward: jax.Array
    noise: jax.Array  # sd of the energy distance of REPEATS exact draws to the reference


@jax.jit
def exact_answer(target, reward, temperature) -> _Exact:
    """The tilted target, exact draws from it, E_π[r], sup r, and how much the (unbiased)
    energy distance of :data:`REPEATS` exact draws to the reference scatters around its
    mean of zero (standard deviation over 64 sets): a method's distance within about two
    of these is indistinguishable from exact sampling."""
    tilted = steering.tilted_target(target, reward, temperature)
    key_draws, key_noise = jax.random.split(jax.random.key(0))
    draws = gmm.sample(key_draws, tilted.mixture, REFERENCE_DRAWS)
    chol = jnp.linalg.cholesky(reward.noise_cov)
    max_reward = -jnp.sum(jnp.log(jnp.diagonal(chol))) - 0.5 * reward.y.shape[0] * math.log(
        2 * math.pi
    )

    def chance_distance(key):
        exact = gmm.sample(key, tilted.mixture, REPEATS)
        return kinetic.energy_distance(exact, draws, unbiased=True)

    noise = jnp.std(jax.vmap(chance_distance)(jax.random.split(key_noise, 64)))
    return _Exact(tilted, draws, jnp.mean(reward(draws)), max_reward, noise)


@jax.jit
def densities(target, tilted, grid_x, grid_y):
    """Prior and tilted-target densities on the grid (rows = y)."""
    points = jnp.stack(jnp.meshgrid(grid_x, grid_y), axis=-1)
    return jnp.exp(gmm.log_prob(target, points)), jnp.exp(gmm.log_prob(tilted, points))


@jax.jit
def answer_distances(key, smc: steering.SMCResult, best_of_n, rbf, draws):
    """Energy distance to the exact draws of :data:`REPEATS` answers of each method; for
    SMC, REPEATS particles drawn by their weights."""
    picked = jax.random.choice(key, smc.particles.shape[0], (REPEATS,), p=jnp.exp(smc.log_weights))

    def distance(samples):
        return kinetic.energy_distance(samples, draws, unbiased=True)

    return distance(smc.particles[picked]), distance(best_of_n), distance(rbf)


class SteeringLab(param.Parameterized):
    """State and results of the steering tab (see the module docstring)."""

    paths = param.ClassSelector(class_=PathsLab, constant=True, doc="Target, source, schedule.")
    obs_a1 = param.Number(1.0, softbounds=(-2.0, 2.0), step=0.05, label="Observation row a₁")
    obs_a2 = param.Number(0.5, softbounds=(-2.0, 2.0), step=0.05, label="Observation row a₂")
    obs_y = param.Number(
        0.8,
        softbounds=(-5.0, 5.0),
        step=0.05,
        label="Observed y",
        doc="The reward is the log-likelihood of y = a₁x₁ + a₂x₂ + noise.",
    )
    obs_noise_sd = param.Number(
        0.5, softbounds=(0.05, 3.0), step=0.05, label="Observation noise sd σ_y"
    )
    temperature = param.Number(
        1.0,
        softbounds=(0.05, 5.0),
        step=0.05,
        label="Temperature λ",
        doc="SMC targets p(x)·exp(r(x)/λ): λ = 1 is Bayes' posterior, small λ sharpens it.",
    )
    num_particles = param.Selector(
        objects=list(PARTICLE_COUNTS),
        default=64,
        label="Particles N",
        doc="SMC particles, and best-of-N candidates; every method gets N × K evaluations.",
    )
    num_steps = param.Selector(objects=list(STEP_COUNTS), default=20, label="SDE steps K")
    diffusion_level = param.Number(
        1.0,
        softbounds=(0.0, 4.0),
        step=0.05,
        label="Diffusion level η (ε_t = η σ_t²)",
        doc="0 is the ODE: resampled copies then never separate.",
    )
    ess_threshold = param.Number(
        0.5, softbounds=(0.0, 1.0), step=0.05, label="SMC resampling threshold (ESS/N)"
    )
    interpolant = param.Selector(
        objects=INTERPOLANT_LABELS, default="same", label="Interpolant for sampling"
    )
    lookahead = param.Boolean(
        False,
        label="SMC with the exact lookahead",
        doc="Weight by log E[exp(r(x₁)/λ) | x_t] (known on mixtures) instead of r(x̂₁).",
    )
    seed = param.Integer(0, bounds=(0, None), label="Steering seed")

    active = param.Boolean(
        True,
        precedence=-1,
        doc="Whether the tab is shown: changes in the paths lab are followed only while it "
        "is (they are caught up with when it is shown again).",
    )
    result = param.ClassSelector(class_=SteeringResult, allow_None=True, constant=True)
    error = param.String("", constant=True, doc="What is wrong with the current input.")

    INPUTS = (
        "obs_a1",
        "obs_a2",
        "obs_y",
        "obs_noise_sd",
        "temperature",
        "num_particles",
        "num_steps",
        "diffusion_level",
        "ess_threshold",
        "interpolant",
        "lookahead",
        "seed",
    )

    def __init__(self, compute: bool = True, run_later=None, **params):
        """``run_later(fn)`` runs the update that a change in the paths lab calls for
        (default: at once), so that a schedule change shows its trajectories first."""
        if "paths" not in params:
            params["paths"] = PathsLab(compute=False)
        super().__init__(**params)
        self._recomputation = Recomputation(run_later)
        self._stale = True
        if compute:
            self.update()
        self.param.watch(lambda *_: self.update(), list(self.INPUTS))
        self.paths.param.watch(self._paths_changed, list(PATHS_INPUTS))
        self.param.watch(self._catch_up, ["active"])

    def _paths_changed(self, *_) -> None:
        """The paths lab changed: catch up on the next tick if shown, else when shown."""
        self._stale = True
        self._catch_up()

    def _catch_up(self, *_) -> None:
        if self.active and self._stale:
            self._recomputation.follow_up(self._update_if_stale)

    def _update_if_stale(self, _generation: int) -> None:
        """Update unless a newer change has already done so."""
        if self._stale:
            self.update()

    def problems(self) -> list[str]:
        """What is wrong with the steering input, or the paths lab's, with the fix."""
        found = list(self.paths.problems())
        for name in ("obs_a1", "obs_a2", "obs_y", "obs_noise_sd", "temperature",
                     "diffusion_level", "ess_threshold"):  # fmt: skip
            value = getattr(self, name)
            if value is None or not math.isfinite(value):
                found.append(f"{self.param[name].label} = {value} is not a number.")
        if found:
            return found
        if self.obs_a1 == 0 and self.obs_a2 == 0:
            found.append("The observation row a = (0, 0) observes nothing; make a₁ or a₂ non-zero.")
        if self.obs_noise_sd <= 0:
            found.append(f"Observation noise sd σ_y = {self.obs_noise_sd} must be positive.")
        if not 0.01 <= self.temperature <= 100:
            found.append(f"Temperature λ = {self.temperature} must lie in [0.01, 100].")
        if not 0 <= self.diffusion_level <= 20:
            found.append(
                f"Diffusion level η = {self.diffusion_level} must lie in [0, 20] (0 is the ODE)."
            )
        if not 0 <= self.ess_threshold <= 1:
            found.append(f"Resampling threshold {self.ess_threshold} must lie in [0, 1].")
        return found

    def reward(self, dtype) -> steering.LinearGaussianReward:
        return steering.linear_gaussian_reward(
            jnp.asarray([self.obs_a1, self.obs_a2], dtype),
            jnp.asarray(self.obs_noise_sd**2, dtype),
            jnp.asarray(self.obs_y, dtype),
        )

    def compute(self) -> SteeringResult:
        start = time.perf_counter()
        paths = self.paths
        rows = parse_components(paths.components)
        target = padded_mixture(rows)
        dtype = target.means.dtype
        reward = self.reward(dtype)
        temperature = jnp.asarray(self.temperature, dtype)
        key_smc, key_best, key_rbf, key_distance = jax.random.split(jax.random.key(self.seed), 4)
        shared = (paths.current_schedule(target), target,
                  jnp.asarray(paths.source_scale, dtype), reward)  # fmt: skip
        diffusion = steering.Diffusion(jnp.asarray(self.diffusion_level, dtype), 2.0)
        sizes = dict(num_particles=self.num_particles, num_steps=self.num_steps,
                     to_vp=self.interpolant == "vp")  # fmt: skip
        smc = run_smc(
            key_smc, *shared, temperature, diffusion, jnp.asarray(self.ess_threshold, dtype),
            use_lookahead=self.lookahead, **sizes,
        )  # fmt: skip
        if not bool(jnp.all(jnp.isfinite(smc.particles))) or not bool(
            jnp.isfinite(smc.log_evidence)
        ):
            raise FloatingPointError(
                "The SMC particles or weights left every finite value (every weight vanished "
                "or the SDE steps are too coarse); use more steps, a smaller diffusion level "
                "or a larger temperature."
            )
        best, best_rewards = run_best_of_n(key_best, *shared, diffusion, **sizes)
        searches = [
            run_rbf(key, *shared, diffusion, **sizes) for key in jax.random.split(key_rbf, REPEATS)
        ]
        rbf = jnp.stack([search.sample for search in searches])
        rbf_rewards = jnp.stack([search.reward for search in searches])
        rbf_budget = np.mean([np.asarray(search.budget_used) for search in searches], axis=0)
        exact = exact_answer(target, reward, temperature)
        smc_distance, best_distance, rbf_distance = answer_distances(
            key_distance, smc, best, rbf, exact.draws
        )
        weights = np.asarray(jnp.exp(smc.log_weights))
        particles = np.asarray(smc.particles)
        nfe = self.num_particles * self.num_steps
        methods = (
            MethodSummary("SMC (weighted particles)", nfe,
                          float(weights @ np.asarray(reward(smc.particles))), float(smc_distance)),
            MethodSummary("Best-of-N", nfe, float(jnp.mean(best_rewards)), float(best_distance)),
            MethodSummary("Rollover Budget Forcing", nfe, float(jnp.mean(rbf_rewards)),
                          float(rbf_distance)),
        )  # fmt: skip
        x_low, x_high, y_low, y_high = paths.window(rows)
        grid_x = np.linspace(x_low, x_high, GRID_SIZE)
        grid_y = np.linspace(y_low, y_high, GRID_SIZE)
        prior_density, tilted_density = densities(
            target, exact.tilted.mixture, jnp.asarray(grid_x, dtype), jnp.asarray(grid_y, dtype)
        )
        shown = np.random.default_rng(self.seed).permutation(self.num_particles)[
            :DISPLAYED_PARTICLES
        ]
        return SteeringResult(
            grid_x=grid_x,
            grid_y=grid_y,
            prior_density=np.asarray(prior_density, np.float32),
            tilted_density=np.asarray(tilted_density, np.float32),
            observation=(self.obs_a1, self.obs_a2, self.obs_y),
            smc_particles=particles.astype(np.float32),
            smc_weights=weights,
            smc_trajectories=np.asarray(smc.trajectory[:, shown], np.float32),
            smc_ess=np.asarray(smc.ess) / self.num_particles,
            smc_resampled=np.asarray(smc.resampled),
            smc_log_evidence=float(smc.log_evidence),
            best_of_n=np.asarray(best, np.float32),
            rbf=np.asarray(rbf, np.float32),
            rbf_budget=rbf_budget,
            exact_log_normalizer=float(exact.tilted.log_normalizer),
            exact_mean=np.asarray(gmm.mean(exact.tilted.mixture)),
            smc_mean=weights @ particles,
            exact_mean_reward=float(exact.mean_reward),
            max_reward=float(exact.max_reward),
            energy_distance_noise=float(exact.noise),
            methods=methods,
            num_particles=self.num_particles,
            num_steps=self.num_steps,
            seconds=time.perf_counter() - start,
        )

    def update(self) -> None:
        """Validate, then run the three methods; keep the last good result on bad input
        (serialised and coalesced: :mod:`posteriorlab.labs.scheduling`)."""
        self._recomputation.request(self._recompute)

    def _recompute(self) -> None:
        self._stale = False
        found = self.problems()
        if not found:
            try:
                result = self.compute()
            except FloatingPointError as failure:
                found = [str(failure)]
        with param.edit_constant(self):
            if found:
                self.error = " ".join(found)
            else:
                self.param.update(result=result, error="")
