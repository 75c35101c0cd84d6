"""The trajectory player as a Panel component, for the lab pages and Panel apps.

:class:`TrajectoryPlayer` is a :class:`panel.custom.AnyWidgetComponent`: Panel runs the
same ES module as the Jupyter widget, giving it a ``model`` with anywidget's
``get`` / ``set`` / ``on``. The message is a ``param.Bytes`` parameter, which Bokeh sends
as a binary buffer of its websocket patch (never as JSON text), so a few megabytes of
float32 reach the page in one message per update.
"""

import panel as pn
import param

from posteriorlab_widgets.files import PLAYER_CSS, PLAYER_ESM
from posteriorlab_widgets.trajectory import DEFAULTS, pack_trajectory


class TrajectoryPlayer(pn.custom.AnyWidgetComponent):
    """Plays a particle trajectory in the browser: play / pause, scrub, speed, trails.

    Examples
    --------
    >>> player = TrajectoryPlayer(x_label="x₁", y_label="x₂")
    >>> player.load(positions, weights=weights, ancestors=ancestors)  # doctest: +SKIP
    """

    _esm = PLAYER_ESM
    _stylesheets = [PLAYER_CSS.read_text()]

    trajectory = param.Bytes(default=b"", doc="The packed message (see pack_trajectory).")
    playing = param.Boolean(default=False, doc="Whether the animation is running.")
    speed = param.Number(default=DEFAULTS.speed, bounds=(0, None), doc="Steps per second.")
    trail_seconds = param.Number(
        default=DEFAULTS.trail_seconds,
        bounds=(0, None),
        doc="Time for a trail to fade to 1/e of its darkness (0: no trails).",
    )
    loop = param.Boolean(default=DEFAULTS.loop, doc="Start again after the last step.")
    x_label = param.String(default="", doc="Label of the horizontal axis.")
    y_label = param.String(default="", doc="Label of the vertical axis.")
    equal_aspect = param.Boolean(
        default=DEFAULTS.equal_aspect, doc="Give a unit of x and of y the same length."
    )
    canvas_height = param.Integer(default=DEFAULTS.canvas_height, bounds=(100, None))

    def load(
        self, positions, weights=None, ancestors=None, times=None, bounds=None, **settings
    ) -> None:
        """Send a new trajectory (see :func:`pack_trajectory`) and change any of the
        player's ``settings`` (e.g. ``x_label``) in the same update."""
        unknown = sorted(name for name in settings if name not in self.param)
        if unknown:
            raise TypeError(f"TrajectoryPlayer has no setting {', '.join(unknown)}.")
        message = pack_trajectory(positions, weights, ancestors, times, bounds)
        self.param.update(trajectory=message, **settings)

    def follow(self, source, animation) -> "TrajectoryPlayer":
        """Play ``animation(value)`` for the current and every later value of the parameter
        ``source`` (e.g. ``lab.param.result``); ``animation`` returns the keyword arguments
        of :meth:`load`, and ``None`` values of ``source`` are skipped. Returns the player."""

        def show(value):
            if value is not None:
                self.load(**animation(value))

        show(getattr(source.owner, source.name))
        source.owner.param.watch(lambda event: show(event.new), source.name)
        return self
