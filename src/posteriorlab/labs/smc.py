"""The SMC lab: the state of one student's particle-filter session.

A :class:`SMCLab` holds everything a student can change (the state-space model and its
parameters, the data, the particle count N, the resampling scheme, the ESS threshold,
entropic annealing, the proposal, the smoother, the seed) as ``param`` parameters, and
recomputes its results whenever one of them changes:

* ``result`` (:class:`SMCResult`): one particle filter run with its genealogy and a
  smoother, beside the exact Kalman filter / RTS smoother when the model is
  linear-Gaussian;
* ``replicate_result`` (:class:`ReplicateResult`): ``replicates`` independent filters on
  the same data in one vmapped call, to show that Ẑ is unbiased and log Ẑ is not.

Bad input never raises out of the lab: :meth:`SMCLab.problems` lists what is wrong in
words a student can act on, ``error`` shows it, and the last good results stay.

Continuous parameters (ρ, σ, the ESS threshold, annealing) enter the compiled programs
as traced arrays, so moving a slider never recompiles; the particle count, the number of
steps and the scheme are shapes or program structure and compile once per value.
"""

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import param

from posteriorlab.core.smc import filtering, kalman, models, smoothing
from posteriorlab.labs.scheduling import Deadline, Recomputation

MODEL_LABELS = {
    "Linear-Gaussian, 1-D": "linear_gaussian_1d",
    "Linear-Gaussian, 2-D rotation": "linear_gaussian_2d",
    "Stochastic volatility": "stochastic_volatility",
    "Nonlinear growth": "growth",
}
LINEAR_GAUSSIAN = ("linear_gaussian_1d", "linear_gaussian_2d")
EXACT_FIELDS = (
    "exact_log_evidence",
    "exact_filtering_mean",
    "exact_filtering_var",
    "exact_smoothing_mean",
    "exact_smoothing_var",
)

RESAMPLING_LABELS = {
    "Systematic": "systematic",
    "Stratified": "stratified",
    "Residual": "residual",
    "Multinomial": "multinomial",
}
ANNEALING_LABELS = {"Off": 0, "ESS schedule (ePF)": 1, "Entropy schedule (ePF)": 2}
PROPOSAL_LABELS = {
    "Bootstrap (move with the model)": "bootstrap",
    "Guided (locally optimal)": "guided",
}
SMOOTHER_LABELS = {
    "FFBSm (N² cost)": "ffbsm",
    "PaRIS (linear cost)": "paris",
    "Genealogy (ancestral paths)": "genealogy",
}

MAX_PARTICLES = 200_000
MAX_PARTICLE_STEPS = 20_000_000  # N × T × d: about 0.5 GB of float32 particles and weights
MAX_FFBSM_PARTICLES = 2_000
MAX_REPLICATE_PARTICLE_STEPS = 50_000_000  # R × N × T (only evidences are kept)
DISPLAYED_PARTICLES = 300  # particles per step sent to the page
DISPLAYED_LINEAGES = 100
REPLICATE_CHUNK = 10  # replicates per compiled call; R stops between chunks when superseded
REPLICATE_TIME_LIMIT_S = 15.0  # the replicates stop here and show the ones done
ANIMATED_PARTICLE_STEPS = 200_000  # particles × steps in the animation: 16 B each, 3.2 MB


