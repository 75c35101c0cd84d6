"""Binder, rehearsed on this machine: build the environment from binder/, serve, click.

The steps repo2docker takes, in a fresh virtual environment: ``pip install -r
binder/requirements.txt`` from the repository root, then ``binder/postBuild``; at launch
``binder/start jupyter lab``. The browser then opens the address a Binder link with
``urlpath`` leads to, and the lab must come up in the linked state, live (its websocket
runs through jupyter-server-proxy), as must the launcher tile and the landing page.

pip runs as repo2docker runs it, except that pip's cache is allowed (repo2docker passes
``--no-cache-dir``). Measured on a busy 2-core machine: the install 1–2 minutes, postBuild
(it compiles every lab's default programs) 2–4 minutes, the whole module about 9 minutes.
The timings of each run go to ``test-artifacts/binder-timings.json``.
"""

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import time
from typing import NamedTuple

import psutil
import pytest

from posteriorlab.jupyter_proxy import ICON, binder_link

from ..test_jupyter_proxy import binderhub_redirect
from .conftest import free_port, wait_for_http
from .test_smc_page import PAGE_TIMEOUT_MS, control, evidence_line, wait_for_change

pytestmark = [pytest.mark.ui, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 1800  # for a slow network: 1–2 minutes here
POSTBUILD_TIMEOUT_S = 900
TOKEN = secrets.token_hex(16)


class BinderEnvironment(NamedTuple):
    """The variables a launch of the fresh environment runs with, and the build's timings."""

    variables: dict
    seconds: dict


class JupyterServer(NamedTuple):
    url: str
    started: float  # time.monotonic() at launch


def install_variables(venv: pathlib.Path) -> dict:
    """This process's environment with the fresh venv first on PATH, and nothing that
    would let the proxied Bokeh server accept every websocket origin."""
    variables = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "BOKEH_ALLOW_WS_ORIGIN"}
        and not name.startswith("JUPYTER_")
    }
    return variables | {
        "PATH": f"{venv / 'bin'}{os.pathsep}{variables['PATH']}",
        "VIRTUAL_ENV": str(venv),
    }


def jupyter_folders(root: pathlib.Path) -> dict:
    """Jupyter's settings, data and runtime files in ``root``, none of this machine's."""
    return {
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_DATA_DIR": str(root / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
    }


def launch_variables(root: pathlib.Path, venv: pathlib.Path) -> dict:
    """As :func:`install_variables`, with Jupyter's and JAX's state in ``root``, as in a
    new Binder image (pip's cache stays where it was)."""
    return (
        install_variables(venv)
        | jupyter_folders(root / "jupyter")
        | {"XDG_CACHE_HOME": str(root / "cache")}  # JAX's compilation cache (cli.py)
    )


@pytest.fixture(scope="module")
def binder_environment(tmp_path_factory):
    root = tmp_path_factory.mktemp("binder")
    venv = root / "venv"
    seconds = {}
    try:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [venv / "bin" / "python", "-m", "pip", "install", "-q", "-r",
             "binder/requirements.txt"],
            cwd=ROOT, check=True, timeout=INSTALL_TIMEOUT_S, env=install_variables(venv),
        )  # fmt: skip
        seconds["venv_and_install"] = round(time.monotonic() - started, 1)
        variables = launch_variables(root, venv)
        started = time.monotonic()
        subprocess.run(
            [ROOT / "binder" / "postBuild"], cwd=ROOT, check=True,
            timeout=POSTBUILD_TIMEOUT_S, env=variables,
        )  # fmt: skip
        seconds["postBuild"] = round(time.monotonic() - started, 1)
        yield BinderEnvironment(variables, seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # over a gigabyte


def jupyter_lab_flags(port: int, token: str, root_dir) -> list[str]:
    """JupyterLab on localhost:``port``, no browser, login by ``token``, files in
    ``root_dir``."""
    return [
        "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
    ]  # fmt: skip


def stop_with_children(process: subprocess.Popen) -> None:
    """Stop a process and every process it started (the proxied lab server, kernels)."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.terminate()
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _, alive = psutil.wait_procs(children, timeout=20)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@pytest.fixture(scope="module")
def jupyter(binder_environment, tmp_path_factory, artifacts):
    """``binder/start jupyter lab`` from the fresh environment, as a Binder launch runs it."""
    port = free_port()
    log = (artifacts / "binder-jupyter.log").open("w")
    started = time.monotonic()
    process = subprocess.Popen(
        [
            ROOT / "binder" / "start", "jupyter", "lab",
            *jupyter_lab_flags(port, TOKEN, tmp_path_factory.mktemp("binder-home")),
        ],
        cwd=ROOT,
        env=binder_environment.variables,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    try:
        wait_for_http(f"{url}/api/status?token={TOKEN}", timeout=120)
        binder_environment.seconds["jupyter_start"] = round(time.monotonic() - started, 1)
        yield JupyterServer(url, started)
    finally:
        stop_with_children(process)
        log.close()
        (artifacts / "binder-timings.json").write_text(
            json.dumps(binder_environment.seconds, indent=2) + "\n"
        )


def test_a_binder_link_opens_the_lab_in_its_state_through_the_proxy(
    jupyter, binder_environment, page, artifacts
):
    link = binder_link("owner/posteriorlab", "smc", N=1000, seed=3)
    page.goto(binderhub_redirect(link, jupyter.url, TOKEN), timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("exact log Z (Kalman)").wait_for(timeout=PAGE_TIMEOUT_MS)
    binder_environment.seconds["jupyter_start_to_lab_interactive"] = round(
        time.monotonic() - jupyter.started, 1
    )
    assert page.url.startswith(f"{jupyter.url}/posteriorlab/smc?")
    particles = control(page, "Particles N")
    assert particles.input_value() == "1000"  # the state in the link reached the lab
    assert control(page, "Filter seed").input_value() == "3"
    assert page.locator("canvas").count() > 0
    page.screenshot(path=artifacts / "binder-smc.png", full_page=True)

    before = evidence_line(page)
    particles.fill("200")
    particles.press("Enter")
    wait_for_change(page, evidence_line, before, timeout=180)  # the websocket runs live
    page.wait_for_url("**N=200**", timeout=120_000)  # the address follows, later on a busy machine


def test_the_launcher_tile_opens_the_landing_page_and_its_links_work(
    jupyter, page, artifacts
):
    page.goto(f"{jupyter.url}/lab?token={TOKEN}", timeout=PAGE_TIMEOUT_MS)
    tile = page.locator(".jp-LauncherCard", has_text="posteriorlab")
    tile.wait_for(timeout=PAGE_TIMEOUT_MS)
    icon = page.request.get(jupyter.url + tile.locator("img").get_attribute("src"))
    assert icon.body() == ICON.read_bytes()  # the package's icon
    page.screenshot(path=artifacts / "binder-launcher.png")
    with page.context.expect_page() as opened:
        tile.click()
    landing = opened.value
    landing.get_by_text("Open the Variational inference lab").wait_for(timeout=PAGE_TIMEOUT_MS)
    assert landing.url == f"{jupyter.url}/posteriorlab/"
    landing.screenshot(path=artifacts / "binder-landing.png", full_page=True)
    landing.get_by_text("Open the Variational inference lab").click()
    landing.get_by_text("vs exact log p(x)").wait_for(timeout=PAGE_TIMEOUT_MS)
    assert landing.url.startswith(f"{jupyter.url}/posteriorlab/vi")
