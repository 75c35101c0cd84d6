"""HoloViews figures for the paths lab, built from :mod:`posteriorlab.labs.paths` results.

Plain functions of plain results (numpy arrays in NamedTuples), so the dashboard, the
notebook and the tests share them. Convention: exact answers (the target density, exact
draws, the kinetic-optimal schedule) are black or grey; what the integrator produced is
coloured.
"""

import holoviews as hv
import numpy as np

from posteriorlab.plots.style import COLORS, FIGURE, OVERLAY, horizontal_log_bars

X = hv.Dimension("x", label="x₁ coordinate")
Y = hv.Dimension("y", label="x₂ coordinate")
SCHEDULE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#111111")


def grid_image(grid_x, grid_y, values, vdim: str) -> hv.Image:
    """A density on a grid as an image; ``values[i, j]`` is the value at
    ``(grid_x[j], grid_y[i])`` (rows = y, ascending).

    Coordinates are passed with the values so HoloViews orients the rows itself (given
    only ``bounds`` it would take row 0 as the *top* of the picture and flip the density).
    """
    return hv.Image((grid_x, grid_y, values), kdims=[X, Y], vdims=vdim)


def _square(element, result):
    return element.opts(
        xlim=(result.grid_x[0], result.grid_x[-1]),
        ylim=(result.grid_y[0], result.grid_y[-1]),
        data_aspect=1,
    )


def density_plot(result) -> hv.Overlay:
    """The exact density p_t as a heat map, the velocity u_t as arrows, target contours."""
    heat = grid_image(result.grid_x, result.grid_y, result.density, "p_t").opts(
        cmap="Blues", colorbar=True, clabel="p_t(x)"
    )
    target = grid_image(result.grid_x, result.grid_y, result.target_density, "p_1")
    contours = hv.operation.contours(target, levels=5).opts(
        cmap=["#444444"], line_width=1, alpha=0.6, show_legend=False
    )
    magnitude = result.arrows[:, 3]
    scale = 0.9 * (result.grid_x[-1] - result.grid_x[0]) / 17 / max(magnitude.max(), 1e-12)
    arrows = hv.VectorField(
        (result.arrows[:, 0], result.arrows[:, 1], result.arrows[:, 2], magnitude * scale),
        kdims=[X, Y],
        vdims=["angle", "length"],
    ).opts(magnitude="length", rescale_lengths=False, color="#d62728", line_width=1.2)
    overlay = hv.Overlay([heat, contours, arrows]).opts(
        title=f"Exact density p_t and velocity u_t at t = {result.time:.2f} (grey: target p₁)",
        **FIGURE,
    )
    return _square(overlay, result)


def trajectories_plot(result) -> hv.Overlay:
    """Trajectories from noise to data over the exact target density."""
    target = grid_image(result.grid_x, result.grid_y, result.target_density, "p_1").opts(
        cmap="Greys", alpha=0.5
    )
    lines = result.trajectories.transpose(1, 0, 2)  # (M, S + 1, 2)
    separated = np.concatenate(
        [lines, np.full((lines.shape[0], 1, 2), np.nan, lines.dtype)], axis=1
    ).reshape(-1, 2)
    paths = hv.Path([separated], kdims=[X, Y]).opts(
        color=COLORS["particles"], alpha=0.35, line_width=1
    )
    starts = hv.Points(result.starts, kdims=[X, Y], label="start x₀").opts(
        color="#999999", size=2, alpha=0.5
    )
    ends = hv.Points(result.endpoints, kdims=[X, Y], label="end x₁").opts(
        color=COLORS["data"], size=2.5, alpha=0.6
    )
    overlay = hv.Overlay([target, paths, starts, ends]).opts(
        title=f"{result.trajectories.shape[1]} of {result.endpoints.shape[0]} trajectories, "
        f"{result.num_steps} {result.integrator} steps",
        **OVERLAY,
    )
    return _square(overlay, result)


def schedule_plot(result) -> hv.Overlay:
    """α_t, σ_t and the signal-to-noise ratio of the chosen schedule."""
    t = hv.Dimension("t", label="time t (0 = noise, 1 = data)")
    value = hv.Dimension("value", label="coefficient")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_snr = np.log10(result.alpha / result.sigma)
    return hv.Overlay([
        hv.Curve((result.curve_times, result.alpha), t, value, label="α_t (data)").opts(
            color=COLORS["data"], line_width=2
        ),
        hv.Curve((result.curve_times, result.sigma), t, value, label="σ_t (noise)").opts(
            color=COLORS["particles"], line_width=2
        ),
        hv.Curve(
            (result.curve_times, np.clip(log_snr, -4, 4) / 4), t, value,
            label="log₁₀(α/σ) / 4",
        ).opts(color="#7f7f7f", line_dash="dashed"),
    ]).opts(title=f"Schedule: {result.schedule}", **OVERLAY)  # fmt: skip


