"""Benchmark: the distribution transformer against the exact posterior, VI, importance sampling
and tempered SMC, on both likelihoods.

Problems: held-out draws from the training meta-prior (posteriorlab.core.transformer.simulate:
mixture priors with K <= 4 components in d = 1 or 2, up to 20 scalar observations, noise sd
0.2-2), drawn with a seed the trainer never used, for

    task (a)  linear_gaussian   y_j = a_j . x + noise; the exact posterior is a mixture
    task (b)  norm              y_j = ||x|| + noise (|x_1| in 1-D); the exact posterior is
                                the polar quadrature of core.transformer.quadrature

Accuracy is the log-density each method gives the true parameter, averaged over problems.
Its gap to the exact posterior's, E[log p(x|y) - log q(x|y)], is the average forward KL
(shown with its Monte Carlo standard error). For the task-(a) transformer, KL(q || exact) is
also estimated by sampling q on a subset of problems.

    transformer         load_pretrained(task) (or --weights), one forward pass
    full-rank VI        core.vi: families.FullRankGaussian, objectives.elbo,
                        optimize.run_chunk (Adam, --vi-samples draws per step), started at the
                        prior's mean and covariance, for a grid of step counts
    importance sampling core.transformer.exact.importance_sample from the prior, for a grid of
                        particle counts
    tempered SMC        core.smc.tempering.run_mixture_prior (conditional ESS 0.5 per rung,
                        systematic resampling, 5 random-walk Metropolis moves per rung), for
                        a grid of particle counts

The particle answers are turned into a density by a weighted Gaussian kernel density estimate
(core.transformer.evaluation.kernel_density_log_prob: Silverman's bandwidth with the effective
sample size), which scores the truth.

Times are per posterior: the median of --repeats runs after a warm-up call that compiles,
each waited for with block_until_ready. "batch of 1" is the lab's call
(transformer.posterior, with its input checks and padding) and the padded jitted call;
"batch of 1024" is transformer.posterior_batch divided by 1024. VI, importance sampling and
SMC are timed on one problem at each setting. For each competitor the report says which
setting first reaches the transformer's mean log-density (if any does) and the time ratio
there, and what each method reaches within equal wall-clock budgets (the transformer's own
time, and 100 times it).

    python bench/transformer.py                       # both tasks, a few minutes on 2 cores
    python bench/transformer.py --task norm --problems 1024 --vi-problems 64

A benchmark, not a test: it prints numbers and never fails.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from posteriorlab.core import gmm  # noqa: E402
from posteriorlab.core import transformer as dt  # noqa: E402
from posteriorlab.core.smc import tempering  # noqa: E402
from posteriorlab.core.transformer import evaluation, exact, likelihoods, simulate  # noqa: E402
from posteriorlab.core.transformer.inference import padded_posterior  # noqa: E402
from posteriorlab.core.vi import families, objectives, optimize  # noqa: E402

VI_STEPS = (10, 30, 100, 300, 1000, 3000)
IS_PARTICLES = (64, 256, 1024, 4096, 16384, 65536)
SMC_PARTICLES = (64, 256, 1024, 4096, 16384)
TASKS = ("linear_gaussian", "norm")


def log_joint(likelihood, prior, rows, values, noise_sd, observation_mask, x):
    """log p(x) + log p(y | x) of one padded 2-D problem."""
    return gmm.log_prob(prior, x) + likelihoods.log_likelihood(
        likelihood, x, rows, values, noise_sd, observation_mask
    )


LOG_JOINTS = {task: functools.partial(log_joint, task) for task in TASKS}
"""One function object per likelihood: a target is a pytree of traced data around it."""


def one_problem(problems: simulate.Problems, index: int) -> simulate.Problems:
    return jax.tree.map(lambda a: a[index], problems)


def first(problems: simulate.Problems, count: int) -> simulate.Problems:
    return jax.tree.map(lambda a: a[:count], problems)


def targets(problems: simulate.Problems, likelihood: str) -> jax.tree_util.Partial:
    """The log-joint of each problem as a pytree callable (batched with the problems)."""
    return jax.tree_util.Partial(LOG_JOINTS[likelihood], problems.prior, problems.rows,
                                 problems.values, problems.noise_sd, problems.observation_mask)


def log_likelihood_of(problem: simulate.Problems, likelihood: str):
    return functools.partial(likelihoods.log_likelihood, likelihood, rows=problem.rows,
                             values=problem.values, noise_sd=problem.noise_sd,
                             observation_mask=problem.observation_mask)


def median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gap_summary(log_exact, log_q):
    gap = log_exact - log_q
    return float(jnp.mean(log_q)), float(jnp.mean(gap)), float(jnp.std(gap, ddof=1)
                                                                 / math.sqrt(gap.shape[0]))


# --------------------------------------------------------------------------------------
# The transformer
# --------------------------------------------------------------------------------------


def transformer_scores(model, problems):
    q = dt.posterior_batch(model, problems.prior, problems.component_mask, problems.rows,
                           problems.values, problems.noise_sd, problems.observation_mask)
    return q, jax.vmap(exact.log_density)(q, problems.truth, problems.is_1d)


def exact_posteriors(problems):
    return jax.jit(jax.vmap(exact.exact_posterior))(
        problems.prior, problems.rows, problems.values, problems.noise_sd,
        problems.observation_mask,
    )


def with_exact_second_coordinate(mixture, is_1d):
    """For a 1-D problem, replace the unseen coordinate by the exact N(0, 1), so that a 2-D
    KL equals the 1-D one."""
    means = jnp.where(is_1d, mixture.means.at[:, 1].set(0.0), mixture.means)
    chol = jnp.where(is_1d, mixture.chol_covs.at[:, 1, :].set(jnp.array([0.0, 1.0])),
                     mixture.chol_covs)
    return mixture._replace(means=means, chol_covs=chol)


@functools.partial(jax.jit, static_argnums=3)
def reverse_kls(key, q, p, num_samples, is_1d):
    q = jax.vmap(with_exact_second_coordinate)(q, is_1d)
    keys = jax.random.split(key, is_1d.shape[0])
    return jax.lax.map(lambda args: evaluation.reverse_kl(*args, num_samples), (keys, q, p))


# --------------------------------------------------------------------------------------
# Full-rank VI
# --------------------------------------------------------------------------------------


def vi_initial_state(prior):
    chol = jnp.linalg.cholesky(gmm.covariance(prior))
    raw = jnp.tril(chol, -1) + jnp.diag(jnp.log(jnp.diagonal(chol)))
    return optimize.init(families.FullRankGaussian(gmm.mean(prior), raw), "adam")


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def vi_fit(key, state, target, num_steps, num_samples, learning_rate):
    state, _ = optimize.run_chunk(key, state, target, objectives.elbo,
                                  learning_rate=learning_rate, num_steps=num_steps,
                                  num_samples=num_samples)
    return state


def vi_as_mixture(state) -> gmm.GaussianMixture:
    family = state.params
    return gmm.GaussianMixture(jnp.zeros((1,)), family.loc[None], family.scale_tril[None])


def vi_scores(key, problems, likelihood, num_samples, learning_rate):
    """Log q_VI(x_true) after each step count of VI_STEPS (chunks continue the run)."""
    states = jax.vmap(vi_initial_state)(problems.prior)
    batch_fit = jax.jit(jax.vmap(vi_fit, in_axes=(0, 0, 0, None, None, None)),
                        static_argnums=(3, 4, 5))
    done, scores = 0, []
    for steps in VI_STEPS:
        key, key_chunk = jax.random.split(key)
        keys = jax.random.split(key_chunk, problems.truth.shape[0])
        states = batch_fit(keys, states, targets(problems, likelihood), steps - done,
                           num_samples, learning_rate)
        done = steps
        q = jax.vmap(vi_as_mixture)(states)
        scores.append(jax.vmap(exact.log_density)(q, problems.truth, problems.is_1d))
    return scores


def vi_times(key, problem, likelihood, num_samples, learning_rate, repeats):
    state = vi_initial_state(problem.prior)
    target = targets(problem, likelihood)
    return [
        median_time(lambda s=steps: vi_fit(key, state, target, s, num_samples, learning_rate),
                    repeats)
        for steps in VI_STEPS
    ]


# --------------------------------------------------------------------------------------
# Importance sampling and tempered SMC, scored through a kernel density estimate
# --------------------------------------------------------------------------------------


def kde_score(particles, log_weights, problem):
    """log of the particles' KDE at the truth (of the first coordinate for 1-D problems)."""
    full = evaluation.kernel_density_log_prob(particles, log_weights, problem.truth)
    marginal = evaluation.kernel_density_log_prob(particles[:, :1], log_weights,
                                                  problem.truth[:1])  # fmt: skip
    return jnp.where(problem.is_1d, marginal, full)


