"""The binary message a trajectory player receives: a whole animation in one buffer.

A trajectory is the position of every particle at every step, an array of shape
``(steps, particles, 2)``. Sending it as JSON lists would cost about 20 bytes and a
parse per number; the player instead receives it once, as raw little-endian float32,
and plays it in the browser at display rate without asking the server for anything
more. Both frameworks carry such a buffer without copying it into text: a
``traitlets.Bytes`` trait travels as a binary buffer of the Jupyter comm message, and
a ``param.Bytes`` parameter as a binary buffer of Bokeh's websocket patch. Either way
the ES module reads a ``DataView``.

Layout (every field 4 bytes, little-endian, so each section is aligned for a typed
array view)::

    int32   version, steps S, particles N, flags (1: weights, 2: ancestors, 4: times)
    float32 x_min, x_max, y_min, y_max                      the axes' bounds
    float32 positions[S][N][2]                              x, y of particle i at step s
    float32 weights[S][N]       if flags & 1                W_s^i ≥ 0, any scale per step
    int32   ancestors[S][N]     if flags & 2                index at step s-1 of the parent
    float32 times[S]            if flags & 4                a time shown beside the counter

Ancestors are what turns a cloud of points into a particle system: the player moves
particle i of step s from its parent ``ancestors[s][i]`` of step s-1, so offspring split
from their parent at a resampling step. Row 0 has no parent and is not read. A step
whose ancestors are not the identity ``0, 1, …, N-1`` is drawn as a resampling step.
"""

from typing import NamedTuple

import numpy as np

FORMAT_VERSION = 1
HAS_WEIGHTS, HAS_ANCESTORS, HAS_TIMES = 1, 2, 4
HEADER_BYTES = 32
BOUNDS_MARGIN = 0.05  # fraction of the data's range added on each side
MAX_MESSAGE_BYTES = 64 * 2**20  # beyond this a browser tab stalls on receiving and holding it


class PlayerDefaults(NamedTuple):
    """Initial settings of the player, shared by its Panel and Jupyter classes."""

    speed: float = 10.0  # steps per second
    trail_seconds: float = 0.4  # time for a trail to fade to 1/e of its darkness
    canvas_height: int = 420  # pixels
    loop: bool = True
    equal_aspect: bool = False  # one unit of x and of y take the same length on screen


DEFAULTS = PlayerDefaults()


def message_bytes(steps: int, particles: int, weights: bool, ancestors: bool, times: bool) -> int:
    """Size in bytes of the message for these dimensions and optional sections."""
    per_value = 8 + 4 * weights + 4 * ancestors  # 2 × float32 position, float32, int32
    return HEADER_BYTES + steps * particles * per_value + 4 * steps * times


def pack_trajectory(
    positions,
    weights=None,
    ancestors=None,
    times=None,
    bounds=None,
) -> bytes:
    r"""Pack a particle trajectory into the player's binary message (layout above).

    Parameters
    ----------
    positions : array_like, shape (steps, particles, 2)
        :math:`(x, y)` of every particle at every step; finite.
    weights : array_like, shape (steps, particles), optional
        Importance weights :math:`W_s^i \ge 0` (normalised or not: the player compares
        each weight with the largest of its step), drawn as the dots' size and opacity.
    ancestors : array_like of int, shape (steps, particles), optional
        Index at step :math:`s-1` of each particle's parent, in ``[0, particles)``.
    times : array_like, shape (steps,), optional
        A time for each step (e.g. :math:`t \in [0, 1]` of a probability path).
    bounds : (x_min, x_max, y_min, y_max), optional
        The axes' ranges; by default the data's range plus 5 % on each side.

    Returns
    -------
    bytes
        The message, ready for the player's ``trajectory`` parameter or trait.

    Raises
    ------
    ValueError
        Saying what is wrong (a shape, a NaN, a negative weight, an index out of range, a
        message too large) and how to fix it.
    """
    positions = _as_float32(positions, "positions")
    if positions.ndim != 3 or positions.shape[-1] != 2:
        raise ValueError(
            f"positions must have shape (steps, particles, 2); got shape {positions.shape}. "
            "For one particle or one step add the missing axis, e.g. positions[:, None, :]."
        )
    steps, particles, _ = positions.shape
    if steps == 0 or particles == 0:
        raise ValueError(f"positions of shape {positions.shape} hold no point to draw.")
    _check_finite(positions, "positions")
    size = message_bytes(
        steps, particles, weights is not None, ancestors is not None, times is not None
    )
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"{steps} steps × {particles:,} particles make a {size / 2**20:.0f} MB message, "
            f"more than a page can take ({MAX_MESSAGE_BYTES // 2**20} MB); send fewer "
            "particles (a random subset) or every k-th step."
        )
    flags, sections = 0, [positions]
    if weights is not None:
        flags |= HAS_WEIGHTS
        sections.append(_checked_weights(weights, (steps, particles)))
    if ancestors is not None:
        flags |= HAS_ANCESTORS
        sections.append(_checked_ancestors(ancestors, (steps, particles)))
    if times is not None:
        flags |= HAS_TIMES
        times = _as_float32(times, "times")
        _check_shape(times, (steps,), "times")
        _check_finite(times, "times")
        sections.append(times)
    header = np.array([FORMAT_VERSION, steps, particles, flags], dtype="<i4")
    limits = data_bounds(positions) if bounds is None else _checked_bounds(bounds)
    parts = [header, np.asarray(limits, dtype="<f4"), *sections]
    return b"".join(part.tobytes() for part in parts)


