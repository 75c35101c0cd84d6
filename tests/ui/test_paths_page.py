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
