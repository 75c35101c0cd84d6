"""Benchmark: one optimisation step of variational inference, posteriorlab against its peers.

Model: Bayesian logistic regression on one simulated data set,

    w ~ N(0, I_d),    y_i | w ~ Bernoulli(sigmoid(x_i . w)),    i = 1..n,

with a mean-field Gaussian family q(w) = N(loc, diag exp(2 log_scale)), the same
parametrisation everywhere, Adam (optax) with the same learning rate, and B Monte Carlo
samples of the ELBO per step.

ELBO with the reparameterisation gradient:

    posteriorlab       core.vi.optimize.run_chunk with objectives.elbo, on a plain
                       log-density target and on the NumPyro model through
                       models.numpyro_log_joint
    plain JAX          the ELBO written by hand (eps ~ N(0, I), z = loc + scale eps),
                       jax.grad, optax.adam, in a jitted lax.scan
    NumPyro SVI        Trace_ELBO(num_particles=B), optax adam through
                       optim.optax_to_numpyro; svi.update in a jitted lax.scan (the same
                       loop structure as the others; svi.run adds a Python-side loop)

REINFORCE on a model with a discrete site (spike and slab: g_j ~ Bernoulli(0.5),
w ~ N(0, I_d), logits = X (g * w)); the family draws g ~ Bernoulli(sigmoid(l)) with the
score-function estimator and w reparameterised:

    posteriorlab       run_chunk with objectives.elbo on a two-site family (Score at g)
    NumPyro SVI        TraceGraph_ELBO(num_particles=B) on the same model and guide

Every method runs the same number of steps per call (--steps); the time per step is the
call's time divided by it. JAX methods get one warm-up call that compiles, then
--repeats timed calls interleaved across methods, each waited for with
block_until_ready. Before timing, the methods' ELBO estimates at a fixed point are
checked to agree within Monte Carlo error (and posteriorlab's gradient against the plain
one on the same noise).

    python bench/vi.py                          # d = 20, n = 1000, B = 16, 500 steps
    python bench/vi.py --dim 50 --samples 32 --repeats 9 --float64

A benchmark, not a test: it prints numbers and never fails on speed. With only a few
cores, XLA:CPU's intra-op threads make whole runs differ by tens of per cent from one
process to the next (the same program at 44 us/step in one run, 71 in the next, on 2
CPUs); ``taskset -c 0 python bench/vi.py`` gives steady numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO

from posteriorlab.core.vi import families, models, objectives, optimize, programs

LEARNING_RATE = 1e-2
Z = 4.5  # agreement checks: within Z standard errors
GOAL_VS_PLAIN = 1.1


# --------------------------------------------------------------------------------------
# The model, three ways
# --------------------------------------------------------------------------------------


class LogisticRegression(NamedTuple):
    """log p(y, w) as a plain pytree log-density (posteriorlab's target)."""

    features: jax.Array
    labels: jax.Array

    def __call__(self, w):
        prior = -0.5 * jnp.sum(w**2) - 0.5 * w.shape[-1] * jnp.log(2 * jnp.pi)
        return prior + bernoulli_log_likelihood(self.labels, self.features @ w)


def bernoulli_log_likelihood(labels, logits):
    """sum_i log Bernoulli(y_i | sigmoid(x_i)) = sum_i y_i x_i - softplus(x_i).

    softplus written as NumPyro's ``BernoulliLogits.log_prob`` writes it, max(x, 0) +
    log1p(exp(-|x|)), so that the plain targets and the NumPyro model evaluate the same
    formula. (``jnp.logaddexp(0, x)`` is the same function, but its gradient costs about
    twice as much on CPU: with it the plain targets were slower than the NumPyro model.)
    """
    softplus = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return jnp.sum(labels * logits - softplus)


def numpyro_model(features, labels):
    d = features.shape[1]
    w = numpyro.sample("w", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
    with numpyro.plate("data", features.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=features @ w), obs=labels)


def numpyro_guide(features, labels):
    d = features.shape[1]
    loc = numpyro.param("loc", jnp.zeros(d, features.dtype))
    log_scale = numpyro.param("log_scale", jnp.zeros(d, features.dtype))
    numpyro.sample("w", dist.Normal(loc, jnp.exp(log_scale)).to_event(1))


class SpikeSlab(NamedTuple):
    """log p(y, g, w) for z = (g, w) concatenated, shape (2d,)."""

    features: jax.Array
    labels: jax.Array

    def __call__(self, z):
        d = self.features.shape[1]
        g, w = z[:d], z[d:]
        prior = -0.5 * jnp.sum(w**2) - 0.5 * d * jnp.log(2 * jnp.pi) - d * jnp.log(2.0)
        return prior + bernoulli_log_likelihood(self.labels, self.features @ (g * w))


class SpikeSlabFamily(NamedTuple):
    """q(g) = prod Bernoulli(sigmoid(l_j)) at site ``{name}_flip`` (score function),
    q(w) = N(loc, diag exp(2 log_scale)) at ``name`` (reparameterised)."""

    logit: jax.Array
    loc: jax.Array
    log_scale: jax.Array

    def flips(self):
        return dist.Bernoulli(probs=jax.nn.sigmoid(self.logit)).to_event(1)

    def slab(self):
        return dist.Normal(self.loc, jnp.exp(self.log_scale)).to_event(1)

    def sample(self, t, name, sample_shape=(), estimator="reparam"):
        g = t.sample(f"{name}_flip", self.flips(), "score", sample_shape)
        w = t.sample(name, self.slab(), estimator, sample_shape)
        return jnp.concatenate([g, w], axis=-1)

    def log_prob(self, z):
        d = self.loc.shape[-1]
        return self.flips().log_prob(z[..., :d]) + self.slab().log_prob(z[..., d:])


def numpyro_spike_slab_model(features, labels):
    d = features.shape[1]
    g = numpyro.sample("g", dist.Bernoulli(probs=jnp.full(d, 0.5)).to_event(1))
    w = numpyro.sample("w", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
    with numpyro.plate("data", features.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=features @ (g * w)), obs=labels)


def numpyro_spike_slab_guide(features, labels):
    d = features.shape[1]
    logit = numpyro.param("logit", jnp.zeros(d, features.dtype))
    loc = numpyro.param("loc", jnp.zeros(d, features.dtype))
    log_scale = numpyro.param("log_scale", jnp.zeros(d, features.dtype))
    numpyro.sample("g", dist.Bernoulli(probs=jax.nn.sigmoid(logit)).to_event(1))
    numpyro.sample("w", dist.Normal(loc, jnp.exp(log_scale)).to_event(1))


def simulate(seed, n, d, dtype):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)) / math.sqrt(d)
    w = rng.normal(size=d) * 2.0
    labels = (rng.uniform(size=n) < 1 / (1 + np.exp(-features @ w))).astype(float)
    return jnp.asarray(features, dtype), jnp.asarray(labels, dtype)


