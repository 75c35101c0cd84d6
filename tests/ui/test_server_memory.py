"""A served class leaves nothing behind: 200 pages opened and closed, memory stays flat.

Each page a student opens builds a lab, a dashboard and their figures in the server;
closing the tab must free them. Here 200 pages (cycling through the landing page and
every lab) are opened and closed over the websocket protocol a browser uses
(``bench/sessions.py``), with the server discarding a closed page's session after one
second instead of fifteen. The server's resident memory after the 200 must be within
10 % of its level after the first 10, once those have been discarded: by then every
program is compiled and cached, so what grows after that is what sessions leave behind.
The two levels are written to ``test-artifacts/server-memory.json``.
"""

import gc
import json
import pathlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tests.ui.conftest import free_port, wait_for_http

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
from sessions import build_pages, open_and_close, register_panel_models  # noqa: E402

pytestmark = [pytest.mark.slow]

# Small sizes: what a closed page leaves behind is its page objects (widgets, figures,
# the lab), whatever the sizes; small ones keep the 200 pages quick.
PAGES = ["/", "/smc?N=100&T=20", "/paths?trajectories=100&steps=10", "/vi", "/transformer?N=100"]
SESSION_LIFETIME_MS = 1000
SERVER = (
    "from posteriorlab import cli; cli.enable_compilation_cache(); "
    "from posteriorlab.dashboards import app; "
    "app.serve(port={port}, address='localhost', websocket_origin=None, warmup=False, "
    f"unused_session_lifetime_milliseconds={SESSION_LIFETIME_MS}, "
    "check_unused_sessions_milliseconds=500)"
)


def open_pages(url: str, count: int, start: int) -> None:
    """Open and close ``count`` pages, two at a time (one server, two client threads)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = [PAGES[(start + index) % len(PAGES)] for index in range(count)]
        list(pool.map(lambda path: open_and_close(url, path), paths))


def settled_memory_mb(process: psutil.Process) -> float:
    """Resident memory once closed sessions have been discarded (their lifetime, twice)."""
    time.sleep(3 * SESSION_LIFETIME_MS / 1000)
    gc.collect()
    return process.memory_info().rss / 2**20


def test_two_hundred_sessions_leave_memory_within_ten_percent(artifacts):
    register_panel_models()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(port=port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://localhost:{port}"
    try:
        wait_for_http(url + "/", timeout=120)
        process = psutil.Process(server.pid)
        build_pages(url, PAGES)  # compile every lab's programs before counting
        open_pages(url, 10, start=0)
        baseline = settled_memory_mb(process)
        open_pages(url, 190, start=10)
        after = settled_memory_mb(process)
        assert server.poll() is None, "the server died while pages were opened"
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    growth = after / baseline - 1
    figures = {"after_10_mb": round(baseline), "after_200_mb": round(after),
               "growth_percent": round(100 * growth, 1)}  # fmt: skip
    (artifacts / "server-memory.json").write_text(json.dumps(figures))
    assert growth < 0.10, (
        f"server memory grew {100 * growth:.1f} % over 190 sessions "
        f"({baseline:.0f} MB after 10, {after:.0f} MB after 200); stderr tail: {errors[-2000:]}"
    )
