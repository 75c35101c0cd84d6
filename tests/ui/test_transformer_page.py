"""The distribution-transformer lab in a real browser: editing the prior updates the
posterior, the URL sets the state, bad input is explained."""

import pytest

from .test_smc_page import PAGE_TIMEOUT_MS, control, wait_for_change

pytestmark = pytest.mark.ui


def components(page):
    return page.locator("table", has_text="transformer").last.inner_text()


def scores(page):
    return page.locator("table", has_text="KL(exact").first.inner_text()


def test_changing_the_prior_updates_the_posterior(server, page, artifacts):
    page.goto(server + "/transformer?sigma=3", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Exact log p(y)").wait_for(timeout=PAGE_TIMEOUT_MS)
    # The URL set the noise, outside the range the network was trained on.
    page.get_by_text("lies outside the noise the network was trained on").wait_for(timeout=30_000)
    before = components(page)
    box = control(page, "Prior components")
    box.fill("0.5, -1, 0, 1\n0.5, 1.5, 1, 0.5")
    box.blur()  # a text area commits its value when it loses focus
    after = wait_for_change(page, components, before, timeout=60)
    assert "0.50 at (-1.00, 0.00)" in after
    assert "0.50 at (1.50, 1.00)" in after
    assert "| 3 |" not in after.replace("\t", " | ")
    page.wait_for_url("**prior=**", timeout=10_000)
    page.screenshot(path=artifacts / "transformer-lab.png", full_page=True)


def test_weights_that_do_not_sum_to_one_are_explained(server, page):
    page.goto(server + "/transformer", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Exact log p(y)").wait_for(timeout=PAGE_TIMEOUT_MS)
    before = scores(page)
    box = control(page, "Prior components")
    box.fill("0.7, 0, 0, 1\n0.7, 2, 0, 1")
    box.blur()
    page.get_by_text("weights sum to 1.4; they must sum to 1").wait_for(timeout=30_000)
    assert scores(page) == before  # the last good result stays


def test_distances_give_the_quadrature_and_smc(server, page, artifacts):
    page.goto(server + "/transformer", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Exact log p(y)").wait_for(timeout=PAGE_TIMEOUT_MS)
    control(page, "Likelihood").select_option(label="See the distance: r = ‖x‖ + noise")
    page.get_by_text("Exact posterior (by grid quadrature)").first.wait_for(timeout=120_000)
    before = scores(page)
    box = control(page, "Observed distances")
    box.fill("1.0, 1.2")
    box.blur()
    after = wait_for_change(page, scores, before, timeout=120)
    assert "Tempered SMC" in after
    page.wait_for_url("**likelihood=norm**", timeout=10_000)
    page.screenshot(path=artifacts / "transformer-distance.png", full_page=True)
