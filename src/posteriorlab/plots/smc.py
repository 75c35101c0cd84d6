"""Figures for the SMC lab, built from :class:`posteriorlab.labs.smc.SMCResult`.

Every ``*_plot`` function takes plain results (numpy arrays in a NamedTuple) and returns a
HoloViews element; none holds state or widgets, so the same figures serve the dashboard,
the notebooks and the tests. The two figures of the first tab, which every change of a
slider redraws, are live Bokeh figures instead (:mod:`posteriorlab.plots.live`): a
``*_figure()`` built once per page and a ``*_frame(result)`` of the data to write into it,
about forty times cheaper for the server than a HoloViews redraw. For a model with a
d-dimensional state the figures show one coordinate, ``component``.

Colours follow one convention across the lab: the truth (hidden states, exact Kalman/RTS
answers) is black and dashed, particle estimates are coloured.
"""

import holoviews as hv
import numpy as np

from posteriorlab.plots import live
from posteriorlab.plots.style import COLORS, FIGURE, OVERLAY

TIME = hv.Dimension("t", label="time step t")


def _state_dim(result, component):
    name = "x_t" if result.states.shape[1] == 1 else f"x_t[{component}]"
    return hv.Dimension("x", label=name)


def _times(result):
    return np.arange(result.observations.shape[0])


def data_plot(result, component: int = 0) -> hv.Overlay:
    """The hidden states x_t (when known) and the observations y_t."""
    t = _times(result)
    x = _state_dim(result, component)
    observed = hv.Scatter(
        (t, result.observations[:, min(component, result.observations.shape[1] - 1)]),
        TIME,
        x,
        label="observation y_t",
    ).opts(color=COLORS["data"], size=4)
    layers = [observed]
    if np.isfinite(result.states).all():
        layers.insert(
            0,
            hv.Curve((t, result.states[:, component]), TIME, x, label="hidden state x_t").opts(
                color=COLORS["truth"], line_width=1.5
            ),
        )
    return hv.Overlay(layers).opts(
        title="Data: what the filter sees (dots) and the hidden truth", **OVERLAY
    )


def particle_sizes(result) -> np.ndarray:
    """Marker size (screen pixels) of each displayed particle: its weight relative to an
    average particle, square-rooted (so the area grows with the weight) and capped at 25
    times the average."""
    relative = result.displayed_weights.reshape(-1) * result.num_particles  # 1 = average
    return np.sqrt(np.clip(relative, 0, 25)) * 3 + 0.5


def _curve(t, values) -> dict:
    return dict(t=t.astype(np.float32), x=np.asarray(values, dtype=np.float32))


def _no_curve() -> dict:
    return dict(t=np.zeros(0, np.float32), x=np.zeros(0, np.float32))


def particle_cloud_figure():
    """The live figure of particles at every step (fill it with :func:`particle_cloud_frame`)."""
    figure = live.empty_figure(TIME.label, "x_t")
    cloud = live.empty_source("t", "x", "size")
    figure.scatter(
        "t", "x", size="size", source=cloud, name="cloud",
        color=COLORS["particles"], alpha=0.35, line_alpha=0,
    )  # fmt: skip
    live.add_curve(figure, "filter mean", color=COLORS["filter"], line_width=2)
    live.add_curve(figure, "hidden state", "hidden state x_t", color=COLORS["truth"],
                   line_dash="dashed")  # fmt: skip
    live.legend_on_the_right(figure)
    return figure


def particle_cloud_frame(result, component: int = 0) -> live.Frame:
    """Particles at every step, sized and shaded by their normalised weight W_t; the filter
    mean, and the hidden state when it is known."""
    num_steps, shown, _ = result.displayed_particles.shape
    t = _times(result)
    cloud = dict(
        t=np.repeat(t, shown).astype(np.float32),
        x=result.displayed_particles[..., component].reshape(-1).astype(np.float32),
        size=particle_sizes(result).astype(np.float32),
    )
    known = np.isfinite(result.states).all()
    return live.Frame(
        title=f"Particle cloud ({shown} of N = {result.num_particles} shown; size ∝ weight)",
        columns={
            "cloud": cloud,
            "filter mean": _curve(t, result.filtering_mean[:, component]),
            "hidden state": _curve(t, result.states[:, component]) if known else _no_curve(),
        },
        y_label=_state_dim(result, component).label,
    )


