"""The paths and steering figures render, and draw each density where it is."""

import holoviews as hv
import numpy as np
import pytest

from posteriorlab.labs.paths import PathsLab
from posteriorlab.labs.steering import SteeringLab
from posteriorlab.plots import paths as figures
from posteriorlab.plots import steering as steering_figures

# One component far from the origin and off the diagonal, so that a flipped or
# transposed image puts its peak somewhere else.
OFF_CENTRE = "1, 2, 3, 0.4"


@pytest.fixture(scope="module")
def lab():
    lab = PathsLab(num_trajectories=100, num_steps=10, components=OFF_CENTRE)
    lab.train_chunk()
    return lab


@pytest.fixture(scope="module")
def steering(lab):
    return SteeringLab(paths=lab, num_particles=16, num_steps=10)


def images(element):
    return [e for e in element.traverse(lambda e: e, [hv.Image])]


@pytest.mark.parametrize(
    "figure", [figures.density_plot, figures.trajectories_plot, figures.schedule_plot]
)
def test_result_figures_render(lab, figure):
    hv.render(figure(lab.result), backend="bokeh")


@pytest.mark.parametrize(
    "figure",
    [figures.training_loss_plot, figures.velocity_error_plot, figures.learned_field_plot],
)
def test_training_figures_render(lab, figure):
    hv.render(figure(lab.training_result), backend="bokeh")


def test_comparison_figures_render(lab):
    hv.render(figures.budget_plot(lab.comparison), backend="bokeh")
    hv.render(figures.kinetic_energy_plot(lab.comparison, "Cosine"), backend="bokeh")


@pytest.mark.parametrize(
    "figure",
    [
        steering_figures.answers_plot,
        steering_figures.smc_trajectories_plot,
        steering_figures.ess_plot,
        steering_figures.rbf_budget_plot,
    ],
)
def test_steering_figures_render(steering, figure):
    hv.render(figure(steering.result), backend="bokeh")


def test_target_density_is_drawn_at_the_component(lab):
    """The image's value at the mean (2, 3) is its maximum; at the mirror images (2, -3)
    and (3, 2) it is below 1 %."""
    for image in images(figures.trajectories_plot(lab.result)) + images(
        figures.density_plot(lab.result)
    )[1:]:
        peak = image[2.0, 3.0]
        assert peak == pytest.approx(np.max(image.dimension_values(2)), rel=0.05)
        assert image[2.0, -3.0] < 1e-2 * peak
        assert image[3.0, 2.0] < 1e-2 * peak


def test_tilted_target_is_drawn_where_the_reward_pulls(steering):
    """Observing x₁ + 0.5 x₂ = 0.8 pulls the posterior of the off-centre component down
    its covariance towards the line; the image peak must be at the exact posterior mean."""
    result = steering.result
    (tilted,) = images(steering_figures.smc_trajectories_plot(result))
    x, y = tilted.dimension_values(0), tilted.dimension_values(1)
    values = tilted.dimension_values(2)
    peak = np.array([x[np.argmax(values)], y[np.argmax(values)]])
    spacing = result.grid_x[1] - result.grid_x[0]
    np.testing.assert_allclose(peak, result.exact_mean, atol=1.5 * spacing)


def test_kinetic_energies_share_a_readable_log_axis(lab):
    """VE paths cost hundreds of times more than the others; on a linear axis every other
    bar would vanish."""
    figure = hv.render(figures.kinetic_energy_plot(lab.comparison, "Cosine"), backend="bokeh")
    assert type(figure.x_scale).__name__ == "LogScale"
    assert figure.x_range.start <= lab.comparison.kinetic_energy.min()
