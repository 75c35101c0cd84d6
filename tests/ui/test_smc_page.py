"""The SMC lab in a real browser: URL state, live updates, bad input, a screenshot."""

import time

import pytest

pytestmark = pytest.mark.ui

PAGE_TIMEOUT_MS = 240_000  # the first page of a fresh server compiles the default programs


def control(page, label):
    """The input element of the widget labelled ``label``."""
    return page.locator(".bk-input-group", has_text=label).locator("input, select, textarea").first


def evidence_line(page):
    return page.locator("p", has_text="log-evidence").first.inner_text()


def wait_for_change(page, read, before, timeout=60.0):
    deadline = time.monotonic() + timeout
    while (now := read(page)) == before:
        assert time.monotonic() < deadline, f"the page did not update (still {before!r})"
        page.wait_for_timeout(100)
    return now


def test_landing_page_lists_the_labs(server, page, artifacts):
    page.goto(server + "/")
    page.get_by_text("Open the Sequential Monte Carlo lab").wait_for()
    page.screenshot(path=artifacts / "landing.png", full_page=True)


def test_smc_lab_follows_its_controls(server, page, artifacts):
    page.goto(server + "/smc?N=500&seed=3", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("exact log Z (Kalman)").wait_for(timeout=PAGE_TIMEOUT_MS)
    assert control(page, "Particles N").input_value() == "500"  # the URL set the state
    page.locator(".bk-tab", has_text="Evidence").click()
    page.get_by_text("with N = 500").wait_for(timeout=PAGE_TIMEOUT_MS)  # replicates arrived

    first = evidence_line(page)
    particles = control(page, "Particles N")
    particles.fill("200")
    particles.press("Enter")
    second = wait_for_change(page, evidence_line, first, timeout=120)
    page.get_by_text("with N = 200").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.wait_for_url("**N=200**", timeout=10_000)

    control(page, "Resampling scheme").select_option(label="Multinomial")
    wait_for_change(page, evidence_line, second, timeout=120)
    page.wait_for_url("**resampling=multinomial**", timeout=10_000)
    assert not page.get_by_text("Input problem").is_visible()
    page.screenshot(path=artifacts / "smc-lab.png", full_page=True)


def test_bad_particle_count_is_explained_and_nothing_is_lost(server, page, artifacts):
    page.goto(server + "/smc?N=200", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("exact log Z (Kalman)").wait_for(timeout=PAGE_TIMEOUT_MS)
    before = evidence_line(page)
    particles = control(page, "Particles N")
    particles.fill("0")
    particles.press("Enter")
    page.get_by_text("Particles N = 0 is not allowed").wait_for()
    assert evidence_line(page) == before  # the last good result stays
    page.screenshot(path=artifacts / "smc-bad-input.png", full_page=True)
    particles.fill("200")
    particles.press("Enter")
    page.get_by_text("Particles N = 0 is not allowed").wait_for(state="hidden")


def test_copied_link_keeps_the_view_and_drops_a_login_token(server, page):
    """Behind Binder or a JupyterHub the address can carry the server's login token; the
    shared link must reproduce the view without handing that token on."""
    page.add_init_script(
        "navigator.clipboard.writeText = async (text) => { window.copiedLink = text; };"
    )
    page.goto(server + "/smc?N=500&seed=3&token=secret", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("exact log Z (Kalman)").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_role("button", name="Copy a link to this view").click()
    page.wait_for_function("window.copiedLink !== undefined", timeout=30_000)
    link = page.evaluate("window.copiedLink")
    assert "N=500" in link
    assert "seed=3" in link
    assert "token" not in link