@functools.partial(jax.jit, static_argnums=(2, 3))
def importance_score(key, problem, num_particles, likelihood):
    weighted = exact.importance_sample(key, problem.prior, log_likelihood_of(problem, likelihood),
                                       num_particles)  # fmt: skip
    return kde_score(weighted.particles, weighted.log_weights, problem)


@functools.partial(jax.jit, static_argnums=(2, 3))
def smc_score(key, problem, num_particles, likelihood):
    result = tempering.run_mixture_prior(key, problem.prior,
                                         log_likelihood_of(problem, likelihood), num_particles)
    return kde_score(result.particles, result.log_weights, problem)


def particle_scores(score, key, problems, likelihood, counts):
    """Log-density of each truth under the particle method at each particle count; the
    problems run one after another (lax.map), so memory stays that of one problem."""
    keys = jax.random.split(key, problems.truth.shape[0])
    return [
        jax.jit(lambda ks, ps, n=n: jax.lax.map(lambda a: score(*a, n, likelihood), (ks, ps)))(
            keys, problems)
        for n in counts
    ]


def particle_times(score, key, problem, likelihood, counts, repeats):
    return [median_time(lambda n=n: score(key, problem, n, likelihood), repeats) for n in counts]


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths, strict=True)))


def first_reaching(reference_mean_log_q, scores, times, margin):
    """The first setting whose mean log q(x_true) is within ``margin`` nats of the
    transformer's (or above it); (index, seconds) or None."""
    for index, (score, seconds) in enumerate(zip(scores, times, strict=True)):
        if float(jnp.mean(score)) >= reference_mean_log_q - margin:
            return index, seconds
    return None


