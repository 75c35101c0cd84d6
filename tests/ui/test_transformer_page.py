"""The distribution-transformer lab in a real browser: editing the prior (typed, or by
dragging a mean on the prior plot) updates the posterior, a click adds an observation,
the URL sets the state, bad input is explained."""

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
    # Redrawn tables keep their cell borders (the template's style sheets would reset them).
    for table in ("transformer", "KL(exact"):
        cell = page.locator("table", has_text=table).last.locator("td").first
        assert cell.evaluate("e => getComputedStyle(e).borderTopWidth") == "1px", table
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


# Where the point (x, y) of the figure titled ``title`` is on the page, from Bokeh's own
# view of the figure (its canvas, the frame inside it and the axis ranges).
TO_PAGE = """([title, x, y]) => {
  const view = Bokeh.index.query_one((v) => v.model.title?.text === title);
  const canvas = view.canvas_view.el.getBoundingClientRect();
  const frame = view.frame.bbox, xs = view.model.x_range, ys = view.model.y_range;
  return [canvas.left + frame.left + (x - xs.start) / (xs.end - xs.start) * frame.width,
          canvas.top + frame.top + (ys.end - y) / (ys.end - ys.start) * frame.height];
}"""


def test_a_dragged_mean_moves_its_component_and_a_click_adds_data(server, page, artifacts):
    page.goto(server + "/transformer", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Exact log p(y)").wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Drag a +").wait_for()
    before = components(page)
    x, y = page.evaluate(TO_PAGE, ["Prior and data", 2.0, 1.0])  # the second component's +
    page.mouse.move(x, y)
    page.mouse.down()  # the drag tool is active from the start: nothing to pick first
    for step in range(1, 11):
        page.mouse.move(x + 6 * step, y + 6 * step)
    page.mouse.up()
    after = wait_for_change(page, components, before, timeout=60)
    row = control(page, "Prior components").input_value().splitlines()[1]
    assert row.startswith("0.3, ")  # only the mean changed
    assert row.endswith(", 0.6, 1.0, 0.5")
    mean = [float(value) for value in row.split(",")[1:3]]
    assert mean[0] > 2.5  # dropped right of and below (2, 1)
    assert mean[1] < 0.5
    assert f"0.30 at ({mean[0]:.2f}, {mean[1]:.2f})" in after  # every answer followed

    observations = control(page, "Observed points")
    typed = observations.input_value()
    x, y = page.evaluate(TO_PAGE, ["Prior and data", -1.0, -3.5])
    page.mouse.click(x, y)
    clicked = wait_for_change(page, lambda _: observations.input_value(), typed, timeout=30)
    assert clicked.splitlines()[0] == typed
    point = [float(value) for value in clicked.splitlines()[1].split(",")]
    assert point == pytest.approx([-1.0, -3.5], abs=0.05)
    wait_for_change(page, components, after, timeout=60)  # the posterior saw the new point
    page.screenshot(path=artifacts / "transformer-drag.png", full_page=True)