def ess_figure():
    """The live figure of the effective sample size (fill it with :func:`ess_frame`)."""
    figure = live.empty_figure(TIME.label, "ESS / N", y_range=(0, 1.05))
    live.add_curve(figure, "ess", "ESS / N", color=COLORS["filter"])
    live.add_curve(figure, "threshold", "resampling threshold", color=COLORS["truth"],
                   line_dash="dashed")  # fmt: skip
    live.add_curve(figure, "resampled", glyph="scatter", color=COLORS["data"],
                   marker="triangle", size=7)  # fmt: skip
    live.add_curve(figure, "temperature", "1 / annealing temperature", color=COLORS["smoother"])
    live.legend_on_the_right(figure)
    return figure


def ess_frame(result) -> live.Frame:
    """ESS_t / N with the resampling threshold, the steps that resampled, and the inverse
    annealing temperature when entropic annealing flattened some resampling."""
    t = _times(result)
    resampled = t[result.resampled]
    ends = np.array([t[0], t[-1]])
    annealed = np.any(result.temperature > 1)
    return live.Frame(
        title=f"Effective sample size (resampled at {resampled.size} of {t.size} steps)",
        columns={
            "ess": _curve(t, result.ess / result.num_particles),
            "threshold": _curve(ends, np.full(2, result.ess_threshold)),
            "resampled": _curve(resampled, np.zeros(resampled.size)),
            "temperature": _curve(t, 1 / result.temperature) if annealed else _no_curve(),
        },
    )


def genealogy_plot(result, component: int = 0) -> hv.Overlay:
    """Ancestral paths of the final particles: they coalesce (path degeneracy)."""
    paths = result.lineage_paths[..., component]  # (T, L)
    t = _times(result)
    # One polyline with NaN breaks between lineages: one glyph instead of L.
    breaks = np.full((1, paths.shape[1]), np.nan)
    xs = np.vstack([np.broadcast_to(t[:, None], paths.shape), breaks]).T.reshape(-1)
    ys = np.vstack([paths, breaks]).T.reshape(-1)
    lines = hv.Path([np.column_stack([xs, ys])], [TIME, _state_dim(result, component)]).opts(
        color=COLORS["smoother"], alpha=0.5, line_width=1
    )
    cloud = hv.Points(
        (
            np.repeat(t, result.displayed_particles.shape[1]),
            result.displayed_particles[..., component].reshape(-1),
        ),
        [TIME, _state_dim(result, component)],
    ).opts(color=COLORS["particles"], size=1.5, alpha=0.15)
    return hv.Overlay([cloud, lines]).opts(
        title=f"Ancestral lines of {paths.shape[1]} final particles", **FIGURE
    )


def surviving_lineages_plot(result) -> hv.Curve:
    """How many distinct ancestors at time t the N final particles have."""
    return hv.Curve(
        (_times(result), result.surviving_lineages),
        TIME,
        hv.Dimension("lineages", label="distinct ancestors"),
    ).opts(color=COLORS["smoother"], logy=True, title="Surviving ancestral lines", **FIGURE)


