"""A class on one server: latency, CPU and memory of ``posteriorlab serve`` under load.

Starts ``posteriorlab serve`` on a free localhost port and opens S simulated student
sessions on one lab at once (websocket clients, :mod:`sessions`), as a class does when the
lecturer shares the link, once the server is idle (its background warm-up of the other
labs has finished, as it has before a class). Once every page is open, each student
changes the lab's seed once every ``--period`` seconds for ``--duration`` seconds, at the
lab's default sizes, the students' changes spread evenly over the period. For S = 1, 10 and 30
(``--sessions``) and for ``--num-procs`` 1 and 2 it reports

* how long the pages took to open (median and slowest): the server builds them one at a
  time, so the last student of a class waits for all the others' pages;
* the latency from a change to its figures arriving (p50 / p95 / max), and to the last
  figure data of that change (the SMC lab's replicates come in a second message);
* how many changes were answered, how many were superseded by a newer change from the
  same student before the server reached them (their work was skipped, not queued), and
  how many were never answered;
* the server's CPU (percent of one core, summed over its processes) and memory (resident
  set, summed), sampled every second.

Everything stops by itself: each run lasts the opening of the pages, ``--duration``, and at most
``--drain`` seconds, and the server is stopped after each configuration.

Usage::

    python bench/load.py                          # SMC lab, 1/10/30 sessions, 1 and 2 procs
    python bench/load.py --lab transformer --sessions 30 --num-procs 1 --duration 30

The clients share this machine's two cores with the server; their own CPU is printed
too, so a reader can see how much of the machine the measurement itself took.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(__file__))
from sessions import (
    LAB_CONTROLS,
    StudentSession,
    build_pages,
    open_and_close,
    register_panel_models,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def start_server(port: int, num_procs: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "posteriorlab.cli", "serve", "--port", str(port),
               "--num-procs", str(num_procs)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_server(process: subprocess.Popen) -> None:
    for child in psutil.Process(process.pid).children(recursive=True):
        child.terminate()
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


class ResourceSampler(threading.Thread):
    """Samples the CPU percent and resident memory of a process tree once a second."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.cpu: list[float] = []
        self.memory_mb: list[float] = []
        self._known: dict[int, psutil.Process] = {}
        self._finish = threading.Event()

    def _tree(self):
        """The server and its forked processes, the same objects each time: a process's
        CPU percent is measured since the previous call on that object."""
        for child in self.root.children(recursive=True):
            self._known.setdefault(child.pid, child)
        return [self.root, *self._known.values()]

    def run(self) -> None:
        for process in self._tree():
            process.cpu_percent(None)
        while not self._finish.wait(1.0):
            processes = self._tree()
            self.cpu.append(sum(p.cpu_percent(None) for p in processes))
            self.memory_mb.append(sum(p.memory_info().rss for p in processes) / 2**20)

    def stop(self) -> None:
        self._finish.set()
        self.join()


def wait_until_idle(pid: int, *, below: float = 10.0, timeout: float = 600.0) -> None:
    """Wait until the server's processes use under ``below`` percent of a core for two
    seconds running (its warm-up compiles every lab's programs in the background)."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for process in processes:
        process.cpu_percent(None)
    quiet, deadline = 0, time.monotonic() + timeout
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(1.0)
        quiet = quiet + 1 if sum(p.cpu_percent(None) for p in processes) < below else 0


def percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "      —      —      —"
    ms = np.asarray(seconds) * 1000
    return f"{np.percentile(ms, 50):6.0f} {np.percentile(ms, 95):6.0f} {ms.max():6.0f}"


def run_configuration(lab: str, num_sessions: int, num_procs: int, duration: float,
                      period: float, drain: float) -> dict:  # fmt: skip
    port = free_port()
    url = f"http://localhost:{port}"
    server = start_server(port, num_procs)
    try:
        wait_for_http(url + "/")
        control = LAB_CONTROLS[lab]
        for _ in range(2 * num_procs):  # every process compiles (or reads its cache) first
            build_pages(url, [control.path])
            open_and_close(url, control.path)
        wait_until_idle(server.pid)  # the other labs' warm-up has finished, as before a class
        sampler = ResourceSampler(server.pid)
        sampler.start()
        client_cpu_start = psutil.Process().cpu_times()
        class_opened = threading.Barrier(num_sessions)
        sessions = [
            StudentSession(url, control, duration=duration, period=period,
                           first_value=1 + 100_000 * index, drain=drain,
                           start_delay=index * period / num_sessions, class_opened=class_opened)
            for index in range(num_sessions)
        ]  # fmt: skip
        for session in sessions:
            session.start()
        for session in sessions:
            session.join(timeout=duration + drain + 60)
        client_cpu_end = psutil.Process().cpu_times()
        sampler.stop()
    finally:
        stop_server(server)
    changes = [change for session in sessions for change in session.changes]
    applied = [c.applied - c.sent for c in changes if c.applied is not None]
    finished = [c.finished - c.sent for c in changes if c.finished is not None]
    # A change is superseded when a later one of the same student was answered instead.
    superseded = 0
    unanswered = 0
    for session in sessions:
        answered = [c.value for c in session.changes if c.applied is not None]
        newest = max(answered, default=-1)
        for c in session.changes:
            if c.applied is None:
                superseded += c.value < newest
                unanswered += c.value > newest
    client_seconds = (client_cpu_end.user + client_cpu_end.system) - (
        client_cpu_start.user + client_cpu_start.system
    )
    wall = duration + drain
    return dict(
        lab=lab,
        sessions=num_sessions,
        procs=num_procs,
        sent=len(changes),
        answered=len(applied),
        superseded=superseded,
        unanswered=unanswered,
        applied=applied,
        finished=finished,
        opened=[s.open_seconds for s in sessions if s.open_seconds is not None],
        errors=[s.error for s in sessions if s.error],
        cpu=statistics.median(sampler.cpu) if sampler.cpu else float("nan"),
        memory=max(sampler.memory_mb) if sampler.memory_mb else float("nan"),
        client_cpu=100 * client_seconds / wall,
    )


def print_row(row: dict) -> None:
    opened = row["opened"]
    opening = f"{np.median(opened):5.1f} {max(opened):5.1f}" if opened else "    —     —"
    print(
        f"{row['sessions']:>4} {row['procs']:>5}  {opening}  {percentiles(row['applied'])}  "
        f"{percentiles(row['finished'])}  {row['sent']:>5} {row['answered']:>5} "
        f"{row['superseded']:>5} {row['unanswered']:>5}  {row['cpu']:5.0f} "
        f"{row['memory']:7.0f}  {row['client_cpu']:5.0f}"
        + (f"  errors: {row['errors'][:2]}" if row["errors"] else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", choices=sorted(LAB_CONTROLS), default="smc")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--num-procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of changes")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between changes")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="seconds allowed after the last change for its answer")
    args = parser.parse_args()
    if args.duration > 600 or max(args.sessions) > 200:
        parser.error("keep --duration ≤ 600 s and --sessions ≤ 200 (the run must stay bounded)")
    register_panel_models()
    print(f"lab {args.lab}: each session changes its seed every {args.period:g} s for "
          f"{args.duration:g} s; latency in ms from the change")  # fmt: skip
    print(
        "sess procs open p50 max(s)  figures p50 p95   max  all data p50 p95   max   sent  "
        "ans.  supd. lost   cpu% mem(MB) client%"
    )
    for num_procs in args.num_procs:
        for num_sessions in args.sessions:
            print_row(run_configuration(args.lab, num_sessions, num_procs, args.duration,
                                        args.period, args.drain))  # fmt: skip


if __name__ == "__main__":
    main()
