"""The distribution-transformer dashboard renders to Bokeh models and follows its lab,
without a browser."""

import holoviews as hv
import panel as pn
import pytest
from bokeh.document import Document

from posteriorlab.dashboards import app
from posteriorlab.dashboards.transformer import (
    NUM_ANSWERS,
    TransformerDashboard,
    components_table,
    scores_table,
)
from posteriorlab.labs.transformer import TransformerLab
from posteriorlab.plots import transformer as figures


@pytest.fixture(scope="module")
def dashboard():
    return TransformerDashboard(lab=TransformerLab())


def test_renders_to_a_bokeh_document(dashboard):
    pn.panel(dashboard).get_root(Document())


@pytest.mark.parametrize("likelihood", ["identity", "projection", "norm"])
def test_figures_render(dashboard, likelihood):
    dashboard.lab.likelihood = likelihood
    dashboard.lab.param.trigger("simulate")
    result = dashboard.lab.result
    assert len(result.answers) == NUM_ANSWERS
    hv.render(figures.prior_plot(result), backend="bokeh")
    for index in range(NUM_ANSWERS):
        hv.render(figures.answer_plot(result, index), backend="bokeh")
    dashboard.lab.likelihood = "identity"


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
