"""Figures redrawn at every change of a slider: plain Bokeh, their data replaced in place.

A HoloViews figure in a live page is redrawn from a new element each time: it rebuilds the
element, looks its options up again, recomputes the ranges of every layer and replaces
some of its Bokeh models, after which Bokeh walks the page's whole model graph to find the
new ones. For the SMC lab's particle cloud and ESS figures that is about 40 ms of the
server's event loop per update, for every student; with thirty students moving sliders
the loop falls behind and every page waits.

The figures here are built once per page, each glyph named and fed by its own
``ColumnDataSource``. A new result becomes a :class:`Frame` (the title, the y-axis label
and the columns of each named glyph), and :func:`draw` writes it into the figure: new data
in the existing sources, no new models, so there is no graph walk and the page receives
one message of arrays, holding only the columns that changed. About 1 ms per update.

A glyph that has nothing to draw for some result (the hidden states of typed data, which
are unknown) gets empty columns, and it and its legend entry are hidden until it has data
again.
"""

from typing import NamedTuple

import numpy as np
from bokeh.models import ColumnDataSource, Legend
from bokeh.plotting import figure as bokeh_figure

TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


class Frame(NamedTuple):
    """What one result puts into a live figure."""

    title: str
    columns: dict[str, dict[str, np.ndarray]]  # glyph name -> column name -> values
    y_label: str | None = None  # None leaves the axis label as it is


def empty_source(*column_names: str) -> ColumnDataSource:
    """A data source with the named columns, empty until the first :func:`draw`."""
    return ColumnDataSource({name: np.zeros(0) for name in column_names})


def empty_figure(x_label: str, y_label: str, **options):
    """An empty Bokeh figure in the style of the lab's HoloViews figures: stretching to
    the page's width, grid, toolbar above (glyphs with ``legend_label`` make its legend;
    :func:`legend_on_the_right` moves it beside the plot)."""
    return bokeh_figure(
        x_axis_label=x_label,
        y_axis_label=y_label,
        tools=TOOLS,
        toolbar_location="above",
        sizing_mode="stretch_width",
        height=300,
        min_height=280,
        **options,
    )


def add_curve(figure, name: str, label: str | None = None, glyph: str = "line", **style):
    """Add a glyph ``name`` (a line, or ``glyph="scatter"``) of columns ``t``, ``x`` to
    ``figure``, with its own empty source and the legend entry ``label`` (default: the
    name)."""
    draw_glyph = getattr(figure, glyph)
    source = empty_source("t", "x")
    return draw_glyph("t", "x", source=source, name=name, legend_label=label or name, **style)


def legends(figure) -> list[Legend]:
    """The figure's legends, looked up in its layout panels (``figure.select`` would walk
    every model of the figure: about 3 ms, at every update)."""
    panels = (figure.center, figure.right, figure.left, figure.above, figure.below)
    return [model for panel in panels for model in panel if isinstance(model, Legend)]


def legend_on_the_right(figure) -> None:
    """Move the figure's legend (made by ``legend_label=`` glyphs) outside, to the right."""
    (legend,) = legends(figure)
    figure.center.remove(legend)
    legend.location = "top_left"
    figure.add_layout(legend, "right")


def write_columns(source: ColumnDataSource, columns: dict[str, np.ndarray]) -> None:
    """Give ``source`` the ``columns``, sending the page only those that changed.

    When the columns keep their names and lengths, only those whose values differ are
    replaced (a new filter seed leaves the particle cloud's time column as it was: a
    third of its bytes); otherwise the whole table is.
    """
    current = source.data
    same_shape = current.keys() == columns.keys() and all(
        len(current[name]) == len(values) for name, values in columns.items()
    )
    if not same_shape:
        source.data = columns
        return
    changed = {
        name: values
        for name, values in columns.items()
        if not np.array_equal(current[name], values)
    }
    if changed:
        current.update(changed)


def draw(figure, frame: Frame) -> None:
    """Write ``frame`` into ``figure``: each named glyph's source gets its columns
    (:func:`write_columns`), and a glyph whose columns are empty is hidden with its
    legend entry."""
    figure.title.text = frame.title
    if frame.y_label is not None:
        figure.yaxis.axis_label = frame.y_label
    shown = {}
    for renderer in figure.renderers:
        if renderer.name in frame.columns:
            columns = frame.columns[renderer.name]
            write_columns(renderer.data_source, columns)
            shown[renderer.name] = len(next(iter(columns.values()))) > 0
            if renderer.visible != shown[renderer.name]:
                renderer.visible = shown[renderer.name]
    for legend in legends(figure):
        for item in legend.items:
            visible = all(shown.get(renderer.name, True) for renderer in item.renderers)
            if item.visible != visible:
                item.visible = visible
