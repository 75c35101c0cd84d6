"""The paths dashboard renders to Bokeh models and follows its lab, without a browser."""

import panel as pn
import pytest
from bokeh.document import Document
from bokeh.models import Tabs

from posteriorlab.dashboards import app
from posteriorlab.dashboards.paths import PathsDashboard, result_summary
from posteriorlab.labs.paths import PathsLab


def find(layout, name):
    return next(obj for obj in layout.select(lambda o: getattr(o, "name", None) == name))


@pytest.fixture(scope="module")
def dashboard():
    return PathsDashboard(lab=PathsLab(num_trajectories=100, num_steps=10))


def test_renders_to_a_bokeh_document(dashboard):
    root = pn.panel(dashboard).get_root(Document())
    assert root.select_one({"type": Tabs}) is not None


def test_summary_follows_the_lab(dashboard):
    before = result_summary(dashboard.lab.result)
    assert "Cond-OT" in before
    dashboard.lab.schedule = "cosine"
    after = result_summary(dashboard.lab.result)
    assert "Cosine" in after
    assert "energy distance" in after


def test_error_alert_shows_the_message_and_hides_when_fixed(dashboard):
    alert = find(dashboard.main, "error")
    dashboard.lab.num_steps = 0
    assert alert.visible
    assert "Steps = 0" in alert.object
    dashboard.lab.num_steps = 10
    assert not alert.visible


def test_only_the_chosen_schedule_parameters_show(dashboard):
    dashboard.lab.schedule = "vp"
    assert dashboard.lab.param["vp_beta_max"].precedence is None
    assert dashboard.lab.param["polynomial_exponent"].precedence < 0
    dashboard.lab.integrator = "sde"
    assert dashboard.lab.param["noise_level"].precedence is None
    dashboard.lab.integrator = "heun"
    assert dashboard.lab.param["noise_level"].precedence < 0


def test_click_adds_a_component(dashboard):
    before = dashboard.lab.components.count("\n")
    dashboard._add_component(x=1.0, y=-1.0)
    assert dashboard.lab.components.count("\n") == before + 1


def test_clicks_on_the_density_and_trajectories_reach_the_lab(linked_streams):
    dashboard = PathsDashboard(lab=PathsLab(num_trajectories=100, num_steps=10))
    pn.panel(dashboard).get_root(Document())
    trajectories, density = dashboard.main.select(pn.pane.HoloViews)[:2]  # the first tab's
    for pane in (trajectories, density):
        assert linked_streams(pane) == [("PointPlot", "SingleTap")]  # the layer on top
    figure = next(iter(density._plots.values()))[0].state
    assert figure.title.text.startswith("Exact density p_t and velocity u_t at t =")
    assert figure.x_range.start == dashboard.lab.result.grid_x[0]  # the figure's own limits


def test_page_renders():
    app.paths_page().server_doc(Document())
