"""The VI dashboard renders to Bokeh models and follows its lab, without a browser."""

import holoviews as hv
import panel as pn
import pytest
from bokeh.document import Document
from bokeh.models import Tabs

from posteriorlab.dashboards import app
from posteriorlab.dashboards.vi import VIDashboard, fit_summary, variance_summary
from posteriorlab.labs.vi import VILab
from posteriorlab.plots import vi as figures


@pytest.fixture(scope="module")
def dashboard():
    return VIDashboard(lab=VILab())


def test_renders_to_a_bokeh_document(dashboard):
    root = pn.panel(dashboard).get_root(Document())
    assert root.select_one({"type": Tabs}) is not None


@pytest.mark.parametrize(
    "figure", [figures.density_plot, figures.bound_plot, figures.kl_plot, figures.variance_plot]
)
def test_figures_render(dashboard, figure):
    dashboard.lab.advance()
    hv.render(figure(dashboard.lab.result), backend="bokeh")


def test_summaries_follow_the_lab(dashboard):
    dashboard.lab.advance()
    assert "vs exact log p(x) **0.000**" in fit_summary(dashboard.lab.result)
    dashboard.lab.estimator = "score"
    assert "Score function (REINFORCE) (in use)" in variance_summary(dashboard.lab.result)


def test_only_the_used_settings_show(dashboard):
    dashboard.lab.param.update(target="mixture", objective="renyi")
    assert dashboard.lab.param["separation"].precedence is None
    assert dashboard.lab.param["curvature"].precedence < 0
    assert dashboard.lab.param["alpha"].precedence is None
    dashboard.lab.param.update(target="banana", objective="elbo")
    assert dashboard.lab.param["num_particles"].precedence < 0


def test_run_starts_and_pause_stops_the_periodic_callback(dashboard):
    dashboard.lab.running = True
    assert dashboard._callback is not None
    dashboard.lab.running = False
    assert dashboard._callback is None


def test_page_renders():
    app.vi_page().server_doc(Document())


def test_axes_follow_a_new_target_and_the_bound_scale():
    """Every layer of an overlay rescales per frame (plots.style.framewise): switching
    from the banana to the cone moves the density plot's window and the bound axis."""
    from bokeh.models import Plot

    lab = VILab()
    root = VIDashboard(lab=lab).main.get_root(Document())

    def ranges(title):
        (plot,) = [p for p in root.select({"type": Plot}) if p.title.text.startswith(title)]
        return plot.x_range.start, plot.x_range.end, plot.y_range.start, plot.y_range.end

    assert ranges("q (blue")[3] > 10  # the banana reaches up to 3 + 8b = 11
    lab.target = "cone"
    for _ in range(3):
        lab.advance()
    x_start, x_end, y_start, y_end = ranges("q (blue")
    half = 5**0.5 + 1.0
    assert x_start == pytest.approx(-half, abs=0.1)
    assert y_end == pytest.approx(half, abs=0.1)
    low, high = ranges("The bound")[2:]
    assert low < -5.3232 < high  # not the banana's range around log p = 0


def test_bad_address_values_are_explained_and_the_good_ones_kept():
    from panel.util import parse_query

    from posteriorlab.dashboards import vi

    lab = VILab(compute=False)
    query = parse_query("?lr=abc&target=cone&K=2.5&family=nonsense&seed=4")
    problems = app.apply_url_values(query, [(lab, vi.URL_PARAMETERS)])
    assert (lab.target, lab.seed) == ("cone", 4)  # the valid values, applied together
    assert len(problems) == 3
    assert any("lr='abc'" in problem and "the lab kept 0.02" in problem for problem in problems)
    assert any("K=2.5" in problem for problem in problems)
    assert any("family='nonsense'" in problem and "valid options" in problem
               for problem in problems)  # fmt: skip
