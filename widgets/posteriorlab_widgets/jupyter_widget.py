"""The trajectory player as a Jupyter widget (anywidget), for notebooks.

:class:`TrajectoryPlayerWidget` runs the same ES module as the Panel component. Its
message is a ``traitlets.Bytes`` trait, which ipywidgets sends as a binary buffer of the
comm message (never as JSON text).
"""

import anywidget
import traitlets

from posteriorlab_widgets.files import PLAYER_CSS, PLAYER_ESM
from posteriorlab_widgets.trajectory import DEFAULTS, pack_trajectory


class TrajectoryPlayerWidget(anywidget.AnyWidget):
    """Plays a particle trajectory in the notebook: play / pause, scrub, speed, trails.

    Examples
    --------
    >>> widget = TrajectoryPlayerWidget(x_label="x₁", y_label="x₂")
    >>> widget.load(positions, weights=weights, ancestors=ancestors)  # doctest: +SKIP
    >>> widget  # doctest: +SKIP
    """

    _esm = PLAYER_ESM
    _css = PLAYER_CSS

    trajectory = traitlets.Bytes(b"", help="The packed message (see pack_trajectory).").tag(
        sync=True
    )
    playing = traitlets.Bool(False, help="Whether the animation is running.").tag(sync=True)
    speed = traitlets.Float(DEFAULTS.speed, min=0, help="Steps per second.").tag(sync=True)
    trail_seconds = traitlets.Float(
        DEFAULTS.trail_seconds,
        min=0,
        help="Time for a trail to fade to 1/e of its darkness (0: no trails).",
    ).tag(sync=True)
    loop = traitlets.Bool(DEFAULTS.loop, help="Start again after the last step.").tag(sync=True)
    x_label = traitlets.Unicode("", help="Label of the horizontal axis.").tag(sync=True)
    y_label = traitlets.Unicode("", help="Label of the vertical axis.").tag(sync=True)
    equal_aspect = traitlets.Bool(
        DEFAULTS.equal_aspect, help="Give a unit of x and of y the same length."
    ).tag(sync=True)
    canvas_height = traitlets.Int(DEFAULTS.canvas_height, min=100).tag(sync=True)

    def load(
        self, positions, weights=None, ancestors=None, times=None, bounds=None, **settings
    ) -> None:
        """Send a new trajectory (see :func:`pack_trajectory`) and change any of the
        widget's ``settings`` (e.g. ``x_label``), in one comm message."""
        unknown = sorted(name for name in settings if not self.has_trait(name))
        if unknown:
            raise TypeError(f"TrajectoryPlayerWidget has no setting {', '.join(unknown)}.")
        message = pack_trajectory(positions, weights, ancestors, times, bounds)
        with self.hold_sync():
            self.trajectory = message
            for name, value in settings.items():
                setattr(self, name, value)
