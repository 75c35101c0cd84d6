"""The VI lab in a real browser: URL state, streaming a fit, switching the estimator."""

import pytest

from .test_smc_page import PAGE_TIMEOUT_MS, control, wait_for_change

pytestmark = pytest.mark.ui


def fit_line(page):
    return page.locator("p", has_text="vs exact log p(x)").first.inner_text()


def steps_shown(page):
    return int(fit_line(page).split(" steps")[0])


def variance_table(page):
    return page.locator("table", has_text="total gradient variance").first.inner_text()


def test_run_streams_the_fit_and_pause_stops_it(server, page, artifacts):
    page.goto(server + "/vi?target=regression&lr=0.01", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("vs exact log p(x)").wait_for(timeout=PAGE_TIMEOUT_MS)
    assert fit_line(page).startswith("0 steps")
    page.get_by_role("button", name="Run / pause").click()
    wait_for_change(page, fit_line, fit_line(page), timeout=120)
    page.wait_for_timeout(1500)
    at_pause = steps_shown(page)
    page.get_by_role("button", name="Run / pause").click()
    # A chunk drawn while the click travels and one already computing when the pause
    # arrives may still appear: two at most.
    page.wait_for_timeout(3000)
    paused = fit_line(page)
    assert at_pause <= steps_shown(page) <= at_pause + 2 * 50
    assert not paused.startswith("0 steps")
    page.wait_for_timeout(2000)
    assert fit_line(page) == paused  # paused: no more chunks
    page.screenshot(path=artifacts / "vi-lab.png", full_page=True)


def test_switching_the_estimator_changes_the_variance_panel(server, page, artifacts):
    page.goto(server + "/vi?target=regression", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("vs exact log p(x)").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.locator(".bk-tab", has_text="Gradients").click()
    page.locator("td", has_text="(in use)").wait_for(timeout=PAGE_TIMEOUT_MS)
    before = variance_table(page)
    assert "Reparameterisation (in use)" in before
    control(page, "Gradient estimator at z").select_option(label="Score function (REINFORCE)")
    after = wait_for_change(page, variance_table, before, timeout=120)
    assert "Score function (REINFORCE) (in use)" in after
    page.wait_for_url("**estimator=score**", timeout=10_000)
    page.screenshot(path=artifacts / "vi-gradients.png", full_page=True)


def test_bad_learning_rate_is_explained(server, page):
    page.goto(server + "/vi?lr=0", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Learning rate = 0").first.wait_for(timeout=PAGE_TIMEOUT_MS)


def test_result_downloads_as_csv(server, page, tmp_path):
    page.goto(server + "/vi?target=regression", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("vs exact log p(x)").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_role("button", name="Step (50 steps)").click()
    page.get_by_text("50 steps ·").wait_for(timeout=60_000)
    with page.expect_download(timeout=60_000) as download:
        page.get_by_text("Download the result (CSV)").click()
    saved = tmp_path / "result.csv"
    download.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0] == "step,bound,log_evidence,kl"
    assert len(lines) == 1 + 50