# --------------------------------------------------------------------------------------
# The optimisers: each `make_*` returns (run(key, state) -> state, init_state)
# --------------------------------------------------------------------------------------


def make_posteriorlab(target, family, num_steps, num_samples):
    state = optimize.init(family, "adam")

    def run(key, state):
        state, info = optimize.run_chunk(
            key,
            state,
            target,
            objectives.elbo,
            learning_rate=LEARNING_RATE,
            num_steps=num_steps,
            num_samples=num_samples,
        )
        return state, info.loss

    return run, state


def plain_neg_elbo(params, eps, target):
    loc, log_scale = params
    z = loc + jnp.exp(log_scale) * eps
    log_q = jnp.sum(-0.5 * eps**2 - log_scale - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    return -jnp.mean(jax.vmap(target)(z) - log_q)


def make_plain(target, d, dtype, num_steps, num_samples):
    transform = optax.adam(LEARNING_RATE)
    params = (jnp.zeros(d, dtype), jnp.zeros(d, dtype))

    @jax.jit
    def run(key, state):
        def step(carry, key_step):
            params, opt_state = carry
            eps = jax.random.normal(key_step, (num_samples, d), dtype)
            loss, grads = jax.value_and_grad(plain_neg_elbo)(params, eps, target)
            updates, opt_state = transform.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(step, state, jax.random.split(key, num_steps))

    return run, (params, transform.init(params))


def make_numpyro(model, guide, loss, data, num_steps):
    svi = SVI(model, guide, numpyro.optim.optax_to_numpyro(optax.adam(LEARNING_RATE)), loss)
    state = svi.init(jax.random.key(0), *data)

    @jax.jit
    def run(key, state):
        del key  # the SVI state carries its own key
        return jax.lax.scan(lambda s, _: svi.update(s, *data), state, None, length=num_steps)

    return run, state, svi


# --------------------------------------------------------------------------------------
# Agreement checks at a fixed point
# --------------------------------------------------------------------------------------


def posteriorlab_values(key, target, family, num_samples, repeats, estimators=None):
    """``repeats`` batch-mean ELBO values, each over ``num_samples`` draws."""

    def batch(k):
        def one(k1):
            return programs.value_and_surrogate(
                objectives.elbo, k1, family, target, estimators=estimators
            )[0]

        return jax.vmap(one)(jax.random.split(k, num_samples)).mean()

    return np.asarray(jax.jit(jax.vmap(batch))(jax.random.split(key, repeats)))


def numpyro_values(key, loss, model, guide, params, data, repeats):
    def one(k):
        return -loss.loss(k, params, model, guide, *data)

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(key, repeats)))


