"""The one place for figure defaults and the palette shared by every lab.

The figures use Bokeh plot options, so importing this module registers HoloViews' Bokeh
backend (without loading any notebook or page resources).
"""

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
