"""The pieces every lab page shares: what reaches the page of a lab's results, and when."""

import holoviews as hv
import numpy as np
import panel as pn
import param
import pytest
from bokeh.document import Document
from panel.io.state import set_curdoc

from posteriorlab.dashboards.common import (
    frozen_model_graph,
    live_figure,
    page_copy,
    while_tab_open,
)


class Lab(param.Parameterized):
    result = param.Parameter(None)
    error = param.String("")


@pytest.fixture
def served_document(monkeypatch):
    """A document that behaves as a served page's: it has a session (until the test sets
    ``document.closed``), and its next-tick callbacks wait in ``document.queued`` until the
    test runs them, as the event loop would."""
    monkeypatch.setattr(
        Document, "session_context", property(lambda self: None if self.closed else object())
    )
    document = Document()
    document.closed = False
    document.queued = []
    monkeypatch.setattr(document, "add_next_tick_callback", document.queued.append)
    return document


def test_a_page_copy_follows_its_lab_at_once_without_a_server():
    lab = Lab()
    copy = page_copy(lab, ["result", "error"])
    lab.result = 1
    lab.param.update(result=2, error="bad")
    assert (copy.result, copy.error) == (2, "bad")


def test_each_copy_keeps_its_own_values():
    """Copies share a class per set of names; a value of one never shows in another."""
    first, second, third = Lab(result="first"), Lab(result="second"), Lab(result="third")
    copies = [page_copy(first, ["result", "error"]), page_copy(second, ["result"]),
              page_copy(third, ["result", "error"])]  # fmt: skip
    assert [copy.result for copy in copies] == ["first", "second", "third"]
    second.result = "changed"
    assert [copy.result for copy in copies] == ["first", "changed", "third"]


def test_a_served_copy_applies_only_the_newest_results_in_one_callback(served_document):
    lab = Lab(result=0)
    with set_curdoc(served_document):
        copy = page_copy(lab, ["result", "error"])
    drawn = []
    copy.param.watch(lambda event: drawn.append(event.new), "result")
    for value in (1, 2, 3):  # three results while the event loop is busy elsewhere
        lab.result = value
    lab.error = "late"
    assert copy.result == 0
    assert len(served_document.queued) == 1
    served_document.queued.pop()()
    assert drawn == [3]
    assert copy.error == "late"
    lab.result = 4  # the next result queues a callback of its own
    assert len(served_document.queued) == 1


def test_a_copy_drops_results_that_arrive_after_its_page_closed(served_document):
    lab = Lab(result=0)
    with set_curdoc(served_document):
        copy = page_copy(lab, ["result"])
    served_document.closed = True
    lab.result = 1  # a computation that finished after the student closed the tab
    assert served_document.queued == []
    assert copy.result == 0


def test_while_tab_open_passes_values_on_only_to_an_open_tab():
    lab = Lab(result="first")
    tabs = pn.Tabs(("A", pn.pane.Markdown("a")), ("B", pn.pane.Markdown("b")))
    gated = while_tab_open(lab.param.result, tabs, 1)
    received = []
    gated.owner.param.watch(lambda event: received.append(event.new), gated.name)
    assert getattr(gated.owner, gated.name) is None  # tab B is closed
    lab.result = "second"
    assert received == []
    tabs.active = 1
    assert received == ["second"]  # opening the tab delivers the newest value
    tabs.active = 0
    tabs.active = 1
    assert received == ["second"]  # reopening without a new value sends nothing again
    lab.result = "third"
    assert received == ["second", "third"]


def test_a_live_figure_that_reads_parts_redraws_only_when_they_change():
    lab = Lab(result={"data": np.arange(3.0), "seed": 0})
    calls = []

    def draw(result):
        calls.append(result["seed"])
        return hv.Curve(result["data"])

    pane = live_figure(lab.param.result, draw, reads=lambda r: (r["data"],))
    pane.get_root(Document())
    lab.result = {"data": np.arange(3.0), "seed": 1}  # equal data: nothing to redraw
    lab.result = {"data": np.arange(3.0) + 1, "seed": 2}
    assert calls == [0, 2]
    assert pane.object.callback.memoize is False  # results are never looked up by hash


def test_building_a_lab_page_walks_its_model_graph_once(monkeypatch):
    """Bokeh re-walks a document's models after each change to their links; the page
    template holds the walks back until the page is built (about twenty otherwise)."""
    from bokeh.document.models import DocumentModelManager

    from posteriorlab.dashboards import app

    walks = []
    recompute = DocumentModelManager.recompute
    monkeypatch.setattr(
        DocumentModelManager, "recompute", lambda self: walks.append(1) or recompute(self)
    )
    document = Document()
    with set_curdoc(document):
        app.smc_page().server_doc(document)
    assert len(document.roots) > 0
    assert len(walks) == 1


def count_walks(monkeypatch) -> list:
    from bokeh.document.models import DocumentModelManager

    walks = []
    recompute = DocumentModelManager.recompute
    monkeypatch.setattr(
        DocumentModelManager, "recompute", lambda self: walks.append(1) or recompute(self)
    )
    return walks


def test_a_frozen_graph_is_walked_only_when_a_change_adds_models(monkeypatch):
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    document = Document()
    plot = figure()
    source = ColumnDataSource(dict(x=[0.0], y=[0.0]))
    plot.scatter("x", "y", source=source)
    document.add_root(plot)
    walks = count_walks(monkeypatch)
    with frozen_model_graph(document):
        source.data = dict(x=[1.0, 2.0], y=[3.0, 4.0])  # new data, no new models
        plot.title.text = "new"
    assert walks == []
    with frozen_model_graph(document):
        line = plot.line([0, 1], [1, 0])  # a new glyph and its source
        plot.title.text = "newer"
    assert walks == [1]
    assert document.get_model_by_id(line.id) is line  # the walk found it
    assert document.get_model_by_id(line.data_source.id) is line.data_source
    with frozen_model_graph(document), frozen_model_graph(document):  # nested: one walk
        inner = plot.line([0, 1], [0, 1])
    assert walks == [1, 1]
    assert document.get_model_by_id(inner.id) is inner


def test_a_new_result_on_the_particles_tab_costs_no_walk(monkeypatch):
    """The SMC page's first tab draws each result by writing data into its sources."""
    from posteriorlab.dashboards.smc import SMCDashboard
    from posteriorlab.labs.smc import SMCLab

    document = Document()
    with set_curdoc(document):
        dashboard = SMCDashboard(lab=SMCLab(num_particles=64, num_steps=20))
        document.add_root(dashboard.main.get_root(document))
    walks = count_walks(monkeypatch)
    with frozen_model_graph(document):
        dashboard.lab.seed = 1
    assert walks == []
    (cloud,) = [r for r in document.models if getattr(r, "name", None) == "cloud"]
    shown = dashboard.lab.result.displayed_particles[..., 0].reshape(-1)
    np.testing.assert_array_equal(cloud.data_source.data["x"], shown.astype(np.float32))