def z_gap(a, b):
    se = math.hypot(np.std(a, ddof=1) / math.sqrt(a.size), np.std(b, ddof=1) / math.sqrt(b.size))
    return abs(float(np.mean(a) - np.mean(b))) / se


def same_noise_gradient_gap(key, target, family, num_samples, d, dtype):
    """posteriorlab's loss gradient and the plain one fed the same noise: relative gap."""
    keys = jax.random.split(key, num_samples)

    def pl_loss(fam):
        def one(k):
            return programs.value_and_surrogate(objectives.elbo, k, fam, target)[1]

        return -jnp.mean(jax.vmap(one)(keys))

    site = zlib.crc32(b"z")
    eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, site), (d,), dtype))(keys)
    g_pl = jax.grad(pl_loss)(family)
    g_plain = jax.grad(plain_neg_elbo)((family.loc, family.log_scale), eps, target)
    a = jnp.concatenate([g_pl.loc, g_pl.log_scale])
    b = jnp.concatenate(g_plain)
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def time_interleaved(runners, repeats, seed):
    """{name: (times, compile_s)}; runners: {name: (run, state)}."""
    states, results = {}, {}
    for i, (name, (run, state)) in enumerate(runners.items()):
        start = time.perf_counter()
        states[name] = jax.block_until_ready(run(jax.random.key(seed + i), state))[0]
        results[name] = ([], time.perf_counter() - start)
    for r in range(repeats):
        for i, (name, (run, _)) in enumerate(runners.items()):
            key = jax.random.fold_in(jax.random.key(seed + i), r + 1)
            start = time.perf_counter()
            states[name] = jax.block_until_ready(run(key, states[name]))[0]
            results[name][0].append(time.perf_counter() - start)
    return results


