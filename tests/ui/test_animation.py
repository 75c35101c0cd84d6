"""The trajectory player in headless Chromium: display rate at classroom size, play and
pause, one binary message, and the animation tabs of the SMC and paths labs.

The frame rate is read from the page: the player counts the frames it draws
(``data-frames``) and the test divides by the page's own clock. The target is 10⁴
particles × 200 steps at ≥ 50 frames per second (the display gives at most 60).
"""

import statistics

import numpy as np
import panel as pn
import pytest
from posteriorlab_widgets import TrajectoryPlayer
from posteriorlab_widgets.trajectory import message_bytes

from .conftest import free_port, wait_for_http

pytestmark = pytest.mark.ui

STEPS, PARTICLES = 200, 10_000
RESAMPLING_EVERY = 10
TARGET_FPS = 50
WINDOW_MS = 3000
PAGE_TIMEOUT_MS = 240_000  # the first lab page of a fresh server compiles its programs

MEASURE_FPS = """async ([root, milliseconds]) => {
  const frames = Number(root.dataset.frames), start = performance.now();
  await new Promise((done) => setTimeout(done, milliseconds));
  return (Number(root.dataset.frames) - frames) / ((performance.now() - start) / 1000);
}"""

INKED_PIXELS = """(canvas) => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let inked = 0;
  for (let k = 0; k < data.length; k += 4) inked += data[k] + data[k + 1] + data[k + 2] < 600;
  return inked;
}"""


def classroom_system(seed: int = 0):
    """A random walk of 10⁴ particles over 200 steps, resampled every 10th step."""
    rng = np.random.default_rng(seed)
    positions = np.cumsum(rng.normal(scale=0.1, size=(STEPS, PARTICLES, 2)), axis=0)
    weights = rng.random((STEPS, PARTICLES))
    ancestors = np.broadcast_to(np.arange(PARTICLES), (STEPS, PARTICLES)).copy()
    resampled = np.arange(RESAMPLING_EVERY, STEPS, RESAMPLING_EVERY)
    ancestors[resampled] = np.sort(rng.integers(0, PARTICLES, (resampled.size, PARTICLES)))
    return dict(positions=positions, weights=weights, ancestors=ancestors)


@pytest.fixture(scope="module")
def player_url():
    """A one-component Panel page served from a thread: the player with the classroom system."""
    system = classroom_system()

    def page():
        player = TrajectoryPlayer(speed=20, sizing_mode="stretch_width", name="player")
        player.load(**system, x_label="x₁", y_label="x₂")
        return pn.Column(player, sizing_mode="stretch_width")

    port = free_port()
    server = pn.serve({"player": page}, port=port, show=False, threaded=True, verbose=False)
    url = f"http://localhost:{port}/player"
    try:
        wait_for_http(url, timeout=60)
        yield url
    finally:
        server.stop()


def test_classroom_size_plays_at_display_rate_and_pauses(player_url, page, artifacts):
    binary_frames = []
    page.on(
        "websocket",
        lambda socket: socket.on(
            "framereceived",
            lambda payload: binary_frames.append(len(payload)) if isinstance(payload, bytes) else 0,
        ),
    )
    page.goto(player_url)
    play = page.locator(".plw-play")
    play.wait_for()
    root = page.locator("[data-frames]")
    # the whole trajectory arrived in one binary websocket frame, not as JSON text
    assert message_bytes(STEPS, PARTICLES, True, True, False) in binary_frames

    play.click()
    handle = root.element_handle()
    rates = [page.evaluate(MEASURE_FPS, [handle, WINDOW_MS]) for _ in range(3)]
    fps = statistics.median(rates)
    draw_ms = root.get_attribute("data-draw-ms")
    page.screenshot(path=artifacts / "animation-classroom.png")
    assert fps >= TARGET_FPS, f"{fps:.1f} fps (windows {rates}), {draw_ms} ms of drawing a frame"
    assert int(root.get_attribute("data-step")) > 0

    play.click()  # pause
    assert root.get_attribute("data-playing") == "false"
    frames, step = root.get_attribute("data-frames"), root.get_attribute("data-step")
    page.wait_for_timeout(600)
    assert (root.get_attribute("data-frames"), root.get_attribute("data-step")) == (frames, step)
    assert page.locator(".plw-play").inner_text() == "▶ Play"


def test_scrubbing_shows_the_chosen_step(player_url, page):
    page.goto(player_url)
    scrubber = page.locator(".plw-scrub")
    scrubber.wait_for()
    scrubber.fill(str(RESAMPLING_EVERY))  # a resampling step
    label = page.locator(".plw-label")
    assert label.inner_text().startswith(f"step {RESAMPLING_EVERY} / {STEPS - 1}")
    assert "resampled" in label.inner_text()
    assert page.locator("[data-frames]").get_attribute("data-step") == str(RESAMPLING_EVERY)


@pytest.mark.parametrize(
    ("lab", "ready_text", "counter"),
    [("smc", "exact log Z (Kalman)", "step"), ("paths", "kinetic energy", "t = ")],
)
def test_lab_animation_tab_draws(server, page, artifacts, lab, ready_text, counter):
    page.goto(f"{server}/{lab}", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text(ready_text).first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.locator(".bk-tab", has_text="Animation").click()
    play = page.locator(".plw-play")
    play.wait_for()
    page.get_by_text("per update").wait_for()  # the caption states the cap
    canvas = page.locator(".plw-plot")
    assert canvas.evaluate(INKED_PIXELS) > 100  # the first step, drawn before playing
    play.click()
    root = page.locator("[data-frames]")
    page.wait_for_function(
        "(root) => Number(root.dataset.step) >= 5", arg=root.element_handle(), timeout=20_000
    )
    assert canvas.evaluate(INKED_PIXELS) > 100
    assert counter in page.locator(".plw-label").inner_text()
    page.screenshot(path=artifacts / f"{lab}-animation.png", full_page=True)
