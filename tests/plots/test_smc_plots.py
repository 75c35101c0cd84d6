"""Every SMC figure renders to Bokeh for every model, with and without an exact answer."""

import holoviews as hv
import numpy as np
import pytest

from posteriorlab.labs.smc import SMCLab, summarize_replicates
from posteriorlab.plots import smc as figures

SMALL = dict(num_particles=32, num_steps=20, replicates=20)


@pytest.fixture(scope="module", params=["linear_gaussian_2d", "stochastic_volatility"])
def lab(request):
    return SMCLab(model=request.param, **SMALL)


@pytest.mark.parametrize(
    "figure",
    [
        figures.data_plot,
        figures.particle_cloud_plot,
        figures.ess_plot,
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
    cloud = figures.particle_cloud_plot(lab.result).get(0)
    sizes = cloud.dimension_values("size")
    weights = lab.result.displayed_weights.reshape(-1)
    order = np.argsort(weights)
    assert np.all(np.diff(sizes[order]) >= 0)
