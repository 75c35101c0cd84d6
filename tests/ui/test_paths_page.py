"""The paths lab in a real browser: URL state, a schedule change, bad input."""

import pytest

from .test_smc_page import PAGE_TIMEOUT_MS, control, wait_for_change

pytestmark = pytest.mark.ui


def summary_line(page):
    return page.locator("p", has_text="kinetic energy").first.inner_text()


def test_schedule_change_redraws_the_trajectories(server, page, artifacts):
    page.goto(server + "/paths?steps=20&trajectories=300", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("energy distance to exact draws").wait_for(timeout=PAGE_TIMEOUT_MS)
    first = summary_line(page)
    assert "Cond-OT" in first  # the default
    assert "20 steps" in first  # from the URL
    control(page, "Schedule").select_option(label="Cosine")
    second = wait_for_change(page, summary_line, first, timeout=120)
    assert "Cosine" in second
    page.wait_for_url("**schedule=cosine**", timeout=10_000)
    page.screenshot(path=artifacts / "paths-lab.png", full_page=True)


def test_bad_step_count_is_explained_and_nothing_is_lost(server, page, artifacts):
    page.goto(server + "/paths?steps=20&trajectories=300", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("energy distance to exact draws").wait_for(timeout=PAGE_TIMEOUT_MS)
    before = summary_line(page)
    steps = control(page, "Steps")
    steps.fill("0")
    steps.press("Enter")
    page.get_by_text("Steps = 0 is not allowed").wait_for()
    assert summary_line(page) == before
    page.screenshot(path=artifacts / "paths-bad-input.png", full_page=True)


def test_malformed_address_values_are_explained_and_the_rest_applied(server, page):
    page.goto(server + "/paths?steps=abc&schedule=cosine&trajectories=7", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("energy distance to exact draws").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("The address sets steps='abc'").wait_for(timeout=30_000)
    page.get_by_text("The address sets trajectories=7").wait_for(timeout=30_000)
    assert summary_line(page).startswith("Cosine")  # the valid value was applied


def steering_table(page):
    return page.locator("table", has_text="Rollover Budget Forcing").first.inner_text()


def open_steering_tab(page, url):
    page.goto(url, timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("energy distance to exact draws").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.locator(".bk-tab", has_text="Steering").click()


def test_steering_tab_follows_its_controls(server, page, artifacts):
    open_steering_tab(page, server + "/paths?steps=20&trajectories=300&N=16&K=10")
    page.locator("td", has_text="Rollover Budget Forcing").wait_for(timeout=PAGE_TIMEOUT_MS)
    first = steering_table(page)
    assert "160" in first  # N × K = 16 × 10 evaluations per answer, from the URL
    control(page, "Particles N").select_option("64")
    second = wait_for_change(page, steering_table, first, timeout=180)
    assert "640" in second
    page.wait_for_url("**N=64**", timeout=10_000)
    page.screenshot(path=artifacts / "paths-steering.png", full_page=True)


def test_bad_steering_input_from_the_url_is_explained(server, page):
    open_steering_tab(page, server + "/paths?steps=20&trajectories=300&N=16&K=10&obs_sd=0")
    page.get_by_text("Observation noise sd σ_y = 0").wait_for(timeout=PAGE_TIMEOUT_MS)
    assert "must be positive" in page.get_by_text("Observation noise sd σ_y = 0").inner_text()


def test_flow_matching_trains_on_request(server, page, artifacts):
    page.goto(server + "/paths?steps=20&trajectories=300", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("energy distance to exact draws").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.locator(".bk-tab", has_text="Flow matching").click()
    page.get_by_text("No network yet").wait_for()
    page.get_by_role("button", name="Train 200 steps").click()
    page.get_by_text("loss on the fixed set").wait_for(timeout=PAGE_TIMEOUT_MS)
    assert "200 steps" in page.locator("p", has_text="loss on the fixed set").inner_text()
    page.screenshot(path=artifacts / "paths-flow-matching.png", full_page=True)
