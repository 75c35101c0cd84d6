"""Pieces every lab page shares."""

import contextlib
import functools
import threading

import holoviews as hv
import numpy as np
import panel as pn
import param

from posteriorlab.plots import live
from posteriorlab.plots.style import framewise


class PageCopy(param.Parameterized):
    """The values of some of a lab's parameters as its page shows them.

    A served lab computes on a worker thread and sets its results there. Were the figures
    bound to the lab itself, every figure would queue a redraw of its own on the page's
    event loop, and each redraw would walk the page's whole model graph once more. Under
    load the loop falls behind, and the redraws of results that newer ones have already
    replaced would still all run.

    The copy has one parameter per name in ``names``, with the lab's value. When the lab
    changes them, the copy queues one callback on the page's event loop. That callback
    applies the newest value of every parameter changed since the last one. It applies
    them all at once, with the document held and frozen, so the page gets at most one
    recomputation of its model graph (:func:`frozen_model_graph`) and one message. A
    result replaced before the loop reached it is never drawn. Without a server session
    (a notebook, a test) the copy follows the lab at once.

    Make one with :func:`page_copy`, which gives it its parameters.
    """

    def __init__(self, lab: param.Parameterized):
        names = [name for name in self.param if name != "name"]
        super().__init__(**{name: getattr(lab, name) for name in names})
        self._document = pn.state.curdoc
        self._served = self._document is not None and self._document.session_context is not None
        self._lock = threading.Lock()
        self._pending: dict = {}
        lab.param.watch(self._lab_changed, names)

    def _lab_changed(self, *events) -> None:
        if not self._served:
            self.param.update(**{event.name: event.new for event in events})
            return
        if self._document.session_context is None:
            return  # the page was closed while the lab computed: nothing to draw
        with self._lock:
            queued = bool(self._pending)
            self._pending.update({event.name: event.new for event in events})
        if not queued:
            self._document.add_next_tick_callback(self._apply)

    def _apply(self) -> None:
        with self._lock:
            values, self._pending = self._pending, {}
        with frozen_model_graph(self._document), pn.io.hold(self._document):
            self.param.update(**values)


@contextlib.contextmanager
def frozen_model_graph(document):
    """Hold ``document``'s model graph still while a batch of updates runs, and walk it
    afterwards only if one of them asked for a walk.

    Bokeh keeps the set of a document's models by walking the graph from its roots (about
    10 ms for a lab page) whenever a change adds or removes models. Each HoloViews redraw
    freezes the document and walks it afterwards, needed or not, and so would Bokeh's own
    ``freeze()`` around the batch. Here, under one freeze, the changes that add or remove
    models are noted (Bokeh tells the document by ``models.invalidate()``, which a freeze
    makes a no-op), and the walk happens once if there was any such change, or never: a
    batch that only writes new data into existing sources (:mod:`posteriorlab.plots.live`)
    costs no walk.
    """
    models = document.models
    if "invalidate" in vars(models):  # inside another: that one notes the changes and walks
        yield
        return
    asked = []
    models.invalidate = lambda: asked.append(True)  # noted while frozen
    models._push_freeze()
    try:
        yield
    finally:
        models._freeze_count -= 1  # leave the freeze without Bokeh's walk...
        del models.invalidate
        if asked:
            models.invalidate()  # ...and walk here if asked (unless frozen further out)


def page_copy(lab: param.Parameterized, names) -> PageCopy:
    """A :class:`PageCopy` of the parameters ``names`` of ``lab``."""
    return _page_copy_class(tuple(names))(lab)


@functools.cache
def _page_copy_class(names: tuple[str, ...]) -> type[PageCopy]:
    # Parameters belong to a class: one subclass per set of names, shared by every page
    # that copies that set (each copy holds its own values).
    parameters = {name: param.Parameter(None) for name in names}
    return type("PageCopy_" + "_".join(names), (PageCopy,), parameters)


class _Latest(param.Parameterized):
    value = param.Parameter()


def while_tab_open(source, tabs: pn.Tabs, index: int):
    """The parameter ``source``, passed on only while tab ``index`` of ``tabs`` is open.

    For content that costs real work to build and send but cannot be seen from the other
    tabs (an animation's megabytes of positions): a new value of ``source`` reaches it
    when it comes, if the tab is open, or else when the tab is next opened. Returns a
    parameter to bind to, as ``source`` would be.
    """
    latest = _Latest()

    def refresh(*_):
        value = getattr(source.owner, source.name)
        if tabs.active == index and value is not latest.value:
            latest.value = value

    source.owner.param.watch(refresh, source.name)
    tabs.param.watch(refresh, "active")
    refresh()
    return latest.param.value


