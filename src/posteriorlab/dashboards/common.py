"""Pieces every lab page shares."""

import holoviews as hv
import panel as pn

from posteriorlab.plots.style import framewise


def error_alert(lab, name: str = "error") -> pn.pane.Alert:
    """A red alert showing ``lab.error``, visible only while there is one.

    Labs validate their input and put what is wrong (and the fix) in ``error`` instead
    of raising, keeping their last good result; this is where the student reads it.
    """
    return pn.pane.Alert(
        pn.bind(lambda message: f"**Input problem:** {message}", lab.param.error),
        alert_type="danger",
        visible=pn.bind(bool, lab.param.error),
        sizing_mode="stretch_width",
        name=name,
    )


def live_figure(source, function, *args, min_height: int = 380) -> pn.pane.HoloViews:
    """A figure redrawn by ``function(value, *args)`` whenever the parameter ``source``
    (e.g. ``lab.param.result``) changes; every layer rescales to each new frame. The
    pane's ``object`` is the DynamicMap (a stream such as a tap attaches to it)."""
    dynamic = hv.DynamicMap(pn.bind(lambda value: framewise(function(value, *args)), source))
    return pn.pane.HoloViews(dynamic, sizing_mode="stretch_width", min_height=min_height)


def control_cards(lab, groups, widgets, collapsed=()) -> pn.Column:
    """One card of widgets per group of the lab's parameters, built with ``pn.Param``
    (per session: never class-level widgets).

    ``groups`` maps a card title to parameter names, ``widgets`` a name to its widget
    type or options; the cards titled in ``collapsed`` start closed.
    """
    cards = [
        pn.Card(
            pn.Param(
                lab,
                parameters=names,
                widgets={name: widgets[name] for name in names if name in widgets},
                show_name=False,
                sizing_mode="stretch_width",
            ),
            title=title,
            sizing_mode="stretch_width",
            collapsed=title in collapsed,
        )
        for title, names in groups.items()
    ]
    return pn.Column(*cards, sizing_mode="stretch_width")
