"""The SMC dashboard: a thin Panel view over :class:`posteriorlab.labs.smc.SMCLab`.

Widgets are built from the lab's parameters (labels, ranges and help come from there);
figures are bound to the lab's results as the page shows them (a
:class:`~posteriorlab.dashboards.common.PageCopy`, updated once per batch of results), so
an update replaces the data of the existing plots instead of rebuilding them. The
Particles tab, which every change redraws, holds live Bokeh figures (new data written into
their sources); the other tabs HoloViews DynamicMaps. The dashboard holds no state of its
own: a new session makes a new lab and a new dashboard.
"""

import numpy as np
import panel as pn
import param
from posteriorlab_widgets import TrajectoryPlayer

from posteriorlab.dashboards.common import (
    control_cards,
    error_alert,
    live_bokeh_figure,
    live_figure,
    page_copy,
    while_tab_open,
)
from posteriorlab.dashboards.export import export_card
from posteriorlab.labs.smc import (
    ANIMATED_PARTICLE_STEPS,
    REPLICATE_CHUNK,
    REPLICATE_TIME_LIMIT_S,
    SMCLab,
    summarize_replicates,
    uses_parameter,
)
from posteriorlab.plots import smc as figures

CONTROL_GROUPS = {
    "Model and data": [
        "model",
        "rho",
        "sigma_x",
        "sigma_y",
        "num_steps",
        "data_seed",
        "observations_text",
    ],
    "Particle filter": ["num_particles", "resampling", "ess_threshold", "proposal", "seed"],
    "Entropic annealing": ["annealing", "annealing_trigger", "annealing_early_phase"],
    "Smoothing and replicates": ["smoother", "replicates"],
}

WIDGETS = {
    "rho": pn.widgets.EditableFloatSlider,
    "sigma_x": pn.widgets.EditableFloatSlider,
    "sigma_y": pn.widgets.EditableFloatSlider,
    "ess_threshold": pn.widgets.EditableFloatSlider,
    "annealing_trigger": pn.widgets.EditableFloatSlider,
    "annealing_early_phase": pn.widgets.EditableFloatSlider,
    # No start or end: a typed N outside the usual range reaches the lab, which explains it.
    "num_particles": {"type": pn.widgets.IntInput, "step": 100, "start": None, "end": None},
    "data_seed": pn.widgets.IntInput,
    "seed": pn.widgets.IntInput,
    "observations_text": {
        "type": pn.widgets.TextAreaInput,
        "placeholder": "e.g. 0.5, -0.3, 1.2",
        "height": 70,
    },
}

# Parameters mirrored in the page's URL so that a shared link reproduces the view.
URL_PARAMETERS = {
    "model": "model",
    "rho": "rho",
    "sigma_x": "sigma_x",
    "sigma_y": "sigma_y",
    "num_steps": "T",
    "data_seed": "data_seed",
    "num_particles": "N",
    "resampling": "resampling",
    "ess_threshold": "ess",
    "annealing": "annealing",
    "proposal": "proposal",
    "smoother": "smoother",
    "seed": "seed",
    "replicates": "R",
}

INTRO = """
A **particle filter** follows a hidden state x_t through noisy observations y_t with
N weighted samples (particles): move each particle with the model, weight it by how well it
explains y_t, and **resample** when the weights become uneven (the effective sample size
ESS drops). For the linear-Gaussian models the **Kalman filter** gives the exact answer,
drawn dashed in black beside every particle estimate.
"""

TAB_TEXT = {
    "Particles": "Each dot is a particle, its size its weight. Watch the ESS fall as weights "
    "concentrate, and jump back to N after each resampling.",
    "Genealogy": "Trace each final particle back to its ancestors: resampling kills lines, so "
    "the paths coalesce into a few. This *path degeneracy* is why smoothing by the "
    "genealogy is poor and backward smoothers (FFBSm, PaRIS) exist.",
    "Estimates": "Mean ± 2 standard deviations of the particle approximations of the filtering "
    "and smoothing distributions; dashed black: the exact Kalman/RTS answer.",
    "Animation": "Press ▶ to watch the filter step by step: each dot is a particle, its size "
    "and opacity its weight. At a resampling step (counter in red) the particles move from "
    "their parents, orange lines join parents to children, and the unlucky ones vanish.",
    "Evidence": "The particle filter also estimates the evidence Z = p(y_0..y_T). Ẑ is "
    "unbiased, but log Ẑ is biased low by about Var(log Ẑ)/2 (Jensen's inequality). "
    "The replicates run R independent filters on the same data to show both.",
}


