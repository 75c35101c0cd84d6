"""The two Python faces of the trajectory player: one ES module, the same model, and the
message carried as a binary buffer (not JSON text) by Panel/Bokeh and by ipywidgets."""

import subprocess
import sys

import numpy as np
import param
import pytest
from bokeh.document import Document
from panel.custom import AnyWidgetComponent
from posteriorlab_widgets import TrajectoryPlayer, TrajectoryPlayerWidget, pack_trajectory
from posteriorlab_widgets.files import PLAYER_CSS, PLAYER_ESM

ipywidgets = pytest.importorskip("ipywidgets")


@pytest.fixture
def positions():
    return np.random.default_rng(0).normal(size=(4, 6, 2))


def synced_names(widget) -> set[str]:
    """The traits the notebook's copy of the model sees, less anywidget's own."""
    base = set(ipywidgets.DOMWidget().trait_names(sync=True)) | {"_anywidget_id", "_esm", "_css"}
    return set(widget.trait_names(sync=True)) - base


def test_both_classes_load_the_same_module_file():
    assert PLAYER_ESM.is_file()
    assert PLAYER_CSS.is_file()
    assert TrajectoryPlayer._esm_path(compiled=False) == PLAYER_ESM
    assert TrajectoryPlayerWidget()._esm == PLAYER_ESM.read_text()  # anywidget reads the path
    assert "export default { render }" in PLAYER_ESM.read_text()


def test_both_classes_offer_the_module_the_same_model():
    panel_names = set(TrajectoryPlayer.param) - set(AnyWidgetComponent.param)
    assert panel_names == synced_names(TrajectoryPlayerWidget())
    for name in panel_names - {"trajectory"}:
        assert TrajectoryPlayer.param[name].default == TrajectoryPlayerWidget().trait_defaults(name)
    for name in panel_names:
        assert f'"{name}"' in PLAYER_ESM.read_text(), f"the module never reads {name}"


@pytest.mark.parametrize("player_class", [TrajectoryPlayer, TrajectoryPlayerWidget])
def test_load_packs_the_trajectory_and_changes_settings(player_class, positions):
    player = player_class(x_label="old")
    times = np.linspace(0, 1, 4)
    player.load(positions, times=times, y_label="x₂", equal_aspect=True)
    assert player.trajectory == pack_trajectory(positions, times=times)
    assert (player.x_label, player.y_label, player.equal_aspect) == ("old", "x₂", True)
    with pytest.raises(ValueError, match="shape"):
        player.load(positions[0])
    with pytest.raises(TypeError, match="no setting colour"):
        player.load(positions, colour="red")
    assert player.trajectory == pack_trajectory(positions, times=times)  # nothing changed


def test_panel_sends_the_message_as_one_binary_buffer(positions):
    player = TrajectoryPlayer()
    player.load(positions)
    document = Document()
    document.add_root(player.get_root(document))
    buffers = document.to_json().buffers  # Bokeh's websocket messages carry these as binary
    assert any(bytes(buffer.data) == player.trajectory for buffer in buffers)


def test_jupyter_sends_the_message_as_one_binary_buffer(positions):
    from ipywidgets.widgets.widget import _remove_buffers

    widget = TrajectoryPlayerWidget()
    widget.load(positions)
    _, buffer_paths, buffers = _remove_buffers(widget.get_state())
    assert buffer_paths == [["trajectory"]]
    assert bytes(buffers[0]) == widget.trajectory


def test_follow_plays_every_new_value_of_a_parameter(positions):
    class Source(param.Parameterized):
        result = param.Parameter(None)

    source = Source()
    player = TrajectoryPlayer().follow(source.param.result, lambda scale: {"positions": scale})
    assert player.trajectory == b""  # None is skipped
    source.result = positions
    assert player.trajectory == pack_trajectory(positions)
    source.result = 2 * positions
    assert player.trajectory == pack_trajectory(2 * positions)


def test_the_panel_side_never_needs_anywidget():
    code = (
        "import sys, posteriorlab_widgets as w; w.TrajectoryPlayer; "
        "print('anywidget' in sys.modules, 'ipywidgets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
