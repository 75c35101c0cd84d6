"""Command line: ``posteriorlab serve`` starts the multi-page Panel server.

Examples
--------
``posteriorlab serve``                      the landing page and every lab on localhost:5006
``posteriorlab serve --port 8000 --show``   another port, and open a browser tab
``posteriorlab serve --num-procs 2``        one server process per core
``posteriorlab train-transformer --steps 2000 --output dt.eqx``
                                            train a distribution transformer from simulation
``posteriorlab train-transformer --resume --steps 4000 --output dt.eqx``
                                            continue that run from its last checkpoint
``posteriorlab train-transformer --task norm --output norm.eqx``
                                            a network for y = ||x|| + noise
"""

import argparse
import math
import os
import pathlib
import shlex
import sys
import time

LIKELIHOOD_CHOICES = ("linear_gaussian", "norm")
"""``--task`` values; the same names as posteriorlab.core.transformer.likelihoods.LIKELIHOODS
(spelled out here so that ``--help`` does not import JAX)."""


def compilation_cache_dir() -> pathlib.Path:
    """Where compiled XLA programs are kept between server starts (per user, never shared)."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "posteriorlab" / "jax"


def enable_compilation_cache() -> None:
    """Turn on JAX's persistent cache so a second start skips most compilation."""
    import jax

    path = compilation_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posteriorlab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the landing page and every lab")
    serve.add_argument("--port", type=int, default=5006, help="port to listen on (default 5006)")
    serve.add_argument("--address", default="localhost", help="address to bind (default localhost)")
    serve.add_argument("--num-procs", type=int, default=1, help="server processes (default 1)")
    serve.add_argument("--num-threads", type=int, default=None,
                       help="threads per process that handle page changes (default: one per core)")
    serve.add_argument(
        "--allow-websocket-origin",
        action="append",
        default=None,
        metavar="HOST[:PORT]",
        help="extra origins allowed to open the websocket (repeatable), e.g. behind a proxy",
    )
    serve.add_argument("--prefix", default="", help="URL prefix, e.g. when served behind a proxy")
    serve.add_argument("--show", action="store_true", help="open the landing page in a browser")
    serve.add_argument(
        "--no-warmup", action="store_true", help="skip compiling the default lab sizes at start"
    )
    add_train_transformer_parser(commands)
    return parser


def add_train_transformer_parser(commands) -> None:
    train = commands.add_parser(
        "train-transformer",
        help="train a distribution transformer on simulated problems",
        description=(
            "Train a distribution transformer (posteriorlab.core.transformer) by amortised "
            "neural posterior estimation on fresh simulated problems every step, for one "
            "likelihood (--task). Writes the "
            "weights to OUTPUT, their config and training record to OUTPUT with suffix "
            ".json, and a resumable checkpoint to OUTPUT with suffix .state.eqx."
        ),
    )
    train.add_argument("--output", type=pathlib.Path, default=pathlib.Path("transformer.eqx"),
                       help="weights file to write (default transformer.eqx)")
    train.add_argument("--task", choices=LIKELIHOOD_CHOICES, default="linear_gaussian",
                       help="the likelihood the network learns to invert: linear_gaussian, "
                       "y = a.x + noise (default), or norm, y = ||x|| + noise")
    train.add_argument("--steps", type=int, default=2000,
                       help="total optimisation steps, counting any already taken (default 2000)")
    train.add_argument("--batch-size", type=int, default=256, help="problems per step")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation and data")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="peak AdamW step size")
    train.add_argument("--warmup-steps", type=int, default=200, help="linear warm-up steps")
    train.add_argument("--decay-steps", type=int, default=None,
                       help="length of the cosine schedule (default: --steps; with --resume, "
                       "the checkpoint's unless given)")
    train.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    train.add_argument("--d-model", type=int, default=64, help="token width")
    train.add_argument("--num-heads", type=int, default=4, help="attention heads")
    train.add_argument("--num-layers", type=int, default=4, help="transformer layers")
    train.add_argument("--ffn-width", type=int, default=128, help="feed-forward hidden units")
    train.add_argument("--embedding-width", type=int, default=64,
                       help="hidden units of the (de-)embedding MLPs")
    train.add_argument("--max-components", type=int, default=4,
                       help="mixture components K the network takes (default 4)")
    train.add_argument("--max-observations", type=int, default=20,
                       help="scalar observations the network takes (default 20)")
    train.add_argument("--checkpoint-every", type=int, default=500,
                       help="write a checkpoint every N steps (and at the end)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the checkpoint at --output (its configs are reused, "
                       "except --steps and --decay-steps)")
    train.add_argument("--eval-problems", type=int, default=4096,
                       help="held-out problems scored against the exact posterior at the end "
                       "(0 to skip)")
    train.add_argument("--eval-seed", type=int, default=2_147_483_647,
                       help="seed of the held-out problems (never used for training)")
    train.add_argument("--report-every", type=int, default=50,
                       help="print progress to stderr every N steps")


