"""Benchmark: the bootstrap particle filter against its peers, in one process.

Model: the 1-D linear-Gaussian state-space model (AR(1) state, noisy observation),

    x_0 ~ N(0, sigma_x^2 / (1 - rho^2)),
    x_t = rho x_{t-1} + sigma_x eps_t,    y_t = x_t + sigma_y eta_t,

with rho = 0.9, sigma_x = 1, sigma_y = 0.2, on one simulated data set of T steps.

Every filter resamples (systematic) at every step (ess_threshold = ESSrmin = 1), so all
of them do the same work: N particles moved, weighted and resampled T times.

    posteriorlab    posteriorlab.core.smc.filtering.run under jax.jit, keeping only the
                    log-evidence (record=...) and keeping the full FilterInfo history
    plain JAX       the minimal lax.scan loop a JAX user would write for this model
    particles       particles.SMC with state_space_models.Bootstrap on kalman.LinearGauss

Reported per N: median wall time of the timed runs (JAX after a warm-up call that
compiles, each result waited for with block_until_ready), particle-steps per second
(N T / time), the speed-up of posteriorlab over particles and its time relative to the
plain loop. The log-evidence estimates of all methods are checked against the exact
Kalman value.

    python bench/smc.py                       # N = 1e3, 1e4, 1e5; T = 100; float64
    python bench/smc.py --sizes 1000 10000 --repeats 9 --float32

A benchmark, not a test: it prints numbers and never fails on speed.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import particles
from jax.scipy.special import logsumexp
from particles import kalman as particles_kalman
from particles import state_space_models

from posteriorlab.core.smc import filtering, models

RHO, SIGMA_X, SIGMA_Y = 0.9, 1.0, 0.2
GOAL_SPEEDUP_VS_PARTICLES = 10.0
Z = 4.0  # evidence check: within Z standard deviations of the Kalman value


# --------------------------------------------------------------------------------------
# The exact answer
# --------------------------------------------------------------------------------------


def kalman_log_likelihood(y: np.ndarray) -> float:
    """log p(y_{0:T-1}) of the 1-D model by the Kalman filter, in float64 numpy."""
    mean, var = 0.0, SIGMA_X**2 / (1.0 - RHO**2)
    total = 0.0
    for t, y_t in enumerate(y):
        if t > 0:
            mean, var = RHO * mean, RHO**2 * var + SIGMA_X**2
        innovation_var = var + SIGMA_Y**2
        total -= 0.5 * (math.log(2 * math.pi * innovation_var) + (y_t - mean) ** 2 / innovation_var)
        gain = var / innovation_var
        mean, var = mean + gain * (y_t - mean), (1.0 - gain) * var
    return total


def simulate(seed: int, num_steps: int) -> np.ndarray:
    """One data set y_{0:T-1} drawn in float64 numpy, the same whatever JAX's precision."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, SIGMA_X / math.sqrt(1.0 - RHO**2))
    y = np.empty(num_steps)
    for t in range(num_steps):
        if t > 0:
            x = RHO * x + SIGMA_X * rng.normal()
        y[t] = x + SIGMA_Y * rng.normal()
    return y


def particles_kalman_log_likelihood(y: np.ndarray) -> float:
    """The same number from the particles library's own Kalman filter (a cross-check)."""
    ssm = particles_kalman.LinearGauss(rho=RHO, sigmaX=SIGMA_X, sigmaY=SIGMA_Y)
    kf = particles_kalman.Kalman(ssm=ssm, data=y)
    kf.filter()
    return float(np.sum(kf.logpyt))


# --------------------------------------------------------------------------------------
# The three filters
# --------------------------------------------------------------------------------------


def record_log_evidence(info: filtering.FilterInfo):
    """Keep only log Z_t from each step (defined once, so it compiles once)."""
    return info.log_evidence


@partial(jax.jit, static_argnames=("num_particles", "record"))
def posteriorlab_filter(key, model, observations, num_particles, record):
    """posteriorlab's bootstrap filter, resampling at every step; returns log Z_T."""
    history = filtering.run(
        key,
        model,
        observations,
        num_particles,
        resampling="systematic",
        proposal="bootstrap",
        ess_threshold=1.0,
        record=record,
    )
    log_evidence = history if record is not None else history.log_evidence
    return log_evidence[-1], history


