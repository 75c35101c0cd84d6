"""HoloViews figures for the distribution-transformer lab, built from
:class:`~posteriorlab.labs.transformer.TransformerResult`.

Exact answers are black (contours of the exact posterior over every approximation), the
data red (points, lines of constant a·x, or circles of the observed distances), the
prior's component means grey crosses sized by weight.
"""

import holoviews as hv
import numpy as np

from posteriorlab.plots.paths import grid_image
from posteriorlab.plots.style import COLORS, OVERLAY

X1 = hv.Dimension("x", label="x₁")
X2 = hv.Dimension("y", label="x₂")


def _image(result, density, name):
    return grid_image(result.grid_x, result.grid_y, density, name).redim(x=X1, y=X2)


def _contours(result, density, color, label):
    levels = list(np.linspace(0.0, float(density.max()), 6)[1:-1])
    return hv.operation.contours(_image(result, density, "p"), levels=levels).opts(
        cmap=[color], line_width=1.5, show_legend=False
    ).relabel(label)


def _circle(radius, count=181):
    angles = np.linspace(0.0, 2.0 * np.pi, count)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=-1)


def _points(result):
    layers = [
        hv.Points(result.points, [X1, X2], label="observations").opts(
            color=COLORS["data"], size=8, marker="circle"
        )
    ]
    if result.distances is not None:
        # Each observed distance r: the circle of points at that distance from the origin.
        circles = [_circle(r) for r in result.distances if r > 0]
        layers.append(
            hv.Path(circles, [X1, X2], label="observed distances").opts(
                color=COLORS["data"], alpha=0.6, line_dash="dashed"
            )
        )
    if result.direction is not None and result.points.size:
        # Each observation fixes a·x to a value: the line of points that would give it.
        a = result.direction
        across = np.array([-a[1], a[0]])
        span = 2.0 * max(result.grid_x[-1] - result.grid_x[0], result.grid_y[-1] - result.grid_y[0])
        paths = [
            np.stack([value * a - span * across, value * a + span * across])
            for value in result.points @ a
        ]
        layers.append(
            hv.Path(paths, [X1, X2]).opts(color=COLORS["data"], alpha=0.5, line_dash="dashed")
        )
    if result.truth is not None:
        layers.append(
            hv.Points([tuple(result.truth)], [X1, X2], label="true parameter").opts(
                color="gold", marker="star", size=18, line_color="black"
            )
        )
    return layers


def prior_density(result) -> hv.Image:
    """The prior density (the bottom layer of the prior plot)."""
    return _image(result, result.prior_density, "prior").opts(cmap="Greys", alpha=0.7)


def prior_means(result) -> hv.Points:
    """The prior's component means as crosses sized by weight, in the order of the
    components (a dashboard drags them: point k is component k)."""
    return hv.Points(
        {"x": result.prior_means[:, 0], "y": result.prior_means[:, 1],
         "weight": result.prior_weights},
        [X1, X2], ["weight"], label="prior means",
    ).opts(color=COLORS["truth"], marker="cross", size=hv.dim("weight") * 30 + 6, line_width=2)


def prior_data(result) -> hv.Overlay:
    """The data drawn on the prior: points, lines of a·x or circles of distances, the
    simulated truth."""
    return hv.Overlay(_points(result))


PRIOR_LAYERS = (prior_density, prior_means, prior_data)
"""The layers of the prior plot, bottom to top: a dashboard draws each as a live layer
(its means take the drag and the click), overlaid in this order."""
PRIOR_TITLE = "Prior and data"


def answer_plot(result, index: int) -> hv.Overlay:
    """Answer ``index`` (transformer, exact, importance sampling, tempered SMC, VI) as a
    density (the particle answers binned on the grid), with the exact posterior's contours;
    the transformer's panel adds arrows from each prior component's mean to its posterior
    component's mean."""
    answer = result.answers[index]
    exact = result.answers[1]
    layers = [_image(result, answer.density, "q").opts(cmap="Blues")]
    if index != 1:
        layers.append(_contours(result, exact.density, COLORS["truth"], "exact posterior"))
    if index == 0:
        _, means = result.transformer_components
        segments = [np.stack([start, end]) for start, end in zip(result.prior_means, means,
                                                                   strict=True)]  # fmt: skip
        layers += [
            hv.Path(segments, [X1, X2]).opts(color=COLORS["smoother"], line_width=2),
            hv.Points(means, [X1, X2], label="posterior component means").opts(
                color=COLORS["smoother"], size=8
            ),
        ]
    layers += _points(result)
    return hv.Overlay(layers).opts(title=answer.name, **OVERLAY)
