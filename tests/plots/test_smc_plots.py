"""Every SMC figure renders to Bokeh for every model, with and without an exact answer."""

import holoviews as hv
import numpy as np
import pytest

from posteriorlab.labs.smc import SMCLab, summarize_replicates
from posteriorlab.plots import live
from posteriorlab.plots import smc as figures

SMALL = dict(num_particles=32, num_steps=20, replicates=20)


@pytest.fixture(scope="module", params=["linear_gaussian_2d", "stochastic_volatility"])
def lab(request):
    return SMCLab(model=request.param, **SMALL)


@pytest.mark.parametrize(
    "figure",
    [
        figures.data_plot,
        figures.genealogy_plot,
        figures.surviving_lineages_plot,
        figures.evidence_plot,
    ],
)
def test_result_figures_render(lab, figure):
    hv.render(figure(lab.result), backend="bokeh")


@pytest.mark.parametrize("kind", ["filtering", "smoothing"])
def test_estimate_figures_draw_the_exact_answer_only_when_there_is_one(lab, kind):
    overlay = figures.estimate_plot(lab.result, kind)
    hv.render(overlay, backend="bokeh")
    exact_layers = [layer for layer in overlay if layer.label.startswith("exact")]
    assert len(exact_layers) == (1 if lab.model == "linear_gaussian_2d" else 0)


@pytest.mark.parametrize(
    "figure", [figures.log_evidence_histogram, figures.evidence_ratio_histogram]
)
def test_replicate_figures_render(lab, figure):
    replicates = lab.replicate_result
    overlay = figure(replicates.log_evidence, summarize_replicates(replicates))
    hv.render(overlay, backend="bokeh")


def test_particle_sizes_grow_with_weight(lab):
    sizes = figures.particle_cloud_frame(lab.result).columns["cloud"]["size"]
    weights = lab.result.displayed_weights.reshape(-1)
    order = np.argsort(weights)
    assert np.all(np.diff(sizes[order]) >= 0)
    assert sizes.min() >= 0.5


def sources_of(figure):
    return {renderer.name: renderer.data_source.data for renderer in figure.renderers}


@pytest.mark.parametrize(
    ("build", "frame_of"),
    [
        (figures.particle_cloud_figure, figures.particle_cloud_frame),
        (figures.ess_figure, figures.ess_frame),
    ],
)
def test_live_figures_hold_the_frame_they_are_given(lab, build, frame_of):
    figure = build()
    frame = frame_of(lab.result)
    live.draw(figure, frame)
    assert figure.title.text == frame.title
    drawn = sources_of(figure)
    assert set(frame.columns) <= set(drawn)
    for name, columns in frame.columns.items():
        for column, values in columns.items():
            np.testing.assert_array_equal(drawn[name][column], values)
            assert values.dtype == np.float32  # what the page receives: half of float64


def test_a_new_seed_sends_the_cloud_only_the_columns_that_changed(lab):
    """The particles move and their weights change; the time column stays, and is not
    sent again. A frame of another length replaces the whole table."""
    from bokeh.document import Document
    from bokeh.document.events import ColumnDataChangedEvent

    figure = figures.particle_cloud_figure()
    document = Document()
    document.add_root(figure)
    live.draw(figure, figures.particle_cloud_frame(lab.result))
    sent = []
    document.on_change(lambda event: sent.append(event))
    live.draw(figure, figures.particle_cloud_frame(lab.result))
    assert sent == []  # the same result again: nothing changed, nothing is sent
    other = SMCLab(model=lab.model, **{**SMALL, "seed": 1}).result
    live.draw(figure, figures.particle_cloud_frame(other))
    cloud = figure.select_one({"name": "cloud"}).data_source
    changed = [e for e in sent if isinstance(e, ColumnDataChangedEvent) and e.model is cloud]
    assert [sorted(e.cols) for e in changed] == [["size", "x"]]
    drawn = figures.particle_cloud_frame(other).columns["cloud"]
    np.testing.assert_array_equal(cloud.data["x"], drawn["x"])
    longer = SMCLab(model=lab.model, **{**SMALL, "num_steps": 50}).result
    live.draw(figure, figures.particle_cloud_frame(longer))
    assert len(cloud.data["t"]) == 50 * longer.displayed_particles.shape[1]


def test_the_live_cloud_draws_the_particles_their_weights_and_the_truth(lab):
    result = lab.result
    frame = figures.particle_cloud_frame(result)
    cloud = frame.columns["cloud"]
    num_steps, shown, _ = result.displayed_particles.shape
    assert cloud["x"].size == num_steps * shown
    # Particle j of step t is row t * shown + j, at time t.
    t, j = 3, 5
    assert cloud["t"][t * shown + j] == t
    assert cloud["x"][t * shown + j] == np.float32(result.displayed_particles[t, j, 0])
    np.testing.assert_allclose(frame.columns["hidden state"]["x"], result.states[:, 0], rtol=1e-6)
    assert frame.y_label == ("x_t" if result.states.shape[1] == 1 else "x_t[0]")


def test_a_glyph_without_data_is_hidden_with_its_legend_entry(lab):
    figure = figures.particle_cloud_figure()
    typed = lab.result._replace(states=np.full_like(lab.result.states, np.nan))
    live.draw(figure, figures.particle_cloud_frame(typed))  # typed data: no hidden states
    visible = {renderer.name: renderer.visible for renderer in figure.renderers}
    assert visible == {"cloud": True, "filter mean": True, "hidden state": False}
    (legend,) = figure.legend
    labels = {item.label.value: item.visible for item in legend.items}
    assert labels == {"filter mean": True, "hidden state x_t": False}
    live.draw(figure, figures.particle_cloud_frame(lab.result))
    assert all(renderer.visible for renderer in figure.renderers)
    assert all(item.visible for item in legend.items)


def test_the_live_ess_figure_marks_the_resampling_steps(lab):
    result = lab.result
    frame = figures.ess_frame(result)
    columns = frame.columns
    np.testing.assert_array_equal(columns["resampled"]["t"], np.flatnonzero(result.resampled))
    np.testing.assert_allclose(columns["ess"]["x"], result.ess / result.num_particles, rtol=1e-6)
    assert set(columns["threshold"]["x"]) == {np.float32(result.ess_threshold)}
    assert columns["temperature"]["t"].size == 0  # no annealing: no temperature curve
    assert f"resampled at {result.resampled.sum()} of" in frame.title
