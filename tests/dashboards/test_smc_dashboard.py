"""The SMC dashboard renders to Bokeh models and follows its lab, without a browser."""

import panel as pn
import pytest
from bokeh.document import Document
from bokeh.models import Tabs

from posteriorlab.dashboards import app
from posteriorlab.dashboards.smc import SMCDashboard, evidence_summary, replicates_summary
from posteriorlab.labs.smc import SMCLab

SMALL = dict(num_particles=64, num_steps=20, replicates=20)


@pytest.fixture
def dashboard():
    return SMCDashboard(lab=SMCLab(**SMALL))


def find(layout, name):
    return next(obj for obj in layout.select(lambda o: getattr(o, "name", None) == name))


def test_renders_to_a_bokeh_document(dashboard):
    root = pn.panel(dashboard).get_root(Document())
    assert root.select_one({"type": Tabs}) is not None


def test_summary_follows_the_lab(dashboard):
    lab = dashboard.lab
    before = evidence_summary(lab.result)
    assert "exact log Z (Kalman)" in before
    assert before.startswith("**Filter seed 0:**")
    lab.num_particles = 256
    assert evidence_summary(lab.result) != before
    assert replicates_summary(lab.replicate_result) == ""  # not while on the Particles tab
    tabs = dashboard.main.select(pn.Tabs)[0]
    tabs.active = tabs._names.index("Evidence")
    assert "N = 256" in replicates_summary(lab.replicate_result)


def test_error_alert_shows_the_message_and_hides_when_fixed(dashboard):
    alert = find(dashboard.main, "error")
    assert not alert.visible
    dashboard.lab.num_particles = 0
    assert alert.visible
    assert "N = 0" in alert.object
    dashboard.lab.num_particles = 64
    assert not alert.visible


def test_controls_hide_parameters_the_model_ignores(dashboard):
    dashboard.lab.model = "growth"
    assert dashboard.lab.param["rho"].precedence < 0
    dashboard.lab.model = "linear_gaussian_1d"
    assert dashboard.lab.param["rho"].precedence is None


@pytest.mark.parametrize("page", [app.landing_page, app.smc_page])
def test_pages_render(page):
    page().server_doc(Document())


@pytest.mark.parametrize("page", [app.landing_page, app.smc_page])
def test_a_page_follows_no_server_wide_busy_flag(page):
    """Panel's busy spinner follows one flag for the whole server: on a served page it
    would spin whenever any student anywhere moved a control, and every page's spinner
    would be redrawn and sent for each change."""
    synced = list(pn.state._indicators)
    built = page()
    built.server_doc(Document())
    assert built.busy_indicator is None
    assert pn.state._indicators == synced


def test_replicates_run_only_while_the_evidence_tab_is_open(dashboard):
    tabs = dashboard.main.select(pn.Tabs)[0]
    assert tabs.active == 0
    assert not dashboard.lab.replicates_shown
    tabs.active = tabs._names.index("Evidence")
    assert dashboard.lab.replicates_shown
    assert dashboard.lab.replicate_result is not None
    tabs.active = 0
    assert not dashboard.lab.replicates_shown


def test_the_smoother_runs_only_while_the_estimates_tab_is_open(dashboard):
    tabs = dashboard.main.select(pn.Tabs)[0]
    lab = dashboard.lab
    assert not lab.smoothing_shown
    lab.seed = 3
    assert lab.result.smoothing_mean is None
    assert "smoother: Estimates tab" in evidence_summary(lab.result)
    tabs.active = tabs._names.index("Estimates")
    assert lab.smoothing_shown
    assert lab.result.smoothing_mean is not None
    assert "filter + smoother took" in evidence_summary(lab.result)
    tabs.active = 0
    lab.seed = 4
    assert lab.result.smoothing_mean is None
