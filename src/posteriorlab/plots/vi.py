"""HoloViews figures for the VI lab, built from :class:`~posteriorlab.labs.vi.VIResult`.

Exact answers are grey or black (the posterior density, log p(x)); the fit is blue.
"""

import holoviews as hv
import numpy as np

from posteriorlab.plots.paths import grid_image
from posteriorlab.plots.style import COLORS, FIGURE, OVERLAY, horizontal_log_bars

Z1 = hv.Dimension("x", label="z₁")
Z2 = hv.Dimension("y", label="z₂")
STEP = hv.Dimension("step", label="optimiser step")


def density_plot(result) -> hv.Overlay:
    """q's contours over the exact posterior density, with both means."""
    exact = grid_image(result.grid_x, result.grid_y, result.target_density, "p").redim(x=Z1, y=Z2)
    fitted = grid_image(result.grid_x, result.grid_y, result.q_density, "q").redim(x=Z1, y=Z2)
    # Levels strictly inside (0, max q): a level at 0 would trace where q underflows.
    levels = list(np.linspace(0.0, float(result.q_density.max()), 8)[1:-1])
    contours = hv.operation.contours(fitted, levels=levels).opts(
        cmap=[COLORS["particles"]], line_width=2, show_legend=False
    )
    means = hv.Points([tuple(result.exact_mean)], [Z1, Z2], label="exact mean").opts(
        color=COLORS["truth"], marker="cross", size=16, line_width=3
    ) * hv.Points([tuple(result.q_mean)], [Z1, Z2], label="mean of q").opts(
        color=COLORS["particles"], marker="x", size=14, line_width=3
    )
    return (exact.opts(cmap="Greys", alpha=0.8) * contours * means).opts(
        title="q (blue contours) over the exact posterior (grey)",
        **OVERLAY,
    )


def bound_plot(result) -> hv.Overlay:
    """The objective's value per step (noisy), its running mean, and the exact log p(x).

    The curves are clipped to the range worth showing (not given as ``ylim``: a
    DynamicMap keeps its first frame's plot options), so the axes follow the data."""
    last = max(int(result.steps[-1]) if result.steps.size else 0, 1)
    exact = ([0, last], [result.exact_log_evidence] * 2)
    if result.bounds.size:
        window = min(50, result.bounds.size)
        smooth = np.convolve(result.bounds, np.ones(window) / window, mode="valid")
        # Low enough for most single-sample values of the later half and for its running
        # mean (a heavy lower tail, as on the cone, pulls the mean below most samples);
        # the early climb is drawn clipped at the bottom edge.
        low = min(np.percentile(result.bounds[result.bounds.size // 2 :], 5),
                  smooth[smooth.size // 2 :].min())  # fmt: skip
        span = max(result.exact_log_evidence - low, 0.1)
        ylim = (low - 0.1 * span, result.exact_log_evidence + 0.15 * span)
    else:
        ylim = (result.exact_log_evidence - 1.0, result.exact_log_evidence + 0.2)
    value = hv.Dimension("bound", label="bound (nats)")
    layers = [
        hv.Curve(exact, STEP, value, label=result.evidence_label).opts(
            color=COLORS["truth"], line_dash="dashed", line_width=2
        )
    ]
    if result.bounds.size:
        layers += [
            hv.Curve((result.steps, np.clip(result.bounds, *ylim)), STEP, value,
                     label="bound per step").opts(  # fmt: skip
                color=COLORS["particles"], alpha=0.3
            ),
            hv.Curve((result.steps[window - 1 :], np.clip(smooth, *ylim)), STEP, value,
                     label="running mean").opts(  # fmt: skip
                color=COLORS["particles"], line_width=2.5
            ),
        ]
    return hv.Overlay(layers).opts(title="The bound rises towards log p(x) (dashed)", **OVERLAY)


def kl_plot(result) -> hv.Curve:
    """KL(q ‖ p) by quadrature on the grid, after each chunk."""
    return hv.Curve(
        (result.kl_steps, np.maximum(result.kl, 1e-6)),
        STEP,
        hv.Dimension("kl", label="KL(q ‖ p)"),
    ).opts(
        color=COLORS["smoother"], line_width=2, logy=True, title="KL(q ‖ p) on the grid", **FIGURE
    )


def variance_plot(result) -> hv.Bars:
    """Total variance of each estimator's gradient at the current q, on common random
    numbers (log axis; red: the estimator in use)."""
    data = [
        (label, total, label == result.chosen_estimator)
        for label, total in zip(result.estimator_labels, result.gradient_variance, strict=True)
    ]
    variances = np.maximum(result.gradient_variance, 1e-12)
    return hv.Bars(data, hv.Dimension("estimator"), ["variance", "chosen"]).opts(
        color=hv.dim("chosen").categorize({True: COLORS["data"], False: COLORS["particles"]}),
        **horizontal_log_bars(variances),
        title="Gradient variance at the current q (same random numbers)",
        **FIGURE,
    )
