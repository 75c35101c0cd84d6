"""The layer rules of the design, checked by reading the source.

Imports point down only: notebooks -> dashboards / widgets -> labs, plots -> core. The
core stays pure JAX so that it runs anywhere (tests, notebooks, benchmarks) without a
UI stack.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "posteriorlab"

UI_LIBRARIES = {"param", "panel", "holoviews", "bokeh", "ipywidgets", "IPython", "matplotlib"}

# For each layer: the top-level modules and the posteriorlab sub-packages it may not import.
FORBIDDEN = {
    "core": UI_LIBRARIES
    | {
        "tqdm",
        "posteriorlab.labs",
        "posteriorlab.plots",
        "posteriorlab.dashboards",
        "posteriorlab.cli",
    },
    "plots": {
        "param",
        "panel",
        "ipywidgets",
        "posteriorlab.labs",
        "posteriorlab.dashboards",
        "posteriorlab.cli",
    },
    "labs": {
        "panel",
        "holoviews",
        "bokeh",
        "ipywidgets",
        "posteriorlab.plots",
        "posteriorlab.dashboards",
        "posteriorlab.cli",
    },
    # The served pages use the Panel side of the widgets, never the Jupyter one.
    "dashboards": {
        "ipywidgets",
        "anywidget",
        "posteriorlab_widgets.jupyter_widget",
        "posteriorlab.cli",
    },
}


def imported_modules(path: pathlib.Path, source_root=SOURCE.parent) -> list[tuple[int, str]]:
    """Every absolute module name imported by a file, with its line number."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(source_root).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # resolve a relative import against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.append((node.lineno, module))
    return names


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in forbidden)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer):
    files = sorted((SOURCE / layer).rglob("*.py"))
    assert files, f"layer {layer} has no source files"
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if violates(module, FORBIDDEN[layer])
    ]
    assert not offences, "upward or UI import in a lower layer:\n" + "\n".join(offences)


def test_checker_catches_a_violation(tmp_path):
    """The rule check itself works: a core file importing panel is flagged."""
    bad = tmp_path / "posteriorlab" / "core" / "probe.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import jax\nimport panel as pn\nfrom ..labs import smc\n")
    found = [m for _, m in imported_modules(bad, tmp_path) if violates(m, FORBIDDEN["core"])]
    assert found == ["panel", "posteriorlab.labs"]


def test_importing_the_package_loads_no_ui_library():
    import subprocess
    import sys

    code = (
        "import sys, posteriorlab, posteriorlab.core.smc, posteriorlab.labs; "
        "ui = ('panel', 'holoviews', 'bokeh', 'ipywidgets'); "
        "print(sorted(m for m in ui if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_the_app_does_not_start_jax():
    """``posteriorlab serve --num-procs 2`` forks after importing every lab: if an import
    ran a JAX computation, XLA's threads would be running in the parent and the forked
    server processes would hang on their first lab page."""
    check = (
        "import posteriorlab.cli, posteriorlab.dashboards.app\n"
        "from jax._src import xla_bridge\n"
        "posteriorlab.cli.enable_compilation_cache()\n"
        "assert not xla_bridge._backends, 'a module computes with JAX at import'\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=120)