@partial(jax.jit, static_argnames="num_particles")
def plain_jax_filter(key, observations, rho, sigma_x, sigma_y, num_particles):
    """A hand-written bootstrap filter for this model: move, weight, resample, in a scan."""
    dtype = observations.dtype
    log_n = jnp.log(num_particles).astype(dtype)

    def log_likelihood(x, y):
        return -0.5 * ((y - x) / sigma_y) ** 2 - jnp.log(sigma_y) - 0.5 * jnp.log(2 * jnp.pi)

    key_init, key_steps = jax.random.split(key)
    x = sigma_x / jnp.sqrt(1 - rho**2) * jax.random.normal(key_init, (num_particles,), dtype)
    log_w = log_likelihood(x, observations[0])
    log_evidence = logsumexp(log_w) - log_n

    def step(carry, inputs):
        x, log_w, log_evidence = carry
        key, y = inputs
        key_resample, key_move = jax.random.split(key)
        weights = jnp.exp(log_w - logsumexp(log_w))
        u = jnp.arange(num_particles) + jax.random.uniform(key_resample, dtype=dtype)
        ancestors = jnp.searchsorted(jnp.cumsum(weights), u / num_particles)
        ancestors = jnp.clip(ancestors, 0, num_particles - 1)
        x = rho * x[ancestors] + sigma_x * jax.random.normal(key_move, (num_particles,), dtype)
        log_w = log_likelihood(x, y)
        return (x, log_w, log_evidence + logsumexp(log_w) - log_n), None

    step_keys = jax.random.split(key_steps, observations.shape[0] - 1)
    (_, _, log_evidence), _ = jax.lax.scan(
        step, (x, log_w, log_evidence), (step_keys, observations[1:])
    )
    return log_evidence


def particles_filter(seed: int, y: np.ndarray, num_particles: int) -> float:
    """The particles library: bootstrap filter, systematic resampling at every step."""
    np.random.seed(seed)  # noqa: NPY002 (particles draws from numpy's global generator)
    ssm = particles_kalman.LinearGauss(rho=RHO, sigmaX=SIGMA_X, sigmaY=SIGMA_Y)
    fk = state_space_models.Bootstrap(ssm=ssm, data=y)
    algorithm = particles.SMC(fk=fk, N=num_particles, resampling="systematic", ESSrmin=1.0)
    algorithm.run()
    return float(algorithm.logLt)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def time_jax(function, keys, repeats):
    """Compile with keys[0], then time `repeats` calls on fresh keys.

    Returns (times, estimates, compile_s); the first call's time includes compilation.
    """
    start = time.perf_counter()
    jax.block_until_ready(function(keys[0]))
    compile_s = time.perf_counter() - start
    times, estimates = [], []
    for key in keys[1 : repeats + 1]:
        start = time.perf_counter()
        result = jax.block_until_ready(function(key))
        times.append(time.perf_counter() - start)
        estimates.append(float(result))
    return times, estimates, compile_s


def time_particles(y, num_particles, repeats, budget_s):
    """Time at least one run, then as many of `repeats` as fit in budget_s seconds."""
    times, estimates = [], []
    for seed in range(repeats):
        start = time.perf_counter()
        estimates.append(particles_filter(seed, y, num_particles))
        times.append(time.perf_counter() - start)
        if sum(times) + times[-1] > budget_s:
            break
    return times, estimates


