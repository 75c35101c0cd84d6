"""Gaussian mixtures typed as text, one component per row, shared by the labs.

A row is ``weight, mean_x, mean_y, sd_x[, sd_y[, correlation]]`` (commas or spaces; rows
on new lines or separated by semicolons): the most a student needs to write a 2-D
component, and a covariance that is positive definite by construction once the
standard deviations are positive and the correlation lies strictly inside (-1, 1).
Every mistake raises ``ValueError`` with a message that names the row and the fix.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np

__all__ = ["ComponentRows", "format_component", "parse_components", "with_mean"]

WEIGHT_TOLERANCE = 1e-3
"""How far typed weights may sum from one when they must be normalised already."""
WINDOW = 50.0
"""The lab's window: means within ±WINDOW, standard deviations at most WINDOW."""
_ROW_BREAK = re.compile("(;|\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029])")
"""What separates rows: a semicolon or any line break ``str.splitlines`` knows (kept by
``re.split``, so that a rewritten text keeps every other byte)."""
_NUMBER = re.compile(r"[^,\s]+")


class ComponentRows(NamedTuple):
    weights: np.ndarray  # (K,) normalised
    means: np.ndarray  # (K, 2)
    covariances: np.ndarray  # (K, 2, 2)


def _numbers(number: int, row: str) -> list[float]:
    try:
        values = [float(value) for value in row.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"Component {number} ({row!r}) is not a list of numbers; write "
            "'weight, mean_x, mean_y, sd' (optionally sd_y and a correlation)."
        ) from None
    if not 4 <= len(values) <= 6:
        raise ValueError(
            f"Component {number} has {len(values)} numbers; write 4 to 6: "
            "weight, mean_x, mean_y, sd_x, [sd_y], [correlation]."
        )
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"Component {number} contains {row!r}: every number must be finite.")
    return values


def _component(number: int, values: list[float]) -> tuple[float, list, list]:
    weight, mean_x, mean_y, sd_x = values[:4]
    sd_y = values[4] if len(values) > 4 else sd_x
    correlation = values[5] if len(values) > 5 else 0.0
    if weight <= 0:
        raise ValueError(f"Component {number} has weight {weight}: weights must be positive.")
    if sd_x <= 0 or sd_y <= 0:
        raise ValueError(
            f"Component {number} has standard deviations ({sd_x}, {sd_y}); both must be "
            "positive."
        )
    if max(sd_x, sd_y, abs(mean_x), abs(mean_y)) > WINDOW:
        raise ValueError(
            f"Component {number} lies outside the lab's window: keep means within "
            f"±{WINDOW:g} and standard deviations at most {WINDOW:g}."
        )
    if not -0.99 <= correlation <= 0.99:
        raise ValueError(
            f"Component {number} has correlation {correlation}; it must be within ±0.99 "
            "so that the covariance is positive definite."
        )
    off_diagonal = correlation * sd_x * sd_y
    return weight, [mean_x, mean_y], [[sd_x**2, off_diagonal], [off_diagonal, sd_y**2]]


def parse_components(
    text: str, *, max_components: int, what: str = "The target", normalise: bool = True
) -> ComponentRows:
    """Read the rows of ``text`` into weights, means and covariances.

    Parameters
    ----------
    text : str
        Rows ``weight, mean_x, mean_y, sd_x[, sd_y[, correlation]]``; ``sd_y`` defaults
        to ``sd_x`` and the correlation to 0.
    max_components : int
        The most rows allowed.
    what : str
        How messages name the mixture ("The target", "The prior").
    normalise : bool
        Weights are relative and divided by their sum (True), or must already sum to
        one within :data:`WEIGHT_TOLERANCE` (False).

    Raises
    ------
    ValueError
        Naming the row and the fix.
    """
    rows = [row.strip() for row in text.replace(";", "\n").splitlines() if row.strip()]
    if not rows:
        raise ValueError(f"{what} mixture has no components: add at least one row.")
    if len(rows) > max_components:
        raise ValueError(
            f"{what} has {len(rows)} components; this lab allows up to {max_components}."
        )
    weights, means, covariances = zip(
        *(_component(number, _numbers(number, row)) for number, row in enumerate(rows, 1)),
        strict=True,
    )
    weights = np.asarray(weights)
    total = weights.sum()
    if not normalise and abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(
            f"{what}'s weights sum to {total:.4g}; they must sum to 1 (divide each by "
            f"{total:.4g}, e.g. {', '.join(f'{w / total:.3g}' for w in weights)})."
        )
    return ComponentRows(weights / total, np.asarray(means), np.asarray(covariances))


def format_component(weight, mean_x, mean_y, sd) -> str:
    """One row of the components text (what a click on a plot appends)."""
    return f"{weight:.3g}, {mean_x:.3f}, {mean_y:.3f}, {sd:.3g}"


def with_mean(text: str, index: int, mean) -> str:
    """``text`` with the mean of component ``index`` (0-based) replaced by ``mean``.

    What dropping a component's marker on a plot writes: only the two mean numbers of
    that row change (to three decimals, each clipped to ±:data:`WINDOW`, so that a drop
    beyond the window gives a row that still parses); every other character of the
    text, the weight, the standard deviations, the correlation, the other rows and the
    separators, stays as it was typed.

    Raises
    ------
    ValueError
        When a row of ``text`` is not a valid component (the message of
        :func:`parse_components`), or there is no component ``index``.
    """
    parts = _ROW_BREAK.split(text)  # rows at even places, separators at odd ones
    places = [place for place in range(0, len(parts), 2) if parts[place].strip()]
    for number, place in enumerate(places, 1):
        _component(number, _numbers(number, parts[place].strip()))
    if not 0 <= index < len(places):
        raise ValueError(f"There is no component {index + 1}: the mixture has {len(places)}.")
    row = parts[places[index]]
    spans = [match.span() for match in _NUMBER.finditer(row)][1:3]  # mean_x, mean_y
    new = [f"{min(max(float(value), -WINDOW), WINDOW):.3f}" for value in mean]
    (x_start, x_end), (y_start, y_end) = spans
    parts[places[index]] = row[:x_start] + new[0] + row[x_end:y_start] + new[1] + row[y_end:]
    return "".join(parts)
