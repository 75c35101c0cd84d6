"""Command line: ``posteriorlab serve`` starts the multi-page Panel server.

Examples
--------
``posteriorlab serve``                      the landing page and every lab on localhost:5006
``posteriorlab serve --port 8000 --show``   another port, and open a browser tab
``posteriorlab serve --num-procs 2``        one server process per core
"""

import argparse
import os
import pathlib


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
    return parser


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


if __name__ == "__main__":
    main()