def _training_configs(args):
    from posteriorlab.core.transformer.model import ModelConfig
    from posteriorlab.core.transformer.training import TrainingConfig

    model_config = ModelConfig(
        d_model=args.d_model,
        num_heads=args.num_heads,
        num_layers=args.num_layers,
        ffn_width=args.ffn_width,
        embedding_width=args.embedding_width,
        max_components=args.max_components,
        max_observations=args.max_observations,
        likelihood=args.task,
    )
    training_config = TrainingConfig(
        batch_size=args.batch_size,
        peak_learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        decay_steps=args.decay_steps if args.decay_steps is not None else args.steps,
        weight_decay=args.weight_decay,
    )
    return model_config, training_config


def train_transformer(args: argparse.Namespace) -> None:
    import jax

    from posteriorlab.core.transformer import checkpoints, evaluation
    from posteriorlab.core.transformer.model import DistributionTransformer
    from posteriorlab.core.transformer.training import init_training, train_step

    if args.steps < 0 or args.checkpoint_every < 1 or args.report_every < 1:
        sys.exit(
            f"error: --steps must be >= 0 and --checkpoint-every, --report-every >= 1 "
            f"(got {args.steps}, {args.checkpoint_every}, {args.report_every})"
        )
    command = shlex.join(["posteriorlab", *sys.argv[1:]])
    if args.resume:
        try:
            state, record = checkpoints.load_checkpoint(args.output)
        except FileNotFoundError as error:
            sys.exit(f"error: {error}")
        training_config = checkpoints.training_config_from_dict(record["training_config"])
        if args.decay_steps is not None:  # a longer (or shorter) cosine from here on
            training_config = training_config._replace(decay_steps=args.decay_steps)
            record["training_config"] = checkpoints.training_config_to_dict(training_config)
        model_config = state.model.config
        seed = record["seed"]
        record["commands"] = [*record.get("commands", []), command]
        record.pop("held_out", None)  # measured on older weights
        wall_time = record.get("wall_time_s", 0.0)
        if int(state.step) > args.steps:
            sys.exit(f"error: the checkpoint is at step {int(state.step)}, past --steps "
                     f"{args.steps}; ask for more steps to continue")
    else:
        model_config, training_config = _training_configs(args)
        seed = args.seed
        key_init, _ = jax.random.split(jax.random.key(seed))
        state = init_training(DistributionTransformer(key_init, model_config), training_config)
        record = {
            "training_config": checkpoints.training_config_to_dict(training_config),
            "seed": seed,
            "commands": [command],
        }
        wall_time = 0.0
    _, key_data = jax.random.split(jax.random.key(seed))

    def save():
        record["steps"] = int(state.step)
        record["wall_time_s"] = round(wall_time + time.perf_counter() - started, 1)
        checkpoints.save_checkpoint(args.output, state, record)

    started = time.perf_counter()
    first = int(state.step)
    for step in range(first, args.steps):
        state, info = train_step(key_data, state, model_config, training_config)
        done = step + 1
        if done % args.report_every == 0 or done == args.steps:
            elapsed = time.perf_counter() - started
            gap = float(info.log_density_gap)
            gap_text = f"  gap to exact {gap:.4f} nats" if math.isfinite(gap) else ""
            sys.stderr.write(
                f"step {done}/{args.steps}  loss {float(info.loss):.4f}{gap_text}  "
                f"lr {float(info.learning_rate):.2e}  {elapsed / (done - first):.3f} s/step\n"
            )
            sys.stderr.flush()
        if done % args.checkpoint_every == 0:
            save()
    if args.eval_problems > 0:
        result = evaluation.evaluate(
            jax.random.key(args.eval_seed),
            state.model,
            training_config.meta_prior,
            num_problems=args.eval_problems,
        )
        record["held_out"] = {**result._asdict(), "eval_seed": args.eval_seed}
        sys.stderr.write(
            f"held-out: E[log p_exact - log q] = {result.mean_log_density_gap:.4f} "
            f"+- {result.standard_error:.4f} (s.e.) nats over {result.num_problems} problems\n"
        )
    save()


def serve(args: argparse.Namespace) -> None:
    enable_compilation_cache()
    from posteriorlab.dashboards import app

    origins = list(args.allow_websocket_origin or [])
    origins.append(f"{args.address}:{args.port}")
    if args.address in ("localhost", "127.0.0.1"):
        origins += [f"localhost:{args.port}", f"127.0.0.1:{args.port}"]
    app.serve(
        port=args.port,
        address=args.address,
        websocket_origin=sorted(set(origins)),
        num_procs=args.num_procs,
        num_threads=args.num_threads,
        prefix=args.prefix,
        show=args.show,
        warmup=not args.no_warmup,
    )


def main(argv: list[str] | None = None) -> None:
    # One BLAS thread per process: the compiled programs call small LAPACK kernels every
    # step, and a multi-threaded BLAS on a busy 2-core machine spends its time waiting.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        serve(args)
    elif args.command == "train-transformer":
        train_transformer(args)


if __name__ == "__main__":
    main()
