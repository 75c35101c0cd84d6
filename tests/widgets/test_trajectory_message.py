"""The player's binary message: what pack_trajectory writes, read back by the layout its
module docstring documents, and the clear errors it raises on bad input."""

import numpy as np
import pytest
from posteriorlab_widgets import trajectory
from posteriorlab_widgets.trajectory import data_bounds, message_bytes, pack_trajectory

STEPS, PARTICLES = 5, 7


def read_message(message: bytes) -> dict:
    """An independent reader of the documented layout (what the ES module does)."""
    version, steps, particles, flags = np.frombuffer(message, "<i4", 4)
    out = {"version": version, "flags": flags, "bounds": np.frombuffer(message, "<f4", 4, 16)}
    offset = 32
    values = steps * particles
    sections = [
        ("positions", 0, "<f4", 2 * values, (steps, particles, 2)),
        ("weights", 1, "<f4", values, (steps, particles)),
        ("ancestors", 2, "<i4", values, (steps, particles)),
        ("times", 4, "<f4", steps, (steps,)),
    ]
    for name, flag, dtype, count, shape in sections:
        if flag == 0 or flags & flag:
            out[name] = np.frombuffer(message, dtype, count, offset).reshape(shape)
            offset += 4 * count
    assert offset == len(message), "the message has bytes the layout does not account for"
    return out


@pytest.fixture
def system():
    rng = np.random.default_rng(1)
    return dict(
        positions=rng.normal(size=(STEPS, PARTICLES, 2)),
        weights=rng.random((STEPS, PARTICLES)),
        ancestors=rng.integers(0, PARTICLES, (STEPS, PARTICLES)),
        times=np.linspace(0.0, 1.0, STEPS),
    )


def test_every_section_reads_back_as_float32_or_int32(system):
    message = pack_trajectory(**system, bounds=(-4, 4, -3, 5))
    read = read_message(message)
    assert read["version"] == trajectory.FORMAT_VERSION
    assert read["flags"] == trajectory.HAS_WEIGHTS | trajectory.HAS_ANCESTORS | trajectory.HAS_TIMES
    np.testing.assert_array_equal(read["bounds"], [-4, 4, -3, 5])
    for name in ("positions", "weights", "times"):
        np.testing.assert_array_equal(read[name], system[name].astype(np.float32))
    np.testing.assert_array_equal(read["ancestors"], system["ancestors"])
    assert len(message) == message_bytes(STEPS, PARTICLES, True, True, True)


def test_optional_sections_are_left_out(system):
    read = read_message(pack_trajectory(system["positions"], times=system["times"]))
    assert read["flags"] == trajectory.HAS_TIMES
    assert "weights" not in read
    assert "ancestors" not in read
    np.testing.assert_array_equal(read["times"], system["times"].astype(np.float32))


def test_default_bounds_hold_the_data_with_a_margin(system):
    positions = system["positions"]
    x_min, x_max, y_min, y_max = read_message(pack_trajectory(positions))["bounds"]
    low, high = positions.reshape(-1, 2).min(0), positions.reshape(-1, 2).max(0)
    span = high - low
    np.testing.assert_allclose([x_min, y_min], low - trajectory.BOUNDS_MARGIN * span, rtol=1e-6)
    np.testing.assert_allclose([x_max, y_max], high + trajectory.BOUNDS_MARGIN * span, rtol=1e-6)


def test_a_constant_coordinate_still_gets_a_range():
    positions = np.zeros((3, 4, 2))
    positions[..., 0] = np.arange(3)[:, None]  # x varies with the step, y is always 0
    x_min, x_max, y_min, y_max = data_bounds(positions)
    assert (x_min, x_max) == pytest.approx((-0.1, 2.1))
    assert (y_min, y_max) == (-0.5, 0.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"positions": np.zeros((5, 7))}, r"shape \(steps, particles, 2\); got shape \(5, 7\)"),
        ({"positions": np.zeros((5, 7, 3))}, r"got shape \(5, 7, 3\)"),
        ({"positions": np.zeros((0, 7, 2))}, "hold no point"),
        ({"positions": np.array([[["a", "b"]]])}, "real numbers"),
        ({"weights": -np.ones((5, 7))}, "weights must be ≥ 0; weight -1.0 at step 0"),
        ({"weights": np.zeros((5, 7))}, "every weight of step 0 is zero"),
        ({"weights": np.ones((5, 6))}, r"weights must have shape \(5, 7\)"),
        ({"ancestors": np.full((5, 7), 7)}, "has ancestor 7"),
        ({"ancestors": np.full((5, 7), -1)}, "has ancestor -1"),
        ({"ancestors": np.zeros((5, 7)) + 0.5}, "integer indices"),
        ({"times": np.arange(4.0)}, r"times must have shape \(5,\)"),
        ({"bounds": (0, 1, 2)}, "four finite numbers"),
        ({"bounds": (1, 0, 0, 1)}, "are empty"),
    ],
)
def test_bad_input_is_explained(system, change, message):
    with pytest.raises(ValueError, match=message):
        pack_trajectory(**(system | change))


@pytest.mark.parametrize(("name", "shape"), [("positions", (5, 7, 2)), ("weights", (5, 7))])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])  # 1e39 overflows float32
def test_non_finite_values_are_located(system, name, shape, bad):
    values = np.array(system[name], dtype=float)
    values[(3, 2) + (1,) * (len(shape) - 2)] = bad
    with pytest.raises(ValueError, match=f"{name} hold 1 non-finite value .*at step 3, particle 2"):
        pack_trajectory(**(system | {name: values}))


def test_a_message_too_large_for_a_page_is_refused(system, monkeypatch):
    limit = message_bytes(STEPS, PARTICLES, True, True, True) - 1
    monkeypatch.setattr(trajectory, "MAX_MESSAGE_BYTES", limit)
    with pytest.raises(ValueError, match="send fewer particles"):
        pack_trajectory(**system)
    pack_trajectory(system["positions"])  # without the optional sections it fits