class SMCResult(NamedTuple):
    """One filter run, as numpy arrays ready to plot (T steps, N particles, d dims)."""

    states: np.ndarray  # (T, d) true hidden states (NaN when the data were typed in)
    observations: np.ndarray  # (T, k)
    displayed_particles: np.ndarray  # (T, M, d) a random subset of M ≤ N particles per step
    displayed_weights: np.ndarray  # (T, M) their normalised weights W_t (of all N)
    animated_particles: np.ndarray  # (T, A, d) a lineage-closed subset (animated_subset)
    animated_weights: np.ndarray  # (T, A) their normalised weights W_t (of all N)
    animated_ancestors: np.ndarray  # (T, A) int32 index of each one's parent in row t - 1
    ess: np.ndarray  # (T,) effective sample size of W_t
    resampled: np.ndarray  # (T,) bool, whether step t resampled before moving
    temperature: np.ndarray  # (T,) annealing temperature used when resampling
    lineage_paths: np.ndarray  # (T, L, d) ancestral paths of L final particles
    surviving_lineages: np.ndarray  # (T,) distinct ancestors of the final particles
    filtering_mean: np.ndarray  # (T, d) Σ W_t x_t
    filtering_var: np.ndarray  # (T, d)
    smoothing_mean: np.ndarray | None  # (T, d), or None when the smoother was not run
    smoothing_var: np.ndarray | None  # (T, d), or None when the smoother was not run
    log_evidence: np.ndarray  # (T,) running log Ẑ_{0:t}
    exact_log_evidence: np.ndarray | None  # (T,) running log Z_{0:t} (Kalman), or None
    exact_filtering_mean: np.ndarray | None
    exact_filtering_var: np.ndarray | None
    exact_smoothing_mean: np.ndarray | None
    exact_smoothing_var: np.ndarray | None
    num_particles: int
    ess_threshold: float
    smoother: str  # the smoother chosen (see smoothing_mean for whether it ran)
    seed: int  # the filter's seed
    seconds: float  # wall time of the filter (and of the smoother when it ran)


class ReplicateResult(NamedTuple):
    """R independent filters on the same data: the spread of the evidence estimate."""

    log_evidence: np.ndarray  # (R,) final log Ẑ of each replicate run
    exact_log_evidence: float | None  # log Z (Kalman) when known
    num_particles: int
    seconds: float
    num_requested: int  # R asked for; more than were run if the time limit stopped them


def build_model(kind: str, rho, sigma_x, sigma_y):
    """The state-space model named ``kind`` with the student's ρ, σ_x, σ_y.

    Which parameter means what in each model:

    * linear-Gaussian 1-D: x_t = ρ x_{t-1} + σ_x ε_t, y_t = x_t + σ_y η_t;
    * linear-Gaussian 2-D: x_t = ρ R(ω) x_{t-1} + σ_x ε_t (a damped rotation), y_t = x_t + σ_y η_t;
    * stochastic volatility: x_t = μ + ρ (x_{t-1} − μ) + σ_x ε_t, y_t ~ N(0, exp(x_t))
      (σ_y unused);
    * nonlinear growth: transition variance σ_x², observation variance σ_y² (ρ unused).
    """
    if kind == "linear_gaussian_1d":
        return models.linear_gaussian_1d(rho=rho, sigma_x=sigma_x, sigma_y=sigma_y)
    if kind == "linear_gaussian_2d":
        return models.linear_gaussian_2d(rho=rho, sigma_x=sigma_x, sigma_y=sigma_y)
    if kind == "stochastic_volatility":
        return models.StochasticVolatilitySSM(rho=rho, sigma=sigma_x)
    if kind == "growth":
        return models.GrowthModelSSM(transition_var=sigma_x**2, observation_var=sigma_y**2)
    raise ValueError(f"unknown model {kind!r}; choose one of {sorted(MODEL_LABELS.values())}")


def uses_parameter(kind: str, name: str) -> bool:
    """Whether the model ``kind`` reads the parameter ``name`` (ρ, σ_x or σ_y)."""
    unused = {"stochastic_volatility": {"sigma_y"}, "growth": {"rho"}}
    return name not in unused.get(kind, set())


@functools.partial(jax.jit, static_argnames=("kind", "num_steps"))
def simulate_data(key, kind, rho, sigma_x, sigma_y, *, num_steps):
    """Hidden states and observations drawn from the model (one compile per model and T)."""
    return build_model(kind, rho, sigma_x, sigma_y).simulate(key, num_steps)


def marginal_moments_functional(num_steps: int) -> smoothing.AdditiveFunctional:
    """The additive functional whose smoothing expectation holds E[x_s | y] and E[x_s² | y].

    It is :func:`smoothing.marginal_means_functional` applied to the vector (x, x²), so one
    PaRIS pass gives every smoothed mean and variance at linear cost in N.
    """
    means = smoothing.marginal_means_functional(num_steps)
    return smoothing.AdditiveFunctional(
        initial=lambda x: means.initial(jnp.concatenate([x, x**2])),
        increment=lambda t, x_prev, x: means.increment(t, x_prev, jnp.concatenate([x, x**2])),
    )