def pooled_sd(groups):
    """Pooled within-group standard deviation of the estimates (groups of size >= 2)."""
    sum_sq, dof = 0.0, 0
    for values in groups:
        if len(values) >= 2:
            sum_sq += (len(values) - 1) * statistics.variance(values)
            dof += len(values) - 1
    return math.sqrt(sum_sq / dof) if dof else float("nan")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per method")
    parser.add_argument("--steps", type=int, default=100, help="time steps T")
    parser.add_argument(
        "--particles-budget",
        type=float,
        default=20.0,
        help="seconds per N for the particles library (at least one run, at most --repeats)",
    )
    parser.add_argument("--float32", action="store_true", help="run JAX in float32")
    parser.add_argument(
        "--single-threaded-blas",
        action="store_true",
        help="restart with OPENBLAS_NUM_THREADS=1 (see bench/README.md)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


METHODS = (
    "posteriorlab (record=evidence)",
    "posteriorlab (full record)",
    "plain JAX lax.scan",
    "particles",
)


def measure(num_particles, args, model, observations, y, dtype):
    """Time every method at one N; {method: (times, estimates, compile_s)}."""
    params = tuple(jnp.asarray(v, dtype) for v in (RHO, SIGMA_X, SIGMA_Y))
    keys = jax.random.split(jax.random.key(args.seed + 1), args.repeats + 1)

    def posteriorlab_evidence(key):
        return posteriorlab_filter(key, model, observations, num_particles, record_log_evidence)[0]

    def posteriorlab_full(key):
        return posteriorlab_filter(key, model, observations, num_particles, None)[0]

    def plain(key):
        return plain_jax_filter(key, observations[:, 0], *params, num_particles)

    results = {
        name: time_jax(function, keys, args.repeats)
        for name, function in zip(
            METHODS, (posteriorlab_evidence, posteriorlab_full, plain), strict=False
        )
    }
    times, estimates = time_particles(y, num_particles, args.repeats, args.particles_budget)
    results["particles"] = (times, estimates, float("nan"))
    return results


def print_table(header, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows if r)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print(
            "" if row is None else "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
        )


def main() -> None:
    args = parse_args()
    if args.single_threaded_blas and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        # OpenBLAS reads the variable once, when it is loaded: start again with it set.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])

    jax.config.update("jax_enable_x64", not args.float32)
    dtype = jnp.float32 if args.float32 else jnp.float64

    model = models.linear_gaussian_1d(rho=RHO, sigma_x=SIGMA_X, sigma_y=SIGMA_Y)
    y = simulate(args.seed, args.steps)
    observations = jnp.asarray(y[:, None], dtype=dtype)
    exact = kalman_log_likelihood(y)

    print(
        f"Bootstrap particle filter, 1-D linear Gaussian (rho={RHO}, sigma_x={SIGMA_X}, "
        f"sigma_y={SIGMA_Y}), T={args.steps}, systematic resampling at every step"
    )
    print(
        f"jax {jax.__version__} ({jax.default_backend()}, {np.dtype(dtype).name}), "
        f"particles {getattr(particles, '__version__', '?')}, numpy {np.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"Kalman log p(y) = {exact:.6f} "
        f"(particles.kalman: {particles_kalman_log_likelihood(y):.6f})\n"
    )

    rows, ratios, failures = [], [], []
    for num_particles in args.sizes:
        results = measure(num_particles, args, model, observations, y, dtype)
        medians = {name: statistics.median(times) for name, (times, _, _) in results.items()}
        # posteriorlab draws the same random numbers as the plain loop for the same key,
        # so only the plain loop's and the particles library's runs are independent.
        sd = pooled_sd([results[name][1] for name in (METHODS[2], METHODS[3])])
        for name, (times, estimates, compile_s) in results.items():
            worst_z = max(abs(e - exact) for e in estimates) / sd
            if not worst_z <= Z:
                failures.append(f"{name} at N={num_particles} (|z| = {worst_z:.1f})")
            rows.append(
                (
                    f"{num_particles:d}",
                    name,
                    f"{medians[name]:.4f}",
                    f"{len(times):d}",
                    f"{num_particles * args.steps / medians[name]:.3g}",
                    "-" if math.isnan(compile_s) else f"{compile_s:.2f}",
                    f"{statistics.fmean(estimates):.3f}",
                    f"{worst_z:.1f}",
                )
            )
        rows.append(None)
        # Same keys, same random stream: posteriorlab and the plain loop should agree.
        plain_estimates = np.array(results["plain JAX lax.scan"][1])
        same_key_gap = max(
            float(np.max(np.abs(np.array(results[name][1]) - plain_estimates)))
            for name in METHODS[:2]
        )
        ratios.append(
            (
                f"{num_particles:d}",
                f"{medians['particles'] / medians[METHODS[0]]:.1f}x",
                f"{medians[METHODS[0]] / medians[METHODS[2]]:.2f}",
                f"{medians[METHODS[1]] / medians[METHODS[2]]:.2f}",
                f"{sd:.3f}",
                f"{same_key_gap:.1e}",
            )
        )

    print_table(
        (
            "N",
            "method",
            "median s",
            "runs",
            "particle-steps/s",
            "1st call s",
            "mean log Z",
            "max |z|",
        ),
        rows,
    )
    print("Ratios of median times (posteriorlab = record=evidence unless stated):")
    print_table(
        (
            "N",
            "particles / posteriorlab",
            "posteriorlab / plain JAX",
            "full record / plain JAX",
            "sd(log Z)",
            "|posteriorlab - plain| same keys (float64: ~0)",
        ),
        ratios,
    )
    print(
        f"\nGoal at N >= 1e4: particles / posteriorlab >= {GOAL_SPEEDUP_VS_PARTICLES:g}x and "
        "posteriorlab / plain JAX <= 1."
    )
    print(
        f"Evidence check (every estimate within {Z:g} sd of the Kalman value, sd pooled over "
        "the plain-JAX and particles runs of each N): "
        + ("passed." if not failures else "FAILED: " + "; ".join(failures))
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