def estimate_plot(result, kind: str = "filtering", component: int = 0) -> hv.Overlay:
    """Mean ± 2 sd of the filtering or smoothing distribution against the exact answer.

    A result whose smoother was not run (``smoothing_mean`` is None) shows the exact
    answer alone, and says so in the title.
    """
    t = _times(result)
    x = _state_dim(result, component)
    layers = []
    estimated = getattr(result, f"{kind}_mean") is not None
    if estimated:
        mean = getattr(result, f"{kind}_mean")[:, component]
        sd = np.sqrt(np.maximum(getattr(result, f"{kind}_var")[:, component], 0))
        color = COLORS["filter"] if kind == "filtering" else COLORS["smoother"]
        label = "particle filter" if kind == "filtering" else f"{result.smoother} smoother"
        layers += [
            hv.Spread((t, mean, 2 * sd), TIME, [x, "2sd"]).opts(
                color=color, alpha=0.25, line_alpha=0
            ),
            hv.Curve((t, mean), TIME, x, label=f"{label} (mean ± 2 sd)").opts(
                color=color, line_width=2
            ),
        ]
    exact_mean = getattr(result, f"exact_{kind}_mean")
    if exact_mean is not None:
        exact_sd = np.sqrt(getattr(result, f"exact_{kind}_var")[:, component])
        name = "Kalman filter" if kind == "filtering" else "RTS smoother"
        exact = exact_mean[:, component]
        layers += [
            hv.Curve((t, exact), TIME, x, label=f"exact: {name}").opts(
                color=COLORS["truth"], line_dash="dashed"
            ),
            hv.Curve((t, exact + 2 * exact_sd), TIME, x).opts(
                color=COLORS["truth"], line_dash="dotted"
            ),
            hv.Curve((t, exact - 2 * exact_sd), TIME, x).opts(
                color=COLORS["truth"], line_dash="dotted"
            ),
        ]
    title = (
        "Filtering: p(x_t | y_0..y_t)"
        if kind == "filtering"
        else "Smoothing: p(x_t | all data y_0..y_T)"
    )
    if not estimated:
        title += f" (the {result.smoother} smoother runs while this tab is open)"
        layers = layers or [hv.Curve([], TIME, x)]  # no exact answer either: empty axes
    return hv.Overlay(layers).opts(title=title, **OVERLAY)


def evidence_plot(result) -> hv.Overlay:
    """The running log-evidence estimate log Ẑ_{0:t}, as an error when log Z is known."""
    t = _times(result)
    if result.exact_log_evidence is None:
        return hv.Curve((t, result.log_evidence), TIME, "log Ẑ", label="log Ẑ_{0:t}").opts(
            color=COLORS["filter"], title="Running log-evidence estimate", **FIGURE
        )
    error = result.log_evidence - result.exact_log_evidence
    # The curve comes first: an overlay's axes are named by its first layer.
    return hv.Overlay(
        [
            hv.Curve(
                (t, error),
                TIME,
                hv.Dimension("err", label="log Ẑ_{0:t} − log Z_{0:t}"),
                label="error of the particle estimate",
            ).opts(color=COLORS["filter"], line_width=2),
            hv.HLine(0).opts(color=COLORS["truth"], line_dash="dashed"),
        ]
    ).opts(title="Log-evidence error against the Kalman filter (0 = exact)", **OVERLAY)


def log_evidence_histogram(log_evidence, summary) -> hv.Overlay:
    """Histogram of log Ẑ − log Z over R replicates: centred below 0 (Jensen's inequality).

    ``summary`` is a :class:`posteriorlab.labs.smc.ReplicateSummary` of ``log_evidence``.
    """
    log_error = log_evidence - summary.reference
    zero_label = "log Z (exact)" if summary.exact else "log mean Ẑ"
    histogram = hv.Histogram(
        np.histogram(log_error, bins=30), kdims=[hv.Dimension("e", label=f"log Ẑ − {zero_label}")]
    )
    return (
        histogram.opts(color=COLORS["filter"], alpha=0.6)
        * hv.VLine(0).opts(color=COLORS["truth"], line_dash="dashed")
        * hv.VLine(summary.mean_log_error).opts(color=COLORS["filter"], line_width=2)
    ).opts(title="log Ẑ is biased low (solid: mean; dashed: truth)", **FIGURE)


def evidence_ratio_histogram(log_evidence, summary) -> hv.Overlay:
    """Histogram of Ẑ / Z over R replicates: its mean is 1 (Ẑ is unbiased)."""
    ratio = np.exp(log_evidence - summary.reference)
    upper = np.quantile(ratio, 0.99) if ratio.size > 20 else ratio.max()
    histogram = hv.Histogram(
        np.histogram(np.clip(ratio, 0, upper), bins=30),
        kdims=[hv.Dimension("r", label="Ẑ / Z" if summary.exact else "Ẑ / mean Ẑ")],
    )
    return (
        histogram.opts(color=COLORS["smoother"], alpha=0.6)
        * hv.VLine(1).opts(color=COLORS["truth"], line_dash="dashed")
        * hv.VLine(summary.mean_ratio).opts(color=COLORS["smoother"], line_width=2)
    ).opts(title="Ẑ / Z is unbiased: mean 1 (solid: mean; dashed: 1)", **FIGURE)
