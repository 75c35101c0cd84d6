"""Helpers shared by the dashboard tests."""

import pytest


def _linked_streams(pane) -> list[tuple[str, str]]:
    """The streams a rendered HoloViews ``pane`` links to its plots, as pairs (type of
    the plot, type of the stream): the only streams the browser's events reach."""
    found = []

    def walk(plot):
        for callback in getattr(plot, "callbacks", []):
            found.extend((type(plot).__name__, type(s).__name__) for s in callback.streams)
        for subplot in (getattr(plot, "subplots", None) or {}).values():
            walk(subplot)

    for plot, _ in pane._plots.values():
        walk(plot)
    return found


@pytest.fixture
def linked_streams():
    """:func:`_linked_streams`: which streams of a rendered pane reach the browser."""
    return _linked_streams
