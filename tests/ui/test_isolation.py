"""Two students on one server: what one changes never reaches the other's page (two
browser contexts, i.e. two independent sessions with their own cookies and labs)."""

import pytest

from .test_smc_page import PAGE_TIMEOUT_MS, control, wait_for_change
from .test_transformer_page import components

pytestmark = pytest.mark.ui


@pytest.fixture
def second_page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    yield page
    context.close()


def test_one_students_prior_never_reaches_another(server, page, second_page):
    for each in (page, second_page):
        each.goto(server + "/transformer", timeout=PAGE_TIMEOUT_MS)
        each.get_by_text("Exact log p(y)").wait_for(timeout=PAGE_TIMEOUT_MS)
    untouched = components(second_page)
    assert components(page) == untouched
    box = control(page, "Prior components")
    box.fill("1, 3, 3, 0.5")
    box.blur()
    changed = wait_for_change(page, components, untouched, timeout=60)
    assert "1.00 at (3.00, 3.00)" in changed
    second_page.wait_for_timeout(2000)  # time for any leak to arrive
    assert components(second_page) == untouched
    assert "prior=" not in second_page.url

