"""Where the browser-side code lives: one ES module and its style sheet, read by both
the Panel component and the Jupyter widget."""

import pathlib

HERE = pathlib.Path(__file__).resolve().parent
PLAYER_ESM = HERE / "trajectory_player.js"
PLAYER_CSS = HERE / "trajectory_player.css"