def data_bounds(positions: np.ndarray) -> tuple[float, float, float, float]:
    """``(x_min, x_max, y_min, y_max)`` of the points, widened by :data:`BOUNDS_MARGIN` of
    their range on each side (by 0.5 where every point has the same coordinate)."""
    low = positions.reshape(-1, 2).min(axis=0).astype(float)
    high = positions.reshape(-1, 2).max(axis=0).astype(float)
    margin = np.where(high > low, BOUNDS_MARGIN * (high - low), 0.5)
    (x_min, y_min), (x_max, y_max) = low - margin, high + margin
    return x_min, x_max, y_min, y_max


def _as_float32(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be real numbers; got an array of dtype {array.dtype}.")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
        return array.astype("<f4")


def _check_shape(array: np.ndarray, shape: tuple, name: str) -> None:
    if array.shape != shape:
        raise ValueError(
            f"{name} must have shape {shape}, one value per step"
            f"{' and particle' if len(shape) == 2 else ''} of the positions; "
            f"got shape {array.shape}."
        )


def _check_finite(array: np.ndarray, name: str) -> None:
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        axes = ("step", "particle", "coordinate")[: array.ndim]
        where = ", ".join(f"{axis} {i}" for axis, i in zip(axes, bad[0], strict=True))
        value = array[tuple(bad[0])]
        plural = "s" if len(bad) > 1 else ""
        raise ValueError(
            f"{name} hold {len(bad)} non-finite value{plural} (NaN or ±inf in float32); the "
            f"first is {value} at {where}. Remove those particles or steps, or fix what "
            "produced them (float32 overflows beyond ±3.4e38)."
        )


def _checked_weights(weights, shape: tuple) -> np.ndarray:
    weights = _as_float32(weights, "weights")
    _check_shape(weights, shape, "weights")
    _check_finite(weights, "weights")
    if (weights < 0).any():
        step, particle = np.argwhere(weights < 0)[0]
        raise ValueError(
            f"weights must be ≥ 0; weight {weights[step, particle]} at step {step}, particle "
            f"{particle}. Pass exp(log_weights), not the log-weights."
        )
    empty = np.flatnonzero(weights.max(axis=1) == 0)
    if empty.size:
        raise ValueError(
            f"every weight of step {empty[0]} is zero, so no particle can be drawn there; "
            "give each step at least one positive weight."
        )
    return weights


def _checked_ancestors(ancestors, shape: tuple) -> np.ndarray:
    ancestors = np.asarray(ancestors)
    if not np.issubdtype(ancestors.dtype, np.integer):
        raise ValueError(
            f"ancestors must be integer indices; got an array of dtype {ancestors.dtype}."
        )
    _check_shape(ancestors, shape, "ancestors")
    outside = np.argwhere((ancestors < 0) | (ancestors >= shape[1]))
    if outside.size:
        step, particle = outside[0]
        raise ValueError(
            f"ancestors must index the {shape[1]} particles of the previous step (0 to "
            f"{shape[1] - 1}); particle {particle} of step {step} has ancestor "
            f"{ancestors[step, particle]}."
        )
    return ancestors.astype("<i4")


def _checked_bounds(bounds) -> tuple[float, float, float, float]:
    values = np.asarray(bounds, dtype=float)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ValueError(
            f"bounds must be four finite numbers (x_min, x_max, y_min, y_max); got {bounds!r}."
        )
    x_min, x_max, y_min, y_max = values
    if not (x_min < x_max and y_min < y_max):
        raise ValueError(
            f"bounds {tuple(values)} are empty: each minimum must be below its maximum."
        )
    return x_min, x_max, y_min, y_max