def error_alert(lab, name: str = "error") -> pn.pane.Alert:
    """A red alert showing ``lab.error``, visible only while there is one.

    Labs validate their input and put what is wrong (and the fix) in ``error`` instead
    of raising, keeping their last good result; this is where the student reads it.
    ``lab`` may also be a :class:`PageCopy` of the lab.
    """
    return pn.pane.Alert(
        pn.bind(lambda message: f"**Input problem:** {message}", lab.param.error),
        alert_type="danger",
        visible=pn.bind(bool, lab.param.error),
        sizing_mode="stretch_width",
        name=name,
    )


def live_map(source, function, *args) -> hv.DynamicMap:
    """A DynamicMap drawn by ``function(value, *args)`` from each new value of the
    parameter ``source`` (e.g. ``lab.param.result``); every element rescales to each
    new frame.

    A stream (a click, a drag) must have a layer of the figure as its source, an element
    or a DynamicMap of elements such as this one: a stream on a DynamicMap that draws a
    whole overlay is linked to no plot (HoloViews links streams to layers), and the
    browser's events never reach it. Overlay such layers (``density * means * data``),
    in an order that stays fixed.
    """
    dynamic = hv.DynamicMap(pn.bind(lambda value: framewise(function(value, *args)), source))
    # Each value is new: hashing its arrays to look up an earlier figure would only cost time.
    dynamic.callback.memoize = False
    return dynamic


def with_clicks(dynamic: hv.DynamicMap, on_click) -> hv.DynamicMap:
    """``dynamic``, a live figure drawn as whole overlays, taking clicks: a click at
    (x, y) calls ``on_click(x=x, y=y)``.

    A stream on ``dynamic`` itself would be linked to no plot (:func:`live_map`), so the
    click belongs to an empty layer overlaid on top: it draws nothing, and its plot is
    the figure. Overlaying makes new frames without the figure's own options (its title,
    limits, aspect), so each combined frame gets those of ``dynamic``'s frame back.
    """
    layer = hv.Points([])
    hv.streams.SingleTap(source=layer).add_subscriber(on_click)

    def with_figure_options(overlay):
        return overlay.opts(**hv.Store.lookup_options("bokeh", dynamic.last, "plot").kwargs)

    return (dynamic * layer).apply(with_figure_options)


def live_figure(source, function, *args, min_height: int = 380, reads=None):
    """A figure redrawn by ``function(value, *args)`` whenever the parameter ``source``
    (e.g. ``lab.param.result``) changes (:func:`live_map`; for a figure that takes clicks
    see :func:`with_clicks`).

    ``reads(value)``, when given, returns the parts of a value the figure draws (a tuple
    of arrays): a new value whose parts equal the drawn ones leaves the figure alone, as a
    new filter seed leaves the figure of the data.
    """
    if reads is not None:
        source = _when_parts_change(source, reads)
    return pn.pane.HoloViews(live_map(source, function, *args), sizing_mode="stretch_width",
                             min_height=min_height)  # fmt: skip


def live_bokeh_figure(source, build, frame_of, *args, min_height: int = 300):
    """A live Bokeh figure (:mod:`posteriorlab.plots.live`): ``build()`` makes it once,
    and each new value of the parameter ``source`` is written into it by
    ``draw(figure, frame_of(value, *args))``: new data in its sources, no new models."""
    figure = build()

    def show(value) -> None:
        if value is not None:
            live.draw(figure, frame_of(value, *args))

    source.owner.param.watch(lambda event: show(event.new), source.name)
    show(getattr(source.owner, source.name))
    return pn.pane.Bokeh(figure, sizing_mode="stretch_width", min_height=min_height)


def _when_parts_change(source, reads):
    """The parameter ``source``, passed on only when ``reads`` of its value changes."""
    latest = _Latest(value=getattr(source.owner, source.name))

    def parts(value):
        return None if value is None else reads(value)

    def same(these, those) -> bool:
        if these is None or those is None:
            return these is those
        return len(these) == len(those) and all(
            np.array_equal(a, b, equal_nan=True) for a, b in zip(these, those, strict=True)
        )

    drawn = parts(latest.value)

    def refresh(event):
        nonlocal drawn
        new = parts(event.new)
        if not same(new, drawn):
            drawn = new
            latest.value = event.new

    source.owner.param.watch(refresh, source.name)
    return latest.param.value


# Panel's own rules for Markdown tables (its markdown.css), restated last: once a pane
# under a template is updated, Panel also gives it the template's Bootstrap style sheets,
# whose reset takes the cells' borders away (and left-aligns the headers).
TABLE_STYLE = """
table, th, td { border: 1px solid; border-collapse: collapse; padding: 5px; }
th { text-align: center; }
"""


def table_markdown(text, **options) -> pn.pane.Markdown:
    """A Markdown pane for text with tables (``text`` may be bound to results), whose
    tables keep their borders through every update (:data:`TABLE_STYLE`)."""
    return pn.pane.Markdown(text, stylesheets=[TABLE_STYLE], **options)


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