class SMCDashboard(pn.viewable.Viewer):
    """Controls, explanations and live figures of the SMC lab."""

    lab = param.ClassSelector(class_=SMCLab)

    def __init__(self, **params):
        if "lab" not in params:
            params["lab"] = SMCLab()
        super().__init__(**params)
        self.shown = page_copy(self.lab, ["result", "replicate_result", "error"])
        self._controls = self._build_controls()
        self._main = self._build_main()

    # ----------------------------------------------------------------- controls
    def _build_controls(self):
        self.lab.param.watch(self._hide_unused, "model")
        self._hide_unused()
        cards = control_cards(self.lab, CONTROL_GROUPS, WIDGETS, collapsed=("Entropic annealing",))
        # The export holds the smoothed moments even when the page has not computed them.
        cards.append(
            export_card(
                self.lab, "posteriorlab-smc.csv", lambda _: result_table(self.lab.complete_result())
            )
        )
        return cards

    def _hide_unused(self, *_):
        """Hide the sliders the chosen model does not read (e.g. ρ for the growth model)."""
        for name in ("rho", "sigma_x", "sigma_y"):
            self.lab.param[name].precedence = None if uses_parameter(self.lab.model, name) else -1

    @property
    def controls(self):
        return self._controls

    # ----------------------------------------------------------------- main area
    def _plot(self, function, *args, source="result", reads=None):
        """A DynamicMap redrawn from the lab's ``source`` result by ``function`` (when the
        parts ``reads`` names change, if given)."""

        return live_figure(self.shown.param[source], function, *args, min_height=300, reads=reads)

    def _live_plot(self, build, frame_of):
        """A live Bokeh figure, its data replaced in place by each new result (for the
        figures every change redraws)."""
        return live_bokeh_figure(self.shown.param.result, build, frame_of)

    def _replicate_plot(self, function):
        """A figure of the replicates, or a note while they are still running."""

        def draw(replicates):
            if replicates is None:
                return pn.pane.Markdown("*Running the replicates…*")
            return pn.pane.HoloViews(
                function(replicates.log_evidence, summarize_replicates(replicates)),
                sizing_mode="stretch_width",
                min_height=300,
            )

        replicates = self.shown.param.replicate_result
        return pn.panel(pn.bind(draw, replicates), sizing_mode="stretch_width")

    def _build_main(self):
        error = error_alert(self.shown)
        player = TrajectoryPlayer(sizing_mode="stretch_width", name="animation")
        summary = pn.pane.Markdown(
            pn.bind(evidence_summary, self.shown.param.result),
            sizing_mode="stretch_width",
            name="summary",
        )
        replicate_summary = pn.pane.Markdown(
            pn.bind(replicates_summary, self.shown.param.replicate_result),
            sizing_mode="stretch_width",
        )
        pages = [
            (
                "Particles",
                pn.Column(
                    TAB_TEXT["Particles"],
                    self._plot(figures.data_plot, reads=lambda r: (r.states, r.observations)),
                    self._live_plot(figures.particle_cloud_figure, figures.particle_cloud_frame),
                    self._live_plot(figures.ess_figure, figures.ess_frame),
                    sizing_mode="stretch_width",
                ),
            ),
            (
                "Genealogy",
                pn.Column(
                    TAB_TEXT["Genealogy"],
                    self._plot(figures.genealogy_plot),
                    self._plot(figures.surviving_lineages_plot),
                    sizing_mode="stretch_width",
                ),
            ),
            (
                "Estimates",
                pn.Column(
                    TAB_TEXT["Estimates"],
                    self._plot(figures.estimate_plot, "filtering"),
                    self._plot(figures.estimate_plot, "smoothing"),
                    sizing_mode="stretch_width",
                ),
            ),
            ("Animation", self._animation_tab(player)),
            (
                "Evidence",
                pn.Column(
                    TAB_TEXT["Evidence"],
                    self._plot(figures.evidence_plot),
                    replicate_summary,
                    pn.Row(
                        self._replicate_plot(figures.log_evidence_histogram),
                        self._replicate_plot(figures.evidence_ratio_histogram),
                        sizing_mode="stretch_width",
                    ),
                    sizing_mode="stretch_width",
                ),
            ),
        ]
        tabs = pn.Tabs(*pages, dynamic=True, sizing_mode="stretch_width")
        titles = [title for title, _ in pages]
        self._compute_only_for(tabs, titles)
        # The animation's N × T positions are packed and sent only while its tab is open.
        player.follow(
            while_tab_open(self.shown.param.result, tabs, titles.index("Animation")),
            animation_frames,
        )
        return pn.Column(INTRO, error, summary, tabs, sizing_mode="stretch_width")

    def _compute_only_for(self, tabs, titles) -> None:
        """Run the replicates (R filters) only while the Evidence tab is open, and the
        smoother (FFBSm: twice the filter) only while the Estimates tab is."""

        def follow(*_):
            self.lab.param.update(
                replicates_shown=tabs.active == titles.index("Evidence"),
                smoothing_shown=tabs.active == titles.index("Estimates"),
            )

        tabs.param.watch(follow, ["active"])
        follow()

    def _animation_tab(self, player):
        caption = pn.pane.Markdown(
            pn.bind(animation_caption, self.shown.param.result), sizing_mode="stretch_width"
        )
        return pn.Column(TAB_TEXT["Animation"], caption, player, sizing_mode="stretch_width")

    @property
    def main(self):
        return self._main

    def __panel__(self):
        return pn.Row(pn.Column(self._controls, width=330), self._main, sizing_mode="stretch_width")