def kinetic_energy_plot(comparison, current: str | None = None) -> hv.Bars:
    """Kinetic energy ∫ E‖u_t‖² dt of every schedule for this mixture (lower = straighter),
    on a log scale: VE paths can cost a thousand times more than the others."""
    data = [
        (label, energy, label == current)
        for label, energy in zip(comparison.schedules, comparison.kinetic_energy, strict=True)
    ]
    energies = np.asarray(comparison.kinetic_energy)
    return hv.Bars(data, hv.Dimension("schedule"), ["kinetic energy", "chosen"]).opts(
        color=hv.dim("chosen").categorize({True: COLORS["data"], False: COLORS["particles"]}),
        **horizontal_log_bars(energies),
        title="Kinetic energy ∫E‖u_t‖²dt (log scale; red: chosen)",
        **FIGURE,
    )


def budget_plot(comparison) -> hv.Overlay:
    """Endpoint error against a fine RK4 solve, per field-evaluation budget."""
    budget = hv.Dimension("budget", label="field evaluations per sample")
    error = hv.Dimension("error", label="mean |x̂₁ − x₁|")
    curves = [
        hv.Curve((comparison.budgets, errors), budget, error, label=label).opts(
            color=color, line_width=2
        )
        * hv.Scatter((comparison.budgets, errors), budget, error, label=label).opts(
            color=color, size=5
        )
        for label, errors, color in zip(
            comparison.schedules, comparison.endpoint_error, SCHEDULE_COLORS, strict=True
        )
    ]
    return hv.Overlay(curves).opts(
        logx=True,
        logy=True,
        title=f"Integration error vs step budget ({comparison.integrator}): lower energy "
        "is not always lower error",
        **OVERLAY,
    )


def training_loss_plot(training) -> hv.Overlay:
    """The flow-matching loss per step, its value on a fixed set, and the exact field's."""
    step = hv.Dimension("step", label="training step")
    loss = hv.Dimension("loss", label="flow-matching loss")
    return hv.Overlay([
        hv.Curve((training.steps, training.losses), step, loss, label="loss per batch").opts(
            color=COLORS["particles"], alpha=0.4
        ),
        hv.Curve(
            (training.evaluations, training.evaluated_loss), step, loss, label="loss (fixed set)"
        ).opts(color=COLORS["particles"], line_width=2.5),
        hv.Curve(
            (training.evaluations, training.exact_field_loss), step, loss,
            label="exact field's loss (the floor)",
        ).opts(color=COLORS["truth"], line_dash="dashed", line_width=2),
    ]).opts(
        title="The loss falls towards the exact field's loss, not to zero", **OVERLAY
    )  # fmt: skip


def velocity_error_plot(training) -> hv.Curve:
    """E‖v_θ − u‖² on the fixed set: the part of the loss training can remove."""
    return hv.Curve(
        (training.evaluations, training.velocity_error),
        hv.Dimension("step", label="training step"),
        hv.Dimension("error", label="E‖v_θ − u_t‖²"),
    ).opts(
        color=COLORS["data"], line_width=2, logy=True, title="Distance to the exact field", **FIGURE
    )


def learned_field_plot(training) -> hv.Overlay:
    """The network's velocity (blue) over the exact one (black) at the shown time."""
    points = training.arrow_points
    extent = np.ptp(points[:, 0]) if points.shape[0] > 1 else 1.0
    largest = max(np.linalg.norm(training.exact_arrows, axis=1).max(), 1e-12)
    scale = 0.9 * extent / 17 / largest

    def field(vectors, label, color):
        return hv.VectorField(
            (points[:, 0], points[:, 1], np.arctan2(vectors[:, 1], vectors[:, 0]),
             np.linalg.norm(vectors, axis=1) * scale),
            kdims=[X, Y], vdims=["angle", "length"], label=label,
        ).opts(magnitude="length", rescale_lengths=False, color=color, line_width=1.5)  # fmt: skip

    return hv.Overlay([
        field(training.exact_arrows, "exact u_t", COLORS["truth"]),
        field(training.learned_arrows, "network v_θ", COLORS["particles"]),
    ]).opts(title=f"Learned vs exact velocity at t = {training.time:.2f}", data_aspect=1,
            **OVERLAY)  # fmt: skip
