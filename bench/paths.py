"""Benchmark: integrating the exact mixture probability-flow ODE, posteriorlab against a
plain JAX loop, in one process.

The field: the exact marginal velocity u_t(x) of the Cond-OT path (alpha_t = t,
sigma_t = 1 - t) from N(0, I) to the canonical 2-D mixture

    pi = (0.5, 0.3, 0.2),  mu = ((-2, 0), (2, 1), (0, -2)),
    Sigma_1 = 0.25 I,  Sigma_2 = [[0.5, 0.2], [0.2, 0.3]],  Sigma_3 = 0.1 I,

integrated from t = 0 to 1 in S equal steps for N trajectories (default 10^4 x 100), all
in float32, every method from the same starting noise:

    posteriorlab    fields.marginal + fields.velocity with schedules.CondOT, integrated
                    by integrators.endpoint (ends only) and integrators.euler / rk4 (the
                    whole (S + 1, N, 2) trajectory)
    lab simulate    labs.paths.simulate, what the served paths page runs: the Switchable
                    schedule (kind = Cond-OT), the mixture padded to MAX_COMPONENTS, the
                    exact start drawn inside, the whole trajectory integrated
    plain JAX       the closed-form 3-component Cond-OT velocity written by hand
                    (explicit 2 x 2 inverses) in a jitted lax.fori_loop (ends only) or
                    lax.scan (whole trajectory), in two layouts: (n, K) (state (n, 2),
                    as the formula is usually written) and (K, n) (state (2, n), the
                    points on the minor axis, which XLA's CPU backend vectorises)

Every method's end points are first checked against the plain (n, K) loop's (same
integrator), then each is timed: one warm-up call that compiles, then --repeats calls
(interleaved across methods, each waited for with block_until_ready). Reported: median
wall time, trajectories per second (N / time) and posteriorlab / plain in trajectories
per second against both plain layouts (the goal is at least 0.9).

    python bench/paths.py                          # N = 1e4, S = 100, 5 repeats
    python bench/paths.py --particles 1000 --steps 200 --repeats 9

A benchmark, not a test: it prints numbers and never fails on speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from posteriorlab.core import gmm
from posteriorlab.core.paths import fields, integrators, schedules
from posteriorlab.labs import paths as lab

WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]])
COVARIANCES = np.array([0.25 * np.eye(2), [[0.5, 0.2], [0.2, 0.3]], 0.1 * np.eye(2)])
POINTS_FIRST, POINTS_LAST = "(n, K)", "(K, n)"  # the plain loop's two array layouts
GOAL_RATIO = 0.9  # posteriorlab / plain JAX in trajectories per second


def canonical_target() -> gmm.GaussianMixture:
    """The three-component mixture as posteriorlab holds it (float32)."""
    return gmm.GaussianMixture(
        jnp.asarray(np.log(WEIGHTS), jnp.float32),
        jnp.asarray(MEANS, jnp.float32),
        jnp.linalg.cholesky(jnp.asarray(COVARIANCES, jnp.float32)),
    )


def lab_schedule(target: gmm.GaussianMixture) -> schedules.Switchable:
    """The lab's Switchable schedule set to Cond-OT, other kinds at the lab's defaults."""
    settings = tuple(jnp.asarray(v, jnp.float32) for v in (2.0, 0.1, 20.0, 0.01, 10.0))
    table = lab.optimal_schedule_table(target, jnp.asarray(1.0, jnp.float32))
    kind = jnp.asarray(schedules.SWITCHABLE_KINDS.index("condot"))
    return lab.make_schedule(kind, settings, table)


# --------------------------------------------------------------------------------------
# The plain loop: the Cond-OT mixture velocity written out by hand
# --------------------------------------------------------------------------------------


def plain_velocity(t, x1, x2, log_weights, means, covs, axis):
    """u_t(x) = sum_j w_j(x) [mu_j + (t Sigma_j - (1 - t) I) C_j^{-1} (x - t mu_j)],
    C_j = (1 - t)^2 I + t^2 Sigma_j, with each 2 x 2 inverse written out.

    ``x1``, ``x2`` are the two coordinates, shaped to broadcast against the components
    along ``axis``: ``(n, 1)`` with ``axis=-1`` (an ``(n, K)`` layout), ``(1, n)`` with
    ``axis=0`` (a ``(K, n)`` layout). Returns the two velocity coordinates, each ``(n,)``.
    """

    def per_component(values):  # (K,) -> broadcastable along `axis`
        return values.reshape((1, -1) if axis == -1 else (-1, 1))

    s = 1.0 - t
    a11, a12, a22 = (per_component(covs[:, i, j]) for i, j in ((0, 0), (0, 1), (1, 1)))
    mu1, mu2 = per_component(means[:, 0]), per_component(means[:, 1])
    c11, c12, c22 = s * s + t * t * a11, t * t * a12, s * s + t * t * a22
    det = c11 * c22 - c12 * c12
    p11, p12, p22 = c22 / det, -c12 / det, c11 / det  # C^{-1}
    r1, r2 = x1 - t * mu1, x2 - t * mu2
    z1, z2 = p11 * r1 + p12 * r2, p12 * r1 + p22 * r2
    logits = per_component(log_weights) - 0.5 * jnp.log(det) - 0.5 * (r1 * z1 + r2 * z2)
    w = jax.nn.softmax(logits, axis=axis)
    g11, g12, g22 = t * a11 - s, t * a12, t * a22 - s  # half the rate of C
    u1 = jnp.sum(w * (mu1 + g11 * z1 + g12 * z2), axis=axis)
    u2 = jnp.sum(w * (mu2 + g12 * z1 + g22 * z2), axis=axis)
    return u1, u2


def plain_step(integrator, field, t, h, x):
    if integrator == "euler":
        return x + h * field(t, x)
    if integrator == "heun":
        slope = field(t, x)
        return x + 0.5 * h * (slope + field(t + h, x + h * slope))
    k1 = field(t, x)
    k2 = field(t + 0.5 * h, x + 0.5 * h * k1)
    k3 = field(t + 0.5 * h, x + 0.5 * h * k2)
    k4 = field(t + h, x + h * k3)
    return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


@partial(jax.jit, static_argnames=("integrator", "num_steps", "trajectory", "points_last"))
def plain(x0, log_weights, means, covs, *, integrator, num_steps, trajectory, points_last):
    """The hand-written loop. With ``points_last`` the state is held as ``(2, n)`` and the
    field works on ``(K, n)`` arrays (transposed once at each end); otherwise the state
    is ``(n, 2)`` and the field works on ``(n, K)`` arrays, as x is usually written."""
    mixture = (log_weights, means, covs)
    if points_last:

        def field(t, x):
            return jnp.stack(plain_velocity(t, x[0:1], x[1:2], *mixture, axis=0), axis=0)

        x0 = x0.T
    else:

        def field(t, x):
            return jnp.stack(plain_velocity(t, x[:, 0:1], x[:, 1:2], *mixture, axis=-1), -1)

    h = jnp.float32(1.0 / num_steps)
    step = partial(plain_step, integrator, field)
    if not trajectory:
        end = jax.lax.fori_loop(0, num_steps, lambda k, x: step(k * h, h, x), x0)
        return end.T if points_last else end

    def advance(x, k):
        x = step(k * h, h, x)
        return x, x

    _, path = jax.lax.scan(advance, x0, jnp.arange(num_steps, dtype=jnp.float32))
    path = jnp.concatenate([x0[None], path], axis=0)
    return jnp.swapaxes(path, 1, 2) if points_last else path


# --------------------------------------------------------------------------------------
# posteriorlab
# --------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("integrator", "num_steps", "trajectory"))
def posteriorlab_flow(x0, target, *, integrator, num_steps, trajectory):
    def velocity(t, x):
        return fields.velocity(fields.marginal(schedules.CondOT(), target, t), x)

    if not trajectory:
        return integrators.endpoint(integrator, velocity, x0, num_steps)
    times = integrators.uniform_times(num_steps, jnp.float32)
    return integrators.ODE_SOLVERS[integrator](velocity, x0, times)


def lab_simulate(key, schedule, target, *, integrator, num_steps, num_trajectories):
    """labs.paths.simulate as PathsLab.compute calls it (source scale 1, no noise)."""
    zero, one = jnp.asarray(0.0, jnp.float32), jnp.asarray(1.0, jnp.float32)
    return lab.simulate(
        key, schedule, target, one, zero, zero,
        integrator=integrator, num_steps=num_steps, num_trajectories=num_trajectories,
        displayed=min(lab.DISPLAYED_TRAJECTORIES, num_trajectories),
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def ends_of(output):
    """End points of whatever a method returns."""
    if isinstance(output, tuple):  # lab.simulate: (shown paths, starts, ends)
        return output[2]
    return output[-1] if output.ndim == 3 else output


class Method(NamedTuple):
    name: str
    integrator: str
    output: str  # "ends" or "trajectory"
    plain: bool
    run: object  # () -> output


def plain_name(output: str, layout: str) -> str:
    return f"plain JAX {'lax.scan' if output == 'trajectory' else 'fori_loop'}, {layout}"


PLAIN_ENDS = plain_name("ends", POINTS_FIRST)  # the reference for every end-point check


def build_methods(args, x0, key, target) -> list[Method]:
    mixture = (target.log_weights, target.means, gmm.covariances(target))
    padded = lab.padded_mixture(lab.ComponentRows(WEIGHTS, MEANS, COVARIANCES))
    switchable = lab_schedule(padded)
    methods = []
    for integrator in args.integrators:
        common = dict(integrator=integrator, num_steps=args.steps)
        for trajectory in (False, True):
            output = "trajectory" if trajectory else "ends"
            for layout in (POINTS_FIRST, POINTS_LAST):
                run = partial(
                    plain, x0, *mixture, trajectory=trajectory,
                    points_last=layout == POINTS_LAST, **common,
                )  # fmt: skip
                methods.append(Method(plain_name(output, layout), integrator, output, True, run))
            solver = integrators.ODE_SOLVERS[integrator].__name__
            name = f"posteriorlab {'integrators.' + solver if trajectory else 'endpoint'}"
            run = partial(posteriorlab_flow, x0, target, trajectory=trajectory, **common)
            methods.append(Method(name, integrator, output, False, run))
        lab_common = dict(common, num_trajectories=args.particles)
        run = partial(lab_simulate, key, switchable, padded, **lab_common)
        name = f"lab simulate, {lab.MAX_COMPONENTS} padded"
        methods.append(Method(name, integrator, "trajectory", False, run))
        if args.unpadded_lab:
            run = partial(lab_simulate, key, lab_schedule(target), target, **lab_common)
            methods.append(Method("lab simulate, 3 unpadded", integrator, "trajectory", False, run))
    return methods


def main() -> None:
    args = parse_args()
    if not args.keep_blas_threads and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        # As `posteriorlab serve` does; OpenBLAS reads the variable once, when it loads.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    jax.config.update("jax_enable_x64", False)  # float32 throughout, as the served page runs

    target = canonical_target()
    key = jax.random.key(args.seed)
    # The lab draws its starts inside simulate (from the exact p_0 = N(0, I) of the
    # Cond-OT path); every other method starts from those same points.
    padded = lab.padded_mixture(lab.ComponentRows(WEIGHTS, MEANS, COVARIANCES))
    _, x0, _ = lab_simulate(
        key, lab_schedule(padded), padded, integrator="euler", num_steps=1,
        num_trajectories=args.particles,
    )  # fmt: skip
    x0 = jax.block_until_ready(x0)
    assert x0.dtype == jnp.float32
    assert x0.shape == (args.particles, 2)

    print(
        f"Exact Cond-OT mixture velocity, 3 components in 2-D, N={args.particles} "
        f"trajectories x S={args.steps} steps, float32"
    )
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), numpy {np.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )

    methods = build_methods(args, x0, key, target)
    # Warm-up (compiles) and the agreement check, before anything is timed.
    compile_s, ends = {}, {}
    for m in methods:
        start = time.perf_counter()
        result = jax.block_until_ready(m.run())
        compile_s[m] = time.perf_counter() - start
        ends[m.name, m.integrator] = np.asarray(ends_of(result))
        assert ends_of(result).dtype == jnp.float32, (m.name, ends_of(result).dtype)
        if m.output == "trajectory" and not isinstance(result, tuple):
            assert result.shape == (args.steps + 1, args.particles, 2), result.shape
    gaps = {}
    for m in methods:
        end = ends[m.name, m.integrator]
        assert np.all(np.isfinite(end)), m.name
        gaps[m] = float(np.max(np.abs(end - ends[PLAIN_ENDS, m.integrator])))
        assert gaps[m] <= args.tolerance, (
            f"{m.name} ({m.integrator}) ends {gaps[m]:.2e} away from the plain loop's "
            f"(tolerance {args.tolerance:g})"
        )

    times = {m: [] for m in methods}
    for _ in range(args.repeats):  # interleaved, so that load drifts hit every method
        for m in methods:
            start = time.perf_counter()
            jax.block_until_ready(m.run())
            times[m].append(time.perf_counter() - start)
    medians = {m: statistics.median(v) for m, v in times.items()}
    by_name = {(m.name, m.integrator): medians[m] for m in methods}

    rows, ratios = [], []
    for m in methods:
        if rows and m.integrator != rows[-1][0]:
            rows.append(None)
        rows.append((
            m.integrator, m.output, m.name, f"{medians[m] * 1e3:.1f}", f"{min(times[m]) * 1e3:.1f}",
            f"{args.particles / medians[m]:.3g}", f"{compile_s[m]:.2f}",
            "-" if m.name == PLAIN_ENDS else f"{gaps[m]:.1e}",
        ))  # fmt: skip
        if not m.plain:
            versus = [by_name[plain_name(m.output, layout), m.integrator] / medians[m]
                      for layout in (POINTS_FIRST, POINTS_LAST)]  # fmt: skip
            ratios.append((m.integrator, m.output, m.name, *(f"{r:.2f}" for r in versus)))
    print_table(
        (
            "integrator",
            "output",
            "method",
            "median ms",
            "min ms",
            "trajectories/s",
            "1st call s",
            "max |end - plain|",
        ),
        rows,
    )
    print(
        f"\nposteriorlab / plain JAX in trajectories/s, same integrator and output "
        f"(goal >= {GOAL_RATIO}):"
    )
    print_table(
        ("integrator", "output", "method", f"vs plain {POINTS_FIRST}", f"vs plain {POINTS_LAST}"),
        ratios,
    )
    print(
        f"\nMedians of {args.repeats} interleaved runs after a warm-up call. The lab's "
        "simulate is compared with the plain whole-trajectory loops. Plain layouts: "
        f"{POINTS_FIRST} = state (n, 2), field on (n, K) arrays (as x is usually written); "
        f"{POINTS_LAST} = state (2, n), field on (K, n) arrays."
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def print_table(header, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows if r)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print(
            "" if row is None else "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
        )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=10_000, help="trajectories N")
    parser.add_argument("--steps", type=int, default=100, help="integration steps S")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method")
    parser.add_argument(
        "--integrators", nargs="+", default=["euler", "rk4"], choices=["euler", "heun", "rk4"]
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest allowed |end point - plain loop's end point| (float32)",
    )
    parser.add_argument(
        "--unpadded-lab",
        action="store_true",
        help="also time labs.paths.simulate on the 3-component mixture, not padded",
    )
    parser.add_argument(
        "--keep-blas-threads",
        action="store_true",
        help="do not restart with OPENBLAS_NUM_THREADS=1 (see bench/README.md)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


if __name__ == "__main__":
    main()
