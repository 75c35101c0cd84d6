"""The distribution-transformer dashboard renders to Bokeh models and follows its lab,
without a browser."""

import holoviews as hv
import numpy as np
import panel as pn
import pytest
from bokeh.document import Document
from bokeh.models import PointDrawTool

from posteriorlab.dashboards import app
from posteriorlab.dashboards.transformer import (
    NUM_ANSWERS,
    TransformerDashboard,
    components_table,
    scores_table,
)
from posteriorlab.labs.transformer import DEFAULT_PRIOR, TransformerLab
from posteriorlab.plots import transformer as figures


@pytest.fixture(scope="module")
def dashboard():
    """A dashboard whose lab the tests change, never rendered: a rendered one's drag
    stream would answer each new result's data with an asyncio task, and outside a
    server or notebook there is no event loop to run it (the rendering tests make their
    own)."""
    return TransformerDashboard(lab=TransformerLab())


def test_renders_to_a_bokeh_document():
    pn.panel(TransformerDashboard(lab=TransformerLab())).get_root(Document())


@pytest.mark.parametrize("likelihood", ["identity", "projection", "norm"])
def test_figures_render(dashboard, likelihood):
    dashboard.lab.likelihood = likelihood
    dashboard.lab.param.trigger("simulate")
    result = dashboard.lab.result
    assert len(result.answers) == NUM_ANSWERS
    density, means, data = (layer(result) for layer in figures.PRIOR_LAYERS)
    hv.render((density * means * data).opts(title=figures.PRIOR_TITLE), backend="bokeh")
    for index in range(NUM_ANSWERS):
        hv.render(figures.answer_plot(result, index), backend="bokeh")
    dashboard.lab.likelihood = "identity"


def test_the_drag_and_the_click_are_linked_to_the_drawn_means(linked_streams):
    dashboard = TransformerDashboard(lab=TransformerLab())
    pn.panel(dashboard).get_root(Document())
    prior = next(iter(dashboard.main.select(pn.pane.HoloViews)))
    assert sorted(linked_streams(prior)) == [("PointPlot", "PointDraw"), ("PointPlot", "SingleTap")]
    figure = next(iter(prior._plots.values()))[0].state
    assert figure.title.text == "Prior and data"
    assert isinstance(figure.toolbar.active_drag, PointDrawTool)  # no tool to pick first
    assert not figure.toolbar.active_drag.add
    caption = next(iter(dashboard.main.select(lambda o: o.name == "prior caption")))
    assert "Drag a **+**" in caption.object
    assert "add an observation" in caption.object


def dropped(result, index, mean):
    """The drag tool's data after the + of component ``index`` is dropped at ``mean``."""
    means = result.prior_means.copy()
    means[index] = mean
    return {"x": means[:, 0].tolist(), "y": means[:, 1].tolist(),
            "weight": result.prior_weights.tolist()}  # fmt: skip


def test_dropping_a_plus_moves_its_component_and_the_posterior(dashboard):
    before = dashboard.lab.result
    dashboard._drag.event(data=dropped(before, 2, (1.0, -3.0)))
    assert dashboard.lab.components.splitlines()[2] == "0.2, 1.000, -3.000, 0.7"
    after = dashboard.lab.result
    assert after.prior_means[2].tolist() == [1.0, -3.0]
    for posterior in ("transformer_components", "exact_components"):  # component 3's moved
        _, old_means = getattr(before, posterior)
        _, new_means = getattr(after, posterior)
        assert np.linalg.norm(new_means[2] - old_means[2]) > 0.1, posterior
    assert dashboard.shown.result is after  # the page shows it
    dashboard.lab.components = DEFAULT_PRIOR


def test_a_deleted_plus_or_a_drop_on_bad_text_changes_nothing(dashboard):
    shown = dashboard.lab.result
    redraws = []
    dashboard._means.streams[0].add_subscriber(lambda **_: redraws.append(True))
    data = dropped(shown, 0, (1.0, 1.0))
    deleted = {name: column[1:] for name, column in data.items()}  # Backspace on the first +
    dashboard._drag.event(data=deleted)
    assert dashboard.lab.components == DEFAULT_PRIOR
    assert dashboard.lab.result is shown
    assert redraws  # the markers are drawn again where the prior has them
    dashboard.lab.components = "0.5, -2, 0, 0.8\n0.5, oops"
    dashboard._drag.event(data=data)
    assert dashboard.lab.components == "0.5, -2, 0, 0.8\n0.5, oops"
    assert "Component 2" in dashboard.lab.error
    dashboard.lab.components = DEFAULT_PRIOR
    assert dashboard.lab.error == ""


def test_a_click_adds_an_observation(dashboard):
    before = dashboard.lab.result.points.shape[0]
    dashboard._add_observation(x=0.5, y=-1.5)
    assert dashboard.lab.result.points.shape[0] == before + 1
    assert "0.500, -1.500" in dashboard.lab.observations


def test_tables_name_every_method_and_component(dashboard):
    scores = scores_table(dashboard.lab.result)
    for name in ("Distribution transformer", "Exact posterior", "Importance sampling",
                 "Tempered SMC", "Full-rank VI", "Exact log p(y)", "temperatures"):  # fmt: skip
        assert name in scores
    components = components_table(dashboard.lab.result)
    assert components.count("\n| ") == 1 + dashboard.lab.result.prior_weights.size


def test_distances_replace_points_and_the_exact_components(dashboard):
    dashboard.lab.likelihood = "norm"
    assert dashboard.lab.param.distances.precedence is None
    assert dashboard.lab.param.observations.precedence == -1
    assert "by grid quadrature" in scores_table(dashboard.lab.result)
    assert "no mixture" in components_table(dashboard.lab.result)
    dashboard._add_observation(x=0.0, y=-2.0)
    assert dashboard.lab.distances.endswith("2.000")
    dashboard.lab.param.update(likelihood="identity",
                               distances="2.1, 2.4")  # fmt: skip
    assert dashboard.lab.param.observations.precedence is None


def test_direction_shows_only_for_the_projection_likelihood(dashboard):
    dashboard.lab.likelihood = "projection"
    assert dashboard.lab.param.direction_degrees.precedence is None
    dashboard.lab.likelihood = "identity"
    assert dashboard.lab.param.direction_degrees.precedence == -1


def test_page_builds():
    app.transformer_page().server_doc(Document())