def _smoothed_moments(key, model, info, smoother):
    """Smoothed marginal means and variances of x_t given all the data, by ``smoother``."""
    if smoother == "ffbsm":
        log_smoothing_weights = smoothing.ffbsm_marginals(model, info)
        return smoothing.marginal_moments(info.particles, log_smoothing_weights)
    if smoother == "genealogy":
        paths, log_weights = smoothing.genealogy_smoother(info)
        num_steps = paths.shape[0]
        return smoothing.marginal_moments(
            paths, jnp.broadcast_to(log_weights, (num_steps, log_weights.size))
        )
    num_steps, _, state_dim = info.particles.shape
    estimate = smoothing.paris(key, model, info, marginal_moments_functional(num_steps)).estimate
    mean, second_moment = estimate[:, :state_dim], estimate[:, state_dim:]
    return smoothing.MarginalMoments(means=mean, variances=second_moment - mean**2)


def animated_particle_count(num_particles: int, num_steps: int) -> int:
    """How many particles per step the animation shows: all N while N × T stays within
    :data:`ANIMATED_PARTICLE_STEPS`, fewer for long or large runs (at least one)."""
    return max(1, min(num_particles, ANIMATED_PARTICLE_STEPS // num_steps))


def animated_subset(key, ancestors, size: int):
    r"""``size`` particles per step, closed under taking parents, and their genealogy.

    The last step's particles are a uniform random subset :math:`S_{T-1}`. Going back,
    :math:`S_{t-1}` holds every parent :math:`a_t^i, i \in S_t` (at most ``size`` of
    them) topped up at random, so each shown particle's parent is shown too and the
    animation can move every particle from its own parent. Each :math:`S_t` is sorted,
    which makes the shown ancestors the identity at a step that did not resample. With
    ``size = N`` every particle is shown in its own order, and the subsets are not drawn
    at all (a top-k of each step would cost four times the filter at N = 1000).

    Parameters
    ----------
    key : PRNG key
    ancestors : Array of int, shape (T, N)
        ``FilterInfo.ancestors``: index at :math:`t-1` of each particle's parent.
    size : int
        Particles shown per step, :math:`\le N`.

    Returns
    -------
    shown : Array of int, shape (T, size)
        :math:`S_t`, indices into the N particles of step t.
    shown_ancestors : Array of int32, shape (T, size)
        Position in :math:`S_{t-1}` of each shown particle's parent (row 0: ``arange``).
    """
    num_steps, num_particles = ancestors.shape
    if size == num_particles:  # all of them: S_t = {0..N-1}, the parents as they are
        everyone = jnp.arange(num_particles, dtype=jnp.int32)
        shown_ancestors = jnp.concatenate([everyone[None], ancestors[1:].astype(jnp.int32)])
        return jnp.broadcast_to(everyone, (num_steps, num_particles)), shown_ancestors
    key_last, key_fill = jax.random.split(key)
    last = jnp.sort(jax.random.permutation(key_last, num_particles)[:size]).astype(jnp.int32)

    def back_one_step(shown_now, inputs):
        key_step, ancestors_now = inputs
        parents = ancestors_now[shown_now]
        # Parents score ≥ 1, the others < 1/2 at random: the top `size` keep every parent.
        score = 0.5 * jax.random.uniform(key_step, (num_particles,))
        score = score.at[parents].set(1.0)
        shown_before = jnp.sort(jax.lax.top_k(score, size)[1])
        parent_position = jnp.searchsorted(shown_before, parents).astype(jnp.int32)
        return shown_before, (shown_now, parent_position)

    keys = jax.random.split(key_fill, num_steps - 1)
    first, (shown_later, positions_later) = jax.lax.scan(
        back_one_step, last, (keys, ancestors[1:]), reverse=True
    )
    shown = jnp.concatenate([first[None], shown_later])
    first_ancestors = jnp.arange(size, dtype=jnp.int32)[None]
    return shown, jnp.concatenate([first_ancestors, positions_later])


@functools.partial(
    jax.jit,
    static_argnames=("num_particles", "resampling", "proposal", "smoother"),
)
def filter_and_smooth(
    key,
    model,
    observations,
    ess_threshold,
    annealing,
    *,
    num_particles,
    resampling,
    proposal,
    smoother,
):
    """One particle filter, its genealogy and a smoother, reduced to what the page draws.

    ``smoother=None`` skips the smoother (FFBSm alone costs twice the filter at the
    default N): the smoothing moments are then ``None``. The keys are split the same way
    either way, so the filter's part of the answer does not depend on it.
    """
    key_filter, key_smooth, key_display = jax.random.split(key, 3)
    key_animate = jax.random.fold_in(key_display, 1)
    info = filtering.run(
        key_filter,
        model,
        observations,
        num_particles,
        resampling=resampling,
        proposal=proposal,
        ess_threshold=ess_threshold,
        annealing=annealing,
    )
    filtered = smoothing.marginal_moments(info.particles, info.log_weights)
    smoothed = None if smoother is None else _smoothed_moments(key_smooth, model, info, smoother)
    shown = jax.random.permutation(key_display, num_particles)[:DISPLAYED_PARTICLES]
    lineage_paths = smoothing.genealogy_smoother(info).paths[:, shown[:DISPLAYED_LINEAGES]]
    num_steps = observations.shape[0]
    animated, animated_ancestors = animated_subset(
        key_animate, info.ancestors, animated_particle_count(num_particles, num_steps)
    )
    rows = jnp.arange(num_steps)[:, None]
    return dict(
        displayed_particles=info.particles[:, shown],
        displayed_weights=jnp.exp(info.log_weights[:, shown]),
        animated_particles=info.particles[rows, animated],
        animated_weights=jnp.exp(info.log_weights[rows, animated]),
        animated_ancestors=animated_ancestors,
        ess=info.ess,
        resampled=info.resampled,
        temperature=info.temperature,
        lineage_paths=lineage_paths,
        surviving_lineages=filtering.count_surviving_lineages(info.ancestors),
        filtering_mean=filtered.means,
        filtering_var=filtered.variances,
        smoothing_mean=None if smoothed is None else smoothed.means,
        smoothing_var=None if smoothed is None else smoothed.variances,
        log_evidence=info.log_evidence,
    )


def _running_log_evidence(info):
    return info.log_evidence


@functools.partial(jax.jit, static_argnames=("num_particles", "resampling", "proposal"))
def replicate_log_evidence(
    keys,
    model,
    observations,
    ess_threshold,
    annealing,
    *,
    num_particles,
    resampling,
    proposal,
):
    """Final log Ẑ of one independent filter per key, in one vmapped program."""
    run_one = functools.partial(
        filtering.run,
        model=model,
        observations=observations,
        num_particles=num_particles,
        resampling=resampling,
        proposal=proposal,
        ess_threshold=ess_threshold,
        annealing=annealing,
        record=_running_log_evidence,
    )
    return jax.vmap(lambda k: run_one(k)[-1])(keys)


@jax.jit
def exact_solution(model, observations):
    """Kalman filter and RTS smoother: the exact answer for a linear-Gaussian model."""
    filtered = kalman.kalman_filter(model, observations)
    smoothed = kalman.rts_smoother(model, filtered)
    return dict(
        exact_log_evidence=jnp.cumsum(filtered.log_likelihood_increments),
        exact_filtering_mean=filtered.filtered_means,
        exact_filtering_var=jnp.diagonal(filtered.filtered_covs, axis1=-2, axis2=-1),
        exact_smoothing_mean=smoothed.smoothed_means,
        exact_smoothing_var=jnp.diagonal(smoothed.smoothed_covs, axis1=-2, axis2=-1),
    )


def parse_observations(text: str) -> np.ndarray:
    """Observations typed as numbers separated by commas, spaces or new lines -> (T, 1)."""
    tokens = text.replace(",", " ").split()
    values = []
    for token in tokens:
        try:
            values.append(float(token))
        except ValueError:
            raise ValueError(
                f"could not read {token!r} as a number; type observations as numbers "
                "separated by commas, e.g. 0.5, -0.3, 1.2"
            ) from None
    return np.asarray(values, dtype=float)[:, None]


class SMCLab(param.Parameterized):
    """Particle filtering and smoothing on a state-space model, with the exact answer beside it."""

    model = param.Selector(
        objects=MODEL_LABELS,
        default="linear_gaussian_1d",
        label="State-space model",
        doc="The hidden Markov chain x_t and how the observations y_t depend on it.",
    )
    rho = param.Number(
        0.9,
        softbounds=(-0.99, 0.99),
        step=0.01,
        label="Persistence ρ",
        doc="How strongly x_t remembers x_{t-1} (|ρ| < 1 keeps the chain stationary).",
    )
    sigma_x = param.Number(
        1.0,
        softbounds=(0.05, 5.0),
        step=0.05,
        label="State noise σ_x",
        doc="Standard deviation of the random kick the hidden state gets at each step.",
    )
    sigma_y = param.Number(
        0.2,
        softbounds=(0.05, 5.0),
        step=0.05,
        label="Observation noise σ_y",
        doc="Standard deviation of the measurement error: small σ_y means informative data.",
    )
    num_steps = param.Selector(
        objects=[20, 50, 100, 200, 500],
        default=100,
        label="Time steps T",
        doc="Length of the simulated data set.",
    )
    data_seed = param.Integer(0, bounds=(0, None), label="Data seed")
    observations_text = param.String(
        "",
        label="Your own observations (optional)",
        doc="Numbers separated by commas; leave empty to simulate data from the model.",
    )
    num_particles = param.Integer(
        1000,
        softbounds=(10, 10_000),
        label="Particles N",
        doc="More particles: less Monte Carlo error, more work (cost grows like N).",
    )
    resampling = param.Selector(
        objects=RESAMPLING_LABELS,
        default="systematic",
        label="Resampling scheme",
        doc="How offspring counts are drawn; all are unbiased, they differ in variance.",
    )
    ess_threshold = param.Number(
        0.5,
        softbounds=(0.0, 1.0),
        step=0.05,
        label="Resample when ESS/N below",
        doc="1 resamples at every step, 0 never; 0.5 is the usual adaptive choice.",
    )
    annealing = param.Selector(
        objects=ANNEALING_LABELS,
        default=0,
        label="Entropic annealing",
        doc=(
            "Flatten the resampling distribution early on when diversity collapses (ePF), "
            "with weights that correct for it so the evidence stays unbiased."
        ),
    )
    annealing_trigger = param.Number(
        0.5,
        softbounds=(0.0, 1.0),
        step=0.05,
        label="Anneal when ESS/N below",
    )
    annealing_early_phase = param.Number(
        0.5,
        softbounds=(0.0, 1.0),
        step=0.05,
        label="Anneal only before t/T",
    )
    proposal = param.Selector(
        objects=PROPOSAL_LABELS,
        default="bootstrap",
        label="Proposal",
        doc="Bootstrap ignores y_t when moving; guided uses it (linear-Gaussian models only).",
    )
    smoother = param.Selector(
        objects=SMOOTHER_LABELS,
        default="ffbsm",
        label="Smoother",
        doc="How E[x_t | all data] is estimated from the particles.",
    )
    seed = param.Integer(0, bounds=(0, None), label="Filter seed")
    replicates = param.Selector(
        objects=[20, 50, 100, 200, 500],
        default=100,
        label="Replicates R",
        doc="Independent filters run on the same data to show the spread of Ẑ.",
    )
    replicates_shown = param.Boolean(
        True,
        precedence=-1,
        doc=(
            "Whether the replicates are wanted now. A page sets this from its Evidence "
            "tab, so that the R extra filters run only while someone looks at them."
        ),
    )

    smoothing_shown = param.Boolean(
        True,
        precedence=-1,
        doc=(
            "Whether the smoothed moments are wanted now. A page sets this from its "
            "Estimates tab: elsewhere the smoother (FFBSm costs about twice the filter) is "
            "not run, and the result's smoothing moments are None."
        ),
    )

    result = param.ClassSelector(class_=SMCResult, allow_None=True, constant=True)
    replicate_result = param.ClassSelector(class_=ReplicateResult, allow_None=True, constant=True)
    error = param.String(
        "", constant=True, doc="What is wrong with the current input, if anything."
    )

    INPUTS = (
        "model",
        "rho",
        "sigma_x",
        "sigma_y",
        "num_steps",
        "data_seed",
        "observations_text",
        "num_particles",
        "resampling",
        "ess_threshold",
        "annealing",
        "annealing_trigger",
        "annealing_early_phase",
        "proposal",
        "smoother",
        "seed",
        "replicates",
    )

    def __init__(self, compute: bool = True, run_later=None, **params):
        """``run_later(fn)`` runs the replicates (default: at once); ``compute=False`` defers
        the first computation to the first change or an explicit :meth:`update`."""
        super().__init__(**params)
        self._recomputation = Recomputation(run_later)
        self._replicates_stale = False
        if compute:
            self.update()
        self.param.watch(lambda *_events: self.update(), list(self.INPUTS))
        self.param.watch(self._replicates_shown_changed, ["replicates_shown"])
        self.param.watch(self._smoothing_shown_changed, ["smoothing_shown"])

    @property
    def state_dimension(self) -> int:
        """d, the dimension of the hidden state x_t (2 for the rotation model, else 1)."""
        return 2 if self.model == "linear_gaussian_2d" else 1

    # ----------------------------------------------------------------- validation
    def problems(self) -> list[str]:
        """Everything wrong with the current input, each as a sentence with the fix."""
        found = []
        n = self.num_particles
        if not isinstance(n, int) or n < 1:
            found.append(f"Particles N = {n} is not allowed: N must be a whole number ≥ 1.")
        elif n > MAX_PARTICLES:
            found.append(
                f"Particles N = {n:,} is more than this lab allows ({MAX_PARTICLES:,}); "
                "the error of the filter falls like 1/√N, so 10,000 is usually plenty."
            )
        elif n * self.num_steps * self.state_dimension > MAX_PARTICLE_STEPS:
            cells = n * self.num_steps * self.state_dimension
            found.append(
                f"N × T × d = {n:,} × {self.num_steps} × {self.state_dimension} would need "
                f"about {cells * 24 / 1e9:.1f} GB; keep N × T × d below "
                f"{MAX_PARTICLE_STEPS:,} (fewer particles or fewer steps)."
            )
        elif self.smoother == "ffbsm" and n > MAX_FFBSM_PARTICLES:
            found.append(
                f"FFBSm costs N² per step: with N = {n:,} it would be too slow. Use N ≤ "
                f"{MAX_FFBSM_PARTICLES:,} or the PaRIS smoother, which costs N per step."
            )
        elif n * self.num_steps * self.replicates > MAX_REPLICATE_PARTICLE_STEPS:
            found.append(
                f"R × N × T = {self.replicates} × {n:,} × {self.num_steps} is too much work for "
                "the replicates view; lower the replicates R or the particles N."
            )
        for name in (
            "rho",
            "sigma_x",
            "sigma_y",
            "ess_threshold",
            "annealing_trigger",
            "annealing_early_phase",
        ):
            value = getattr(self, name)
            if value is None or not math.isfinite(value):
                found.append(f"{self.param[name].label} = {value} is not a number.")
        if found:
            return found
        for name in ("sigma_x", "sigma_y"):
            if uses_parameter(self.model, name) and getattr(self, name) <= 0:
                found.append(
                    f"{self.param[name].label} = {getattr(self, name)} must be positive: "
                    "it is a standard deviation."
                )
        if uses_parameter(self.model, "rho") and abs(self.rho) >= 1:
            found.append(
                f"Persistence ρ = {self.rho} gives a chain with no stationary distribution to "
                "start from; use |ρ| < 1."
            )
        for name in ("ess_threshold", "annealing_trigger", "annealing_early_phase"):
            if not 0 <= getattr(self, name) <= 1:
                found.append(
                    f"{self.param[name].label} = {getattr(self, name)} must lie in [0, 1]."
                )
        if self.proposal == "guided" and self.model not in LINEAR_GAUSSIAN:
            found.append(
                "The guided (locally optimal) proposal has a closed form only for the "
                "linear-Gaussian models; choose the bootstrap proposal for this model."
            )
        if self.observations_text.strip():
            found += self._observation_problems()
        return found

    def _observation_problems(self) -> list[str]:
        if self.model == "linear_gaussian_2d":
            return ["Typed observations are one number per step; the 2-D model needs two."]
        try:
            values = parse_observations(self.observations_text)
        except ValueError as error:
            return [f"Observations: {error}."]
        if len(values) < 2:
            return ["Type at least two observations, separated by commas."]
        bad = [i for i, v in enumerate(values[:, 0]) if not math.isfinite(v)]
        if bad:
            return [
                f"Observation {bad[0]} is {values[bad[0], 0]}: every observation must be a "
                "finite number (remove it or replace it)."
            ]
        return []

    # ----------------------------------------------------------------- computation
    def data(self):
        """(true states or NaN, observations) for the current settings."""
        if self.observations_text.strip():
            observations = parse_observations(self.observations_text)
            return np.full((len(observations), 1), np.nan), observations
        states, observations = simulate_data(
            jax.random.key(self.data_seed),
            self.model,
            self.rho,
            self.sigma_x,
            self.sigma_y,
            num_steps=self.num_steps,
        )
        return np.asarray(states), np.asarray(observations)

    def _filter_settings(self):
        model = build_model(self.model, self.rho, self.sigma_x, self.sigma_y)
        annealing = filtering.AnnealingSettings(
            schedule=jnp.asarray(self.annealing),
            ess_trigger=jnp.asarray(self.annealing_trigger),
            early_phase=jnp.asarray(self.annealing_early_phase),
        )
        return model, annealing

    def compute_filter(self, smoothing: bool | None = None) -> SMCResult:
        """Run the filter, the smoother if ``smoothing`` (default: ``smoothing_shown``),
        and the exact answer when there is one."""
        if smoothing is None:
            smoothing = self.smoothing_shown
        states, observations = self.data()
        model, annealing = self._filter_settings()
        start = time.perf_counter()
        summary = filter_and_smooth(
            jax.random.key(self.seed),
            model,
            observations,
            jnp.asarray(self.ess_threshold),
            annealing,
            num_particles=self.num_particles,
            resampling=self.resampling,
            proposal=self.proposal,
            smoother=self.smoother if smoothing else None,
        )
        summary = jax.tree.map(np.asarray, summary)
        seconds = time.perf_counter() - start
        check_finite(summary["log_evidence"], summary["ess"])
        exact = dict.fromkeys(EXACT_FIELDS)
        if self.model in LINEAR_GAUSSIAN:
            exact = jax.tree.map(np.asarray, exact_solution(model, observations))
        return SMCResult(
            states=states,
            observations=observations,
            **summary,
            **exact,
            num_particles=self.num_particles,
            ess_threshold=self.ess_threshold,
            smoother=self.smoother,
            seed=self.seed,
            seconds=seconds,
        )

    def compute_replicates(
        self, observations, exact_log_evidence, keep_going=lambda: True
    ) -> ReplicateResult | None:
        """Final log Ẑ of ``replicates`` independent filters on ``observations``.

        They run :data:`REPLICATE_CHUNK` at a time. Before each chunk, ``keep_going()`` is
        asked (``None`` is returned once it says no: a newer change has come), and after
        :data:`REPLICATE_TIME_LIMIT_S` seconds the ones done so far are returned.
        """
        model, annealing = self._filter_settings()
        keys = jax.random.split(jax.random.fold_in(jax.random.key(self.seed), 1), self.replicates)
        deadline = Deadline(REPLICATE_TIME_LIMIT_S)
        start = time.perf_counter()
        chunks = []
        for first in range(0, self.replicates, REPLICATE_CHUNK):
            if not keep_going():
                return None
            if chunks and deadline.expired():
                break
            chunk = replicate_log_evidence(
                keys[first : first + REPLICATE_CHUNK],
                model,
                observations,
                jnp.asarray(self.ess_threshold),
                annealing,
                num_particles=self.num_particles,
                resampling=self.resampling,
                proposal=self.proposal,
            )
            chunks.append(np.asarray(chunk))
        return ReplicateResult(
            log_evidence=np.concatenate(chunks),
            exact_log_evidence=exact_log_evidence,
            num_particles=self.num_particles,
            seconds=time.perf_counter() - start,
            num_requested=self.replicates,
        )

    def update(self) -> None:
        """Recompute for the current inputs: validate, run the filter and publish it, then
        run the replicates as a second phase.

        The replicates are the heavier part; ``run_later`` (given at construction, e.g. a
        server thread) lets the page show the filter first, and while
        ``replicates_shown`` is false they wait until it is set. Changes that arrive while a
        computation runs are coalesced, and the replicates of a superseded change stop at
        their next chunk (:mod:`posteriorlab.labs.scheduling`).
        """
        self._recomputation.request(self._filter_and_publish)

    def _filter_and_publish(self) -> None:
        found = self.problems()
        if not found:
            try:
                result = self.compute_filter()
            except FloatingPointError as failure:
                found = [str(failure)]
        if found:
            with param.edit_constant(self):
                self.error = " ".join(found)
            return
        with param.edit_constant(self):
            self.param.update(result=result, error="")
        self._replicates_stale = True
        if self.replicates_shown:
            self._recomputation.follow_up(self._update_replicates)
        elif self.replicate_result is not None:
            with param.edit_constant(self):
                self.replicate_result = None  # they belong to the previous inputs

    def _replicates_shown_changed(self, event) -> None:
        if event.new and self._replicates_stale and self.result is not None:
            self._recomputation.follow_up(self._update_replicates)

    def _smoothing_shown_changed(self, event) -> None:
        if event.new and self.result is not None and self.result.smoothing_mean is None:
            self.update()

    def complete_result(self) -> SMCResult | None:
        """The shown result with its smoothing moments, computing them if they were not
        (for an export; for the same inputs the filter's part is the same, run for run)."""
        result = self.result
        if result is None or result.smoothing_mean is not None or self.problems():
            return result
        return self.compute_filter(smoothing=True)

    def _update_replicates(self, generation: int) -> None:
        exact = self.result.exact_log_evidence
        is_current = self._recomputation.is_current
        replicates = self.compute_replicates(
            self.result.observations,
            None if exact is None else float(exact[-1]),
            keep_going=lambda: is_current(generation),
        )
        if replicates is not None and is_current(generation):
            self._replicates_stale = False
            with param.edit_constant(self):
                self.replicate_result = replicates


def check_finite(log_evidence: np.ndarray, ess: np.ndarray) -> None:
    """Raise a readable FloatingPointError when every particle weight vanished."""
    bad = np.flatnonzero(~np.isfinite(log_evidence) | ~np.isfinite(ess))
    if bad.size:
        raise FloatingPointError(
            f"Every particle weight became zero at step t = {bad[0]}: no particle explains "
            "that observation. Increase N, use the guided proposal, or increase the "
            "observation noise σ_y. The previous result is still shown."
        )


class ReplicateSummary(NamedTuple):
    """What the replicates say about the evidence estimator, relative to ``reference``."""

    reference: float  # log Z when known, else the log of the replicate mean of Ẑ
    exact: bool
    mean_ratio: float  # mean of Ẑ / Z: 1 for an unbiased estimator
    ratio_standard_error: float
    mean_log_error: float  # mean of log Ẑ − log Z: negative (Jensen)
    sd_log_error: float
    jensen_prediction: float  # −Var(log Ẑ)/2, the bias a log-normal Ẑ would have


def summarize_replicates(replicates: ReplicateResult) -> ReplicateSummary:
    """Mean and standard error of Ẑ/Z and of log Ẑ − log Z over the replicates."""
    exact = replicates.exact_log_evidence is not None
    log_evidence = replicates.log_evidence
    reference = (
        replicates.exact_log_evidence
        if exact
        else float(np.logaddexp.reduce(log_evidence) - np.log(log_evidence.size))
    )
    log_error = log_evidence - reference
    ratio = np.exp(log_error)
    return ReplicateSummary(
        reference=reference,
        exact=exact,
        mean_ratio=float(ratio.mean()),
        ratio_standard_error=float(ratio.std(ddof=1) / np.sqrt(ratio.size)),
        mean_log_error=float(log_error.mean()),
        sd_log_error=float(log_error.std(ddof=1)),
        jensen_prediction=float(-log_error.var(ddof=1) / 2),
    )
