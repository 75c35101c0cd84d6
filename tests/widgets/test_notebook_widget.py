"""The Jupyter widget in a real kernel: a notebook cell makes it, loads a trajectory and
displays it; the kernel's comm messages carry the trajectory as a binary buffer."""

import nbformat
import pytest
from nbclient import NotebookClient

pytest.importorskip("anywidget")

CELLS = [
    """\
import numpy as np
from posteriorlab_widgets import TrajectoryPlayerWidget, pack_trajectory

positions = np.random.default_rng(0).normal(size=(30, 200, 2))
widget = TrajectoryPlayerWidget(speed=20.0)
widget.load(positions, x_label="x₁", y_label="x₂")
widget""",
    """\
assert widget.trajectory == pack_trajectory(positions)
print(len(widget.trajectory), widget.speed, widget.x_label, widget.y_label, widget.playing)""",
]


@pytest.fixture(scope="module")
def executed():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    return notebook


def test_a_cell_displays_the_widget(executed):
    outputs = executed.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_the_traits_hold_what_the_cell_set(executed):
    printed = executed.cells[1].outputs[0].text.split()
    assert printed == [str(32 + 30 * 200 * 8), "20.0", "x₁", "x₂", "False"]


def test_the_trajectory_travelled_as_a_binary_buffer(executed):
    states = executed.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    players = [state for state in states.values() if state["state"].get("x_label") == "x₁"]
    assert len(players) == 1
    assert [buffer["path"] for buffer in players[0]["buffers"]] == [["trajectory"]]
