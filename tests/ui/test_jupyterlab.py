"""A lab inline in JupyterLab, in headless Chromium.

A two-cell notebook builds the SMC lab and shows its dashboard (``pn.extension`` renders
it in the output); the second cell sets a parameter of the same lab object from code, and
the rendered widgets and numbers must follow: one ``param`` object drives both, exactly
as in a served page.
"""

import os
import subprocess
import sys

import nbformat
import pytest

from .conftest import free_port, wait_for_http
from .test_binder import jupyter_folders, jupyter_lab_flags, stop_with_children
from .test_smc_page import PAGE_TIMEOUT_MS, control, evidence_line, wait_for_change

pytestmark = pytest.mark.ui

TOKEN = "posteriorlab-jupyterlab-test"
DASHBOARD_CELL = """\
import panel as pn

from posteriorlab.dashboards.smc import SMCDashboard
from posteriorlab.labs.smc import SMCLab

pn.extension()
lab = SMCLab(num_particles=100, num_steps=20, replicates=20)
SMCDashboard(lab=lab)"""
CHANGE_CELL = "lab.num_particles = 200"


def particle_count(page) -> str:
    return control(page.locator(".jp-OutputArea"), "Particles N").input_value()


def write_notebook(path) -> None:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(DASHBOARD_CELL), nbformat.v4.new_code_cell(CHANGE_CELL)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory, artifacts):
    """``jupyter lab`` of this environment on a free port, serving a fresh folder with
    ``lab.ipynb`` in it, Jupyter's settings and state in that folder too."""
    home = tmp_path_factory.mktemp("jupyterlab")
    write_notebook(home / "lab.ipynb")
    variables = {
        name: value for name, value in os.environ.items() if not name.startswith("JUPYTER_")
    }
    # pn.extension() loads BokehJS and Panel's JavaScript from cdn.bokeh.org and
    # cdn.holoviz.org, out of reach here; inline, they come with the output instead.
    variables |= jupyter_folders(home / ".jupyter") | {"PANEL_INLINE": "1"}
    port = free_port()
    log = (artifacts / "jupyterlab.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", *jupyter_lab_flags(port, TOKEN, home),
        ],
        env=variables,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    try:
        wait_for_http(f"{url}/api/status?token={TOKEN}", timeout=120)
        yield url
    finally:
        stop_with_children(process)  # the server and the notebook's kernel
        log.close()


def test_the_dashboard_renders_inline_and_follows_the_lab(jupyterlab, page, artifacts):
    page.goto(f"{jupyterlab}/lab/tree/lab.ipynb?token={TOKEN}", timeout=PAGE_TIMEOUT_MS)
    # A cell run before the kernel's websocket is up can stay queued for ever.
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")  # run the dashboard cell; the next one is selected

    output = page.locator(".jp-Cell").first.locator(".jp-OutputArea")
    output.get_by_text("exact log Z (Kalman)").wait_for(timeout=PAGE_TIMEOUT_MS)
    assert control(output, "Particles N").input_value() == "100"
    assert output.locator("canvas").count() > 0
    before = evidence_line(page)
    page.screenshot(path=artifacts / "jupyterlab-smc.png", full_page=True)

    page.keyboard.press("Shift+Enter")  # run `lab.num_particles = 200`
    wait_for_change(page, particle_count, "100", timeout=120)
    assert particle_count(page) == "200"
    wait_for_change(page, evidence_line, before, timeout=120)  # recomputed, redrawn
    page.get_by_text("log-evidence").first.scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "jupyterlab-smc-after.png", full_page=True)
