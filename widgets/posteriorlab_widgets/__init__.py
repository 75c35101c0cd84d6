"""Browser-side widgets shared by JupyterLab and Panel.

The trajectory player is one ES module (``trajectory_player.js``) with two thin Python
wrappers: :class:`TrajectoryPlayer` for Panel and :class:`TrajectoryPlayerWidget` for
Jupyter. Each imports only its own framework, so a Panel server never needs anywidget
(the Jupyter class is imported on first use).
"""

from posteriorlab_widgets.trajectory import pack_trajectory

__all__ = ["TrajectoryPlayer", "TrajectoryPlayerWidget", "pack_trajectory"]

_LAZY = {
    "TrajectoryPlayer": "posteriorlab_widgets.panel_component",
    "TrajectoryPlayerWidget": "posteriorlab_widgets.jupyter_widget",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'posteriorlab_widgets' has no attribute {name!r}")
