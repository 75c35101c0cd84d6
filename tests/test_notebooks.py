"""Every teaching notebook runs top to bottom (with small sizes), is stored without
outputs, and ends with its lab's dashboard rendered inline."""

import ast
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# What a Panel object displays as in a notebook (besides its HTML): Panel's frontend
# extension, loaded by `pn.extension()`, turns it into live Bokeh models.
PANEL_MIMETYPE = "application/vnd.holoviews_exec.v0+json"


def calls(tree: ast.AST) -> list[str]:
    """The dotted names of every function called in ``tree`` (``pn.extension``, ...)."""
    return [ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)]


def displayed_call(tree: ast.Module) -> str | None:
    """The function whose result a cell displays: its last statement, if a call."""
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
        return ast.unparse(last.value.func)
    return None


def last_section(notebook) -> list:
    """The code cells after the notebook's last ``## `` heading."""
    headings = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "markdown" and cell.source.startswith("## ")
    ]
    start = headings[-1] if headings else 0
    return [cell for cell in notebook.cells[start:] if cell.cell_type == "code"]


def dashboard_cells(notebook) -> list:
    """The code cells that display a dashboard (their last line is ``...Dashboard(...)``)."""
    return [
        cell
        for cell in notebook.cells
        if cell.cell_type == "code"
        and (displayed_call(ast.parse(cell.source)) or "").endswith("Dashboard")
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_ends_with_its_dashboard_inline(path):
    notebook = nbformat.read(path, as_version=4)
    shown = dashboard_cells(notebook)
    assert shown, "no cell ends by displaying a dashboard, e.g. `SMCDashboard(lab=lab)`"
    assert all(cell in last_section(notebook) for cell in shown)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    up_to_the_dashboard = code[: code.index(shown[0]) + 1]
    assert any("pn.extension" in calls(ast.parse(cell.source)) for cell in up_to_the_dashboard)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("POSTERIORLAB_SMALL", "1")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    # Each dashboard cell displayed a Panel object, for Panel's extension to render live.
    for cell in dashboard_cells(notebook):
        assert any(PANEL_MIMETYPE in output.get("data", {}) for output in cell.outputs)