def evidence_summary(result) -> str:
    """One line of numbers: which run is shown (its seed), log Ẑ against log Z, ESS,
    resampling count, time."""
    if result is None:
        return ""
    estimate = float(result.log_evidence[-1])
    parts = [f"**Filter seed {result.seed}:** log-evidence log Ẑ = {estimate:.3f}"]
    if result.exact_log_evidence is not None:
        exact = float(result.exact_log_evidence[-1])
        parts.append(f"exact log Z (Kalman) = {exact:.3f}, error {estimate - exact:+.3f}")
    parts.append(f"resampled at {int(result.resampled.sum())} of {result.resampled.size} steps")
    if result.smoothing_mean is None:
        parts.append(f"filter took {1000 * result.seconds:.0f} ms (smoother: Estimates tab)")
    else:
        parts.append(f"filter + smoother took {1000 * result.seconds:.0f} ms")
    return " · ".join(parts)


def replicates_summary(replicates) -> str:
    """The replicate statistics in words, with their Monte Carlo standard errors."""
    if replicates is None:
        return ""
    s = summarize_replicates(replicates)
    target = "Z" if s.exact else "mean Ẑ (no exact Z for this model)"
    r = replicates.log_evidence.size
    stopped = (
        f" **Stopped at the {REPLICATE_TIME_LIMIT_S:.0f} s limit after {r} of the "
        f"{replicates.num_requested} replicates asked for**; lower R or N for all of them."
        if r < replicates.num_requested
        else ""
    )
    return (
        f"Over **R = {r} replicates** with N = {replicates.num_particles}: mean Ẑ / {target} = "
        f"**{s.mean_ratio:.3f} ± {s.ratio_standard_error:.3f}** (s.e.; unbiased means 1); mean "
        f"log Ẑ − log Z = **{s.mean_log_error:+.3f}**, sd {s.sd_log_error:.3f}; Jensen's "
        f"log-normal approximation predicts −Var/2 = {s.jensen_prediction:+.3f}. "
        f"({1000 * replicates.seconds:.0f} ms for the R filters, vmapped "
        f"{REPLICATE_CHUNK} at a time.){stopped}"
    )


def animation_frames(result) -> dict:
    """The particle cloud over time, for the trajectory player.

    A 2-D state is drawn as it is, (x₁, x₂), at equal scales. A 1-D state is drawn against
    time, (t, x_t): each step moves the cloud one column to the right, so its fading trail
    (one second, ten steps at the default speed) is the recent history of the filter and
    resampling shows as branches splitting from a parent.
    """
    particles = result.animated_particles
    num_steps, count, state_dim = particles.shape
    frames = dict(weights=result.animated_weights, ancestors=result.animated_ancestors)
    if state_dim == 2:
        view = dict(x_label="x₁", y_label="x₂", equal_aspect=True, trail_seconds=0.4)
        return dict(positions=particles, **frames, **view)
    steps = np.broadcast_to(np.arange(num_steps, dtype=float)[:, None], (num_steps, count))
    view = dict(x_label="time step t", y_label="x_t", equal_aspect=False, trail_seconds=1.0)
    return dict(positions=np.stack([steps, particles[..., 0]], axis=-1), **frames, **view)


def animation_caption(result) -> str:
    """What the animation shows: the axes, and how many particles of how many."""
    if result is None:
        return ""
    num_steps, count, state_dim = result.animated_particles.shape
    axes = (
        "the state (x₁, x₂)"
        if state_dim == 2
        else "time step t across, the state x_t up (so trails are the recent past)"
    )
    shown = (
        f"all N = {count:,} particles"
        if count == result.num_particles
        else f"{count:,} of the N = {result.num_particles:,} particles (the last step's at "
        "random, earlier steps their ancestors, topped up at random)"
    )
    return (
        f"Axes: {axes}. Showing {shown} over T = {num_steps} steps: the page receives at most "
        f"{ANIMATED_PARTICLE_STEPS:,} particle positions (N × T) per update."
    )


def result_table(result) -> dict:
    """Per time step: data, the filter's and smoother's moments (and the exact ones where
    known), the ESS, resampling and the running log-evidence."""
    columns = {"t": np.arange(result.ess.size)}
    for name, values in [
        ("state", result.states), ("observation", result.observations),
        ("filtering_mean", result.filtering_mean),
        ("filtering_sd", np.sqrt(result.filtering_var)),
        ("smoothing_mean", result.smoothing_mean),
        ("smoothing_sd", None if result.smoothing_var is None else np.sqrt(result.smoothing_var)),
        ("exact_filtering_mean", result.exact_filtering_mean),
        ("exact_smoothing_mean", result.exact_smoothing_mean),
    ]:  # fmt: skip
        if values is not None:
            for i in range(values.shape[1]):
                columns[f"{name}_{i + 1}"] = values[:, i]
    columns |= {"ess": result.ess, "resampled": result.resampled.astype(int),
                "log_evidence": result.log_evidence}  # fmt: skip
    if result.exact_log_evidence is not None:
        columns["exact_log_evidence"] = result.exact_log_evidence
    return columns
