"""``posteriorlab serve --num-procs 2``: two forked server processes both serve labs.

Bokeh binds the port and then forks; each process runs its own pages, so a class's
sessions spread over both cores. The parent must not have started JAX before the fork
(see ``test_architecture.test_importing_the_app_does_not_start_jax``), or the children
hang on their first lab page.
"""

import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil

from tests.ui.conftest import free_port, wait_for_http

LAB_TITLES = {"smc": "Sequential Monte Carlo", "vi": "Variational inference"}


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=240) as response:
        assert response.status == 200
        return response.read().decode()


def test_two_processes_each_serve_lab_pages():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "posteriorlab.cli", "serve", "--port", str(port),
         "--num-procs", "2", "--no-warmup"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://localhost:{port}"
    try:
        wait_for_http(base + "/", timeout=120)
        children = psutil.Process(process.pid).children()
        assert len(children) == 2, f"expected 2 server processes, found {len(children)}"
        before = [child.cpu_times().user for child in children]
        # Four lab pages at once: a process busy building one does not accept the next,
        # so both processes build pages.
        names = ["smc", "vi", "smc", "vi"]
        with ThreadPoolExecutor(len(names)) as pool:
            pages = list(pool.map(_get, [f"{base}/{name}" for name in names]))
        for name, html in zip(names, pages, strict=True):
            assert f"posteriorlab · {LAB_TITLES[name]}" in html
        after = [child.cpu_times().user for child in children]
        worked = [end - start for start, end in zip(before, after, strict=True)]
        assert all(seconds > 1.0 for seconds in worked), f"CPU seconds per process: {worked}"
    finally:
        # Bokeh's forking parent only waits on its children: stop them as well.
        for child in psutil.Process(process.pid).children():
            child.terminate()
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "os.fork() was called" not in output, output


def test_the_forked_processes_stop_when_their_parent_is_killed():
    """A SIGTERM to the parent alone (``kill PID``) stops the whole server: its forked
    children do not go on holding the port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "posteriorlab.cli", "serve", "--port", str(port),
         "--num-procs", "2", "--no-warmup"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_http(f"http://localhost:{port}/", timeout=120)
        children = psutil.Process(process.pid).children()
        assert len(children) == 2
    finally:
        process.terminate()  # the parent only
        process.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=15)
    for child in alive:
        child.kill()
    assert not alive, f"{len(alive)} server processes outlived their parent"
