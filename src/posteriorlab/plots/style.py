"""The one place for figure defaults and the palette shared by every lab.

The figures use Bokeh plot options, so importing this module registers HoloViews' Bokeh
backend (without loading any notebook or page resources).
"""

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401

COLORS = {
    "truth": "#222222",  # hidden states and exact answers
    "data": "#d62728",  # observations
    "particles": "#1f77b4",
    "filter": "#1f77b4",
    "smoother": "#9467bd",
}

# framewise: every new result sets the axes anew (a DynamicMap otherwise keeps the ranges
# of its first frame, and later points fall outside them).
FIGURE = dict(responsive=True, min_height=280, show_grid=True, toolbar="above", framewise=True)
OVERLAY = dict(FIGURE, legend_position="right")


def framewise(figure):
    """``figure`` with every element rescaled to its own data in each frame.

    In a DynamicMap, an Overlay's ``framewise`` option does not reach its layers: each
    element must carry it, or the axes keep the first frame's ranges (a new target far
    from the old one would be drawn off-screen). Dashboards pass every frame through here.
    """
    return figure.map(lambda element: element.opts(framewise=True), hv.Element)


def horizontal_log_bars(values) -> dict:
    """Options for horizontal ``hv.Bars`` whose values span decades: a log axis from half
    the smallest to twice the largest value, the bars starting at its left edge (Bokeh
    would start them at 0, which a log axis cannot show)."""
    low = 0.5 * float(min(values))
    high = 2.0 * float(max(values))

    def start_at_left_edge(plot, element):
        plot.handles["glyph"].left = low

    return dict(invert_axes=True, logx=True, ylim=(low, high), hooks=[start_at_left_edge])