def within_budget(budget, scores, times):
    """The best mean log q(x_true) among the settings that take at most ``budget`` seconds
    (None if even the cheapest takes longer)."""
    reached = [float(jnp.mean(score)) for score, seconds in zip(scores, times, strict=True)
               if seconds <= budget]  # fmt: skip
    return max(reached) if reached else None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both",
                        help="which likelihood's network to measure (default both)")
    parser.add_argument("--weights", default=None,
                        help="a .eqx file (default: the packaged network of each task)")
    parser.add_argument("--problems", type=int, default=2048, help="held-out problems")
    parser.add_argument("--kl-problems", type=int, default=256)
    parser.add_argument("--kl-samples", type=int, default=4096)
    parser.add_argument("--vi-problems", type=int, default=128,
                        help="problems for the VI, importance-sampling and SMC comparison")
    parser.add_argument("--vi-samples", type=int, default=8)
    parser.add_argument("--vi-learning-rate", type=float, default=0.05)
    parser.add_argument("--margin", type=float, default=0.05,
                        help="nats below the transformer that count as the same log-density")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=20_261_201)
    return parser.parse_args()


def lab_call_time(model, task):
    """Median time of transformer.posterior (checks, padding, one pass) on a fixed 2-D prior."""
    prior = gmm.from_covariances([0.5, 0.3, 0.2], [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]],
                                 [jnp.eye(2) * 0.5, [[0.8, 0.3], [0.3, 0.4]], jnp.eye(2) * 0.3])
    if task == "norm":
        rows, values = likelihoods.distance_rows(3, 2), jnp.array([2.1, 2.4, 1.9])
    else:
        rows, values = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]]), jnp.array([1.5, 0.9, 2.0])
    return median_time(lambda: dt.posterior(model, prior, rows, values, 0.5), 50)