def print_table(header, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=20, help="regression dimension d")
    parser.add_argument("--data", type=int, default=1000, help="data points n")
    parser.add_argument("--samples", type=int, default=16, help="ELBO samples per step B")
    parser.add_argument("--steps", type=int, default=500, help="steps per timed call")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per method")
    parser.add_argument("--float64", action="store_true", help="run JAX in float64")
    parser.add_argument(
        "--keep-blas-threads",
        action="store_true",
        help="do not restart with OPENBLAS_NUM_THREADS=1",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not args.keep_blas_threads and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    jax.config.update("jax_enable_x64", args.float64)
    dtype = jnp.float64 if args.float64 else jnp.float32
    d, n, b, steps = args.dim, args.data, args.samples, args.steps
    features, labels = simulate(args.seed, n, d, dtype)
    data = (features, labels)

    print(
        f"VI step time: Bayesian logistic regression d={d}, n={n}, mean-field Gaussian, "
        f"B={b} ELBO samples per step, Adam lr={LEARNING_RATE}, {steps} steps per call"
    )
    print(
        f"jax {jax.__version__} ({jax.default_backend()}, {np.dtype(dtype).name}), numpyro "
        f"{numpyro.__version__}, optax {optax.__version__}, python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, load average "
        f"{os.getloadavg()[0]:.2f}\n"
    )

    # ---- agreement at a fixed point -------------------------------------------------
    target = LogisticRegression(features, labels)
    numpyro_target, _ = models.numpyro_log_joint(numpyro_model, features, labels)
    rng = np.random.default_rng(args.seed + 1)
    point = families.MeanFieldGaussian(
        jnp.asarray(rng.normal(size=d) * 0.5, dtype),
        jnp.asarray(rng.normal(size=d) * 0.3 - 1, dtype),
    )
    key = jax.random.key(args.seed + 2)
    checks = []
    ours = posteriorlab_values(key, target, point, b, 400)
    ours_np = posteriorlab_values(jax.random.fold_in(key, 1), numpyro_target, point, b, 400)
    theirs = numpyro_values(
        jax.random.fold_in(key, 2),
        Trace_ELBO(num_particles=b),
        numpyro_model,
        numpyro_guide,
        {"loc": point.loc, "log_scale": point.log_scale},
        data,
        400,
    )
    checks.append(("ELBO: posteriorlab vs NumPyro Trace_ELBO", z_gap(ours, theirs)))
    checks.append(("ELBO: plain target vs numpyro_log_joint", z_gap(ours, ours_np)))
    gap = same_noise_gradient_gap(key, target, point, b, d, dtype)
    slab_target = SpikeSlab(features, labels)
    slab_point = SpikeSlabFamily(jnp.asarray(rng.normal(size=d), dtype), point.loc, point.log_scale)
    ours_slab = posteriorlab_values(jax.random.fold_in(key, 3), slab_target, slab_point, b, 400)
    theirs_slab = numpyro_values(
        jax.random.fold_in(key, 4),
        TraceGraph_ELBO(num_particles=b),
        numpyro_spike_slab_model,
        numpyro_spike_slab_guide,
        slab_point._asdict(),
        data,
        400,
    )
    checks.append(
        ("spike-slab ELBO: posteriorlab vs TraceGraph_ELBO", z_gap(ours_slab, theirs_slab))
    )
    print(f"Agreement at a fixed point (ELBO means over 400 batches; pass if |z| < {Z:g}):")
    for name, z in checks:
        print(f"  {name}: |z| = {z:.2f} {'ok' if z < Z else 'DISAGREE'}")
    tolerance = 1e-4 if dtype == jnp.float32 else 1e-10
    print(
        f"  gradient, posteriorlab vs plain JAX on the same noise: max relative gap {gap:.1e} "
        f"{'ok' if gap < tolerance else 'DISAGREE'}\n"
    )

    # ---- timing ---------------------------------------------------------------------
    start = families.MeanFieldGaussian.standard(d)
    start = start._replace(loc=start.loc.astype(dtype), log_scale=start.log_scale.astype(dtype))
    np_run, np_state, _ = make_numpyro(numpyro_model, numpyro_guide, Trace_ELBO(b), data, steps)
    slab_start = SpikeSlabFamily(jnp.zeros(d, dtype), jnp.zeros(d, dtype), jnp.zeros(d, dtype))
    slab_run, slab_state, _ = make_numpyro(
        numpyro_spike_slab_model, numpyro_spike_slab_guide, TraceGraph_ELBO(b), data, steps
    )
    runners = {
        "posteriorlab, plain target": make_posteriorlab(target, start, steps, b),
        "posteriorlab, numpyro_log_joint": make_posteriorlab(numpyro_target, start, steps, b),
        "plain JAX": make_plain(target, d, dtype, steps, b),
        "NumPyro SVI Trace_ELBO": (np_run, np_state),
        "posteriorlab REINFORCE": make_posteriorlab(slab_target, slab_start, steps, b),
        "NumPyro SVI TraceGraph_ELBO": (slab_run, slab_state),
    }
    results = time_interleaved(runners, args.repeats, args.seed + 10)
    per_step = {
        name: statistics.median(times) / steps * 1e6 for name, (times, _) in results.items()
    }
    print_table(
        ("estimator", "method", "median us/step", "min us/step", "1st call s"),
        [
            (
                "REINFORCE+reparam" if "REINFORCE" in name or "Graph" in name else "reparam",
                name,
                f"{per_step[name]:.1f}",
                f"{min(times) / steps * 1e6:.1f}",
                f"{compile_s:.2f}",
            )
            for name, (times, compile_s) in results.items()
        ],
    )
    pl, pl_np = per_step["posteriorlab, plain target"], per_step["posteriorlab, numpyro_log_joint"]
    reinforce = per_step["NumPyro SVI TraceGraph_ELBO"] / per_step["posteriorlab REINFORCE"]
    print("\nRatios of median times per step:")
    print_table(
        ("ratio", "value", "goal"),
        [
            (
                "posteriorlab / plain JAX",
                f"{pl / per_step['plain JAX']:.2f}",
                f"<= {GOAL_VS_PLAIN}",
            ),
            (
                "posteriorlab (numpyro_log_joint) / plain JAX",
                f"{pl_np / per_step['plain JAX']:.2f}",
                f"<= {GOAL_VS_PLAIN}",
            ),
            (
                "NumPyro Trace_ELBO / posteriorlab",
                f"{per_step['NumPyro SVI Trace_ELBO'] / pl:.2f}",
                "> 1",
            ),
            (
                "NumPyro TraceGraph_ELBO / posteriorlab REINFORCE",
                f"{reinforce:.2f}",
                "> 1",
            ),
        ],
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
