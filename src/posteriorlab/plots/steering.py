"""HoloViews figures for the steering tab, built from a
:class:`~posteriorlab.labs.steering.SteeringResult`.

Exact answers are black or grey (the prior p₁ in grey, the tilted target π_λ in black
contours, the line of largest reward dashed); what a method produced is coloured: SMC
blue, best-of-N orange, Rollover Budget Forcing green.
"""

import holoviews as hv
import numpy as np

from posteriorlab.plots.paths import X, Y, grid_image
from posteriorlab.plots.style import COLORS, FIGURE, OVERLAY

METHOD_COLORS = {"smc": COLORS["particles"], "best": "#ff7f0e", "rbf": "#2ca02c"}
STEP = hv.Dimension("step", label="SDE step k")


def _reward_line(result) -> hv.Curve:
    """The points of largest reward, a₁x₁ + a₂x₂ = y, clipped to the view."""
    a1, a2, y = result.observation
    x_low, x_high = result.grid_x[0], result.grid_x[-1]
    y_low, y_high = result.grid_y[0], result.grid_y[-1]
    if abs(a2) >= abs(a1):
        xs = np.array([x_low, x_high])
        ys = (y - a1 * xs) / a2
    else:
        ys = np.array([y_low, y_high])
        xs = (y - a2 * ys) / a1
    return hv.Curve((xs, ys), X, Y, label="largest reward: a·x = y").opts(
        color=COLORS["truth"], line_dash="dashed", line_width=1.5
    )


def answers_plot(result) -> hv.Overlay:
    """Where each method's answers land, over the prior and the exact tilted target."""
    prior = grid_image(result.grid_x, result.grid_y, result.prior_density, "p_1").opts(
        cmap="Greys", alpha=0.45
    )
    tilted = grid_image(result.grid_x, result.grid_y, result.tilted_density, "π")
    contours = hv.operation.contours(tilted, levels=6).opts(
        cmap=[COLORS["truth"]], line_width=1.2, show_legend=False
    )
    largest = max(float(result.smc_weights.max()), 1e-12)
    sizes = 3 + 12 * np.sqrt(result.smc_weights / largest)
    smc = hv.Points(
        (result.smc_particles[:, 0], result.smc_particles[:, 1], sizes),
        kdims=[X, Y],
        vdims="size",
        label="SMC particles (size = weight)",
    ).opts(color=METHOD_COLORS["smc"], size="size", alpha=0.55)
    best = hv.Points(result.best_of_n, kdims=[X, Y], label="best-of-N answers").opts(
        color=METHOD_COLORS["best"], marker="x", size=11, line_width=2.5
    )
    rbf = hv.Points(result.rbf, kdims=[X, Y], label="RBF answers").opts(
        color=METHOD_COLORS["rbf"], marker="diamond", size=10, line_color="white"
    )
    exact_mean = hv.Points([tuple(result.exact_mean)], kdims=[X, Y], label="exact mean of π_λ")
    exact_mean = exact_mean.opts(color=COLORS["truth"], marker="cross", size=16, line_width=3)
    overlay = hv.Overlay([prior, contours, _reward_line(result), smc, best, rbf, exact_mean])
    return overlay.opts(
        title=f"Answers at {result.num_particles * result.num_steps} evaluations each "
        "(black contours: exact π_λ ∝ p·exp(r/λ))",
        xlim=(result.grid_x[0], result.grid_x[-1]),
        ylim=(result.grid_y[0], result.grid_y[-1]),
        data_aspect=1,
        **OVERLAY,
    )


def smc_trajectories_plot(result) -> hv.Overlay:
    """SMC particle positions after each SDE step (a subset), over the tilted target."""
    tilted = grid_image(result.grid_x, result.grid_y, result.tilted_density, "π").opts(
        cmap="Greys", alpha=0.5
    )
    lines = result.smc_trajectories.transpose(1, 0, 2)
    separated = np.concatenate(
        [lines, np.full((lines.shape[0], 1, 2), np.nan, lines.dtype)], axis=1
    ).reshape(-1, 2)
    paths = hv.Path([separated], kdims=[X, Y]).opts(
        color=METHOD_COLORS["smc"], alpha=0.35, line_width=1
    )
    ends = hv.Points(lines[:, -1], kdims=[X, Y]).opts(color=METHOD_COLORS["smc"], size=3)
    return hv.Overlay([tilted, paths, ends]).opts(
        title="SMC particles along the SDE (jumps: resampling copies a particle)",
        xlim=(result.grid_x[0], result.grid_x[-1]),
        ylim=(result.grid_y[0], result.grid_y[-1]),
        data_aspect=1,
        **FIGURE,
    )


def ess_plot(result) -> hv.Overlay:
    """SMC's effective sample size per step, with the steps that resampled marked."""
    steps = np.arange(result.smc_ess.size)
    ess = hv.Dimension("ess", label="ESS / N", range=(0, 1.05))
    curve = hv.Curve((steps, result.smc_ess), STEP, ess, label="ESS / N").opts(
        color=METHOD_COLORS["smc"], line_width=2
    )
    marked = steps[:-1][result.smc_resampled]
    marks = hv.Scatter((marked, np.full(marked.size, 1.0)), STEP, ess, label="resampled").opts(
        color=COLORS["data"], marker="triangle", size=8
    )
    return hv.Overlay([curve, marks]).opts(title="SMC: effective sample size", **OVERLAY)


def rbf_budget_plot(result) -> hv.Bars:
    """Proposals Rollover Budget Forcing spent at each step (mean over the repeats)."""
    steps = np.arange(1, result.rbf_budget.size + 1)
    return hv.Bars(
        (steps, result.rbf_budget), STEP, hv.Dimension("proposals", label="proposals (mean)")
    ).opts(
        color=METHOD_COLORS["rbf"],
        title=f"RBF: where the budget went (N·K/K = {result.num_particles} per step on average)",
        **FIGURE,
    )