def report(task, model, record, args) -> None:
    config = model.config
    meta = simulate.MetaPrior(**record.get("training_config", {}).get("meta_prior", {}))
    key_problems, key_kl, key_vi, key_is, key_time = jax.random.split(jax.random.key(args.seed), 5)
    problems = jax.jit(simulate.sample_problems, static_argnums=(2, 3, 4, 5))(
        key_problems, meta, args.problems, config.max_components, config.max_observations, task
    )
    print(f"=== task {task}: network {dict(config._asdict())}, trained {record.get('steps')} "
          f"steps")
    print(f"{args.problems} held-out problems (seed {args.seed}), float32\n")

    reference = "exact posterior" if task == "linear_gaussian" else "exact (quadrature)"
    log_exact = jax.jit(evaluation.reference_log_density_of_truth, static_argnums=1)(problems,
                                                                                     task)
    q, log_q = transformer_scores(model, problems)
    dt_log_q, dt_gap, dt_se = gap_summary(log_exact, log_q)
    print(f"{reference}: mean log p(x_true | y) = {float(jnp.mean(log_exact)):.4f}")
    print(f"transformer: mean log q(x_true | y) = {dt_log_q:.4f}; "
          f"E[log p - log q] = {dt_gap:.4f} +- {dt_se:.4f} nats (s.e.)")
    if task == "linear_gaussian":
        exact_q = exact_posteriors(problems)
        kl_count = min(args.kl_problems, args.problems)
        kls, _ = reverse_kls(key_kl, first(q, kl_count), first(exact_q, kl_count),
                             args.kl_samples, problems.is_1d[:kl_count])
        print(f"             KL(q || exact) by MC on {kl_count} problems: mean "
              f"{float(jnp.mean(kls)):.4f} +- "
              f"{float(jnp.std(kls, ddof=1)) / math.sqrt(kl_count):.4f} nats, median "
              f"{float(jnp.median(kls)):.4f}")
    for label, mask in (("1-D", problems.is_1d), ("2-D", ~problems.is_1d)):
        g = (log_exact - log_q)[mask]
        print(f"             {label} problems: gap {float(jnp.mean(g)):.4f} "
              f"+- {float(jnp.std(g, ddof=1)) / math.sqrt(g.shape[0]):.4f} ({g.shape[0]})")

    # Timing.
    time_lab = lab_call_time(model, task)
    single = one_problem(problems, 0)
    single_args = (single.prior, single.component_mask, single.rows, single.values,
                   single.noise_sd, single.observation_mask)
    time_one = median_time(lambda: padded_posterior(model, *single_args), 50)
    batch = first(problems, 1024)
    time_batch = median_time(lambda: transformer_scores(model, batch)[1], args.repeats) / 1024
    print(f"\ntime per posterior: transformer.posterior (lab call, checks + padding) "
          f"{1e3 * time_lab:.3f} ms; padded, batch of 1 {1e3 * time_one:.3f} ms; "
          f"batch of 1024 {1e6 * time_batch:.2f} us")
    if task == "linear_gaussian":
        exact_one = jax.jit(exact.exact_posterior)
        time_exact = median_time(lambda: exact_one(single.prior, single.rows, single.values,
                                                   single.noise_sd, single.observation_mask), 50)
        print(f"exact oracle, batch of 1: {1e3 * time_exact:.3f} ms")
    print()

    # Competitors on a subset.
    count = min(args.vi_problems, args.problems)
    subset = first(problems, count)
    sub_exact = log_exact[:count]
    dt_sub_log_q, dt_sub_gap, dt_sub_se = gap_summary(sub_exact, log_q[:count])
    competitors = [
        ("full-rank VI", [f"{n} steps" for n in VI_STEPS],
         vi_scores(key_vi, subset, task, args.vi_samples, args.vi_learning_rate),
         vi_times(key_time, single, task, args.vi_samples, args.vi_learning_rate, args.repeats)),
        ("importance sampling + KDE", [f"{n} particles" for n in IS_PARTICLES],
         particle_scores(importance_score, key_is, subset, task, IS_PARTICLES),
         particle_times(importance_score, key_time, single, task, IS_PARTICLES, args.repeats)),
        ("tempered SMC + KDE", [f"{n} particles" for n in SMC_PARTICLES],
         particle_scores(smc_score, key_is, subset, task, SMC_PARTICLES),
         particle_times(smc_score, key_time, single, task, SMC_PARTICLES, args.repeats)),
    ]  # fmt: skip

    rows_out = [["transformer", "1 pass", f"{1e3 * time_one:.3f}", f"{dt_sub_log_q:.3f}",
                 f"{dt_sub_gap:.3f} +- {dt_sub_se:.3f}"]]
    for name, settings, scores, seconds in competitors:
        for setting, score, taken in zip(settings, scores, seconds, strict=True):
            mean_log_q, gap, se = gap_summary(sub_exact, score)
            rows_out.append([name, setting, f"{1e3 * taken:.3f}", f"{mean_log_q:.3f}",
                             f"{gap:.3f} +- {se:.3f}"])
    print(f"on the first {count} problems ({reference} mean log p = "
          f"{float(jnp.mean(sub_exact)):.3f}):")
    print_table(["method", "setting", "ms / posterior", "mean log q(x_true)",
                 "E[log p - log q] (nats)"], rows_out)

    print(f"\nfirst setting within {args.margin} nats of the transformer's mean log-density "
          "(times against its padded batch-of-1 call):")
    for name, settings, scores, seconds in competitors:
        reached = first_reaching(dt_sub_log_q, scores, seconds, args.margin)
        if reached is None:
            print(f"  {name}: no setting reaches it; its largest takes "
                  f"{seconds[-1] / time_one:.0f}x the transformer's time")
        else:
            index, taken = reached
            print(f"  {name}: {settings[index]}, {1e3 * taken:.2f} ms, "
                  f"{taken / time_one:.0f}x the transformer's time")

    print("\nequal wall-clock budgets: the best mean log q(x_true) within the budget "
          f"(transformer: {dt_sub_log_q:.3f} in {1e3 * time_one:.3f} ms)")
    for factor in (1, 100):
        budget = factor * time_one
        cells = []
        for name, _, scores, seconds in competitors:
            best = within_budget(budget, scores, seconds)
            cells.append(f"{name} {'nothing fits' if best is None else f'{best:.3f}'}")
        print(f"  {factor}x ({1e3 * budget:.2f} ms): " + "; ".join(cells))
    print(f"\ntargets: within 0.1 nats of exact (measured {dt_gap:.3f} +- {dt_se:.3f}); a single "
          f"posterior <= 5 ms (measured {1e3 * time_lab:.3f} ms through the lab call); "
          ">= 100x faster than VI or SMC at the same log-density (see above)\n")


def main() -> None:
    args = parse_args()
    tasks = TASKS if args.task == "both" else (args.task,)
    for task in tasks:
        if args.weights is None:
            model, record = dt.load_pretrained(task), dt.pretrained_metadata(task)
        else:
            model, record = dt.load_model(args.weights)
            if model.config.likelihood != task:
                continue
        report(task, model, record, args)


if __name__ == "__main__":
    main()
