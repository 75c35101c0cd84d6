"""The paths dashboard: a thin Panel view over :class:`posteriorlab.labs.paths.PathsLab`.

Widgets come from the lab's parameters; figures are HoloViews DynamicMaps bound to the
lab's results. Clicking on the density or trajectory plot adds a target component there.
"""

import holoviews as hv
import panel as pn
import param
from posteriorlab_widgets import TrajectoryPlayer

from posteriorlab.dashboards.common import (
    control_cards,
    error_alert,
    page_copy,
    table_markdown,
    while_tab_open,
    with_clicks,
)
from posteriorlab.dashboards.export import export_card
from posteriorlab.labs.paths import ANIMATED_TRAJECTORY_POINTS, SCHEDULE_NAMES, PathsLab
from posteriorlab.labs.steering import SteeringLab
from posteriorlab.plots import paths as figures
from posteriorlab.plots import steering as steering_figures
from posteriorlab.plots.style import framewise

CONTROL_GROUPS = {
    "Target and source": ["preset", "components", "source_scale"],
    "Schedule": [
        "schedule",
        "polynomial_exponent",
        "vp_beta_min",
        "vp_beta_max",
        "ve_sigma_min",
        "ve_sigma_max",
    ],
    "Sampler": [
        "integrator",
        "noise_level",
        "noise_shape",
        "num_steps",
        "num_trajectories",
        "seed",
    ],
}
SCHEDULE_PARAMETERS = {
    "polynomial": ("polynomial_exponent",),
    "vp": ("vp_beta_min", "vp_beta_max"),
    "ve": ("ve_sigma_min", "ve_sigma_max"),
}

WIDGETS = {
    "components": {"type": pn.widgets.TextAreaInput, "height": 130},
    "source_scale": pn.widgets.EditableFloatSlider,
    "polynomial_exponent": pn.widgets.EditableFloatSlider,
    "vp_beta_min": pn.widgets.EditableFloatSlider,
    "vp_beta_max": pn.widgets.EditableFloatSlider,
    "ve_sigma_min": pn.widgets.EditableFloatSlider,
    "ve_sigma_max": pn.widgets.EditableFloatSlider,
    "noise_level": pn.widgets.EditableFloatSlider,
    # No start or end: an out-of-range count reaches the lab, which explains it.
    "num_steps": {"type": pn.widgets.IntInput, "start": None, "end": None},
    "seed": pn.widgets.IntInput,
}

URL_PARAMETERS = {
    "components": "target",
    "source_scale": "source",
    "schedule": "schedule",
    "polynomial_exponent": "n",
    "vp_beta_min": "beta_min",
    "vp_beta_max": "beta_max",
    "ve_sigma_min": "sigma_min",
    "ve_sigma_max": "sigma_max",
    "integrator": "integrator",
    "noise_level": "eps",
    "noise_shape": "noise_shape",
    "num_steps": "steps",
    "num_trajectories": "trajectories",
    "seed": "seed",
    "time": "t",
}
STEERING_URL_PARAMETERS = {
    "obs_a1": "a1",
    "obs_a2": "a2",
    "obs_y": "y",
    "obs_noise_sd": "obs_sd",
    "temperature": "lambda",
    "num_particles": "N",
    "num_steps": "K",
    "diffusion_level": "eta",
    "ess_threshold": "ess",
    "interpolant": "interpolant",
    "lookahead": "lookahead",
    "seed": "steer_seed",
}
TRAINING_CONTROLS = ["learning_rate", "network_width", "train", "reset_training"]
STEERING_WIDGETS = {
    name: pn.widgets.EditableFloatSlider
    for name in ("obs_a1", "obs_a2", "obs_y", "obs_noise_sd", "temperature", "diffusion_level",
                 "ess_threshold")
}  # fmt: skip
STEERING_WIDGETS["seed"] = pn.widgets.IntInput

INTRO = """
A **Gaussian probability path** mixes noise x₀ into data x₁ as x_t = σ_t x₀ + α_t x₁,
from pure noise at t = 0 to data at t = 1. For a Gaussian-mixture target the density
p_t, its **velocity** u_t and its **score** ∇log p_t are known exactly, so every picture
here is the exact answer, not a trained network: change the schedule, the step count or the
noise level and the trajectories are recomputed at once. **Click on a plot** to add a
component to the target there.
"""

TAB_TEXT = {
    "Trajectories": "Left: samples carried from noise to data by the chosen integrator, over "
    "the exact target (grey). Right: the exact density p_t with its velocity field at the "
    "time on the slider. Schedules with α₀ = 0, σ₀ = 1 all map a noise point to the same data "
    "point — they only differ in how fast and how straight they travel.",
    "Animation": "Press ▶ to watch every sample travel from noise (t = 0) to data (t = 1) "
    "under the chosen schedule and integrator; each fading trail is the last moments of one "
    "path. Switch the schedule to compare: cond-OT paths are nearly straight, VP paths curve.",
    "Flow matching": "Train a small network v_θ(t, x) to regress the conditional velocity "
    "α̇_t x₁ + σ̇_t x₀ on samples of the path. Its loss cannot reach zero: its floor is the loss "
    "of the exact field u_t, drawn dashed, and the gap between the two is E‖v_θ − u_t‖² in "
    "expectation. Each press runs 200 Adam steps on the current target and schedule.",
    "Steering": "A reward r(x) = log N(y; a·x, σ_y²) the flow never saw. Each method spends N × K "
    "model evaluations per answer. Best-of-N and Rollover Budget Forcing (12 repeats each) "
    "**optimise**: their answers crowd onto the line a·x = y. SMC **samples**: its weighted "
    "particles spread like the exact tilted target π_λ ∝ p·exp(r/λ) (black contours; at "
    "λ = 1 it is Bayes' posterior) and estimate its normaliser Z_λ. One run's log Ẑ is noisy "
    "and biased low: weighting on the reward of each particle's denoised guess over-rewards "
    "points between modes. Tick the exact lookahead to see what a better weighting buys; "
    "what remains is the SDE's step error, which shrinks with K.",
    "Schedules": "The kinetic energy ∫E‖u_t‖² dt measures how much the particles must move; "
    "the kinetic-optimal schedule, computed for this mixture from its data-separation "
    "function, has the least. The lower plot is what a step budget buys each schedule.",
}


class PathsDashboard(pn.viewable.Viewer):
    """Controls, explanations and live figures of the paths lab."""

    lab = param.ClassSelector(class_=PathsLab)
    steering = param.ClassSelector(class_=SteeringLab)

    def __init__(self, **params):
        if "lab" not in params:
            params["lab"] = PathsLab()
        if "steering" not in params:
            params["steering"] = SteeringLab(paths=params["lab"], compute=False)
        super().__init__(**params)
        # What the page shows of the labs' results, updated once per batch (PageCopy).
        self.shown = page_copy(self.lab, ["result", "comparison", "training_result", "error"])
        self.steering_shown = page_copy(self.steering, ["result", "error"])
        self._controls = self._build_controls()
        self._main = self._build_main()

    # ----------------------------------------------------------------- controls
    def _build_controls(self):
        self.lab.param.watch(self._hide_unused, ["schedule", "integrator"])
        self._hide_unused()
        cards = control_cards(self.lab, CONTROL_GROUPS, WIDGETS)
        cards.append(export_card(self.lab, "posteriorlab-paths.csv", result_table))
        return cards

    def _hide_unused(self, *_):
        """Show only the parameters of the chosen schedule, and ε only for the SDE."""
        for kind, names in SCHEDULE_PARAMETERS.items():
            for name in names:
                self.lab.param[name].precedence = None if self.lab.schedule == kind else -1
        stochastic = self.lab.integrator == "sde"
        for name in ("noise_level", "noise_shape"):
            self.lab.param[name].precedence = None if stochastic else -1

    @property
    def controls(self):
        return self._controls

    # ----------------------------------------------------------------- main area
    def _map(self, function, source="result", clickable=False, owner=None, also=()):
        """A live figure of ``owner.<source>``: a DynamicMap redrawn on every new result
        (and on every change of the parameters ``also``, passed on to ``function``).

        A HoloViews pane cannot draw "no result" (an empty overlay has nothing to plot),
        so until the result exists, and whenever it is reset to ``None`` (a new network),
        a short note stands in its place.
        """
        owner = self.shown if owner is None else owner
        holder = pn.Column(sizing_mode="stretch_width", min_height=380)

        def live_figure():
            drawn = []

            def draw(value, *extra):  # None only on the way out, as the note takes over
                if value is not None:
                    drawn[:] = [framewise(function(value, *extra))]
                return drawn[0]

            dynamic = hv.DynamicMap(pn.bind(draw, owner.param[source], *also))
            if clickable:
                dynamic = with_clicks(dynamic, self._add_component)
            return pn.pane.HoloViews(dynamic, sizing_mode="stretch_width", min_height=380)

        def show(value):
            if value is None:
                holder[:] = [pn.pane.Markdown("*Not computed yet.*")]
            elif not holder or not isinstance(holder[0], pn.pane.HoloViews):
                holder[:] = [live_figure()]

        show(getattr(owner, source))
        owner.param.watch(lambda event: show(event.new), source)
        return holder

    def _add_component(self, x=None, y=None):
        if x is not None and y is not None:
            self.lab.add_component(x, y)

    def _build_main(self):
        error = error_alert(self.shown)
        summary = pn.pane.Markdown(
            pn.bind(result_summary, self.shown.param.result),
            sizing_mode="stretch_width",
            name="summary",
        )
        player = TrajectoryPlayer(canvas_height=560, sizing_mode="stretch_width", name="animation")
        time_slider = pn.widgets.FloatSlider.from_param(
            self.lab.param.time, sizing_mode="stretch_width"
        )
        tabs = pn.Tabs(
            (
                "Trajectories",
                pn.Column(
                    TAB_TEXT["Trajectories"],
                    time_slider,
                    pn.Row(
                        self._map(figures.trajectories_plot, clickable=True),
                        self._map(figures.density_plot, clickable=True),
                        sizing_mode="stretch_width",
                    ),
                    sizing_mode="stretch_width",
                ),
            ),
            ("Animation", self._animation_tab(player)),
            (
                "Schedules",
                pn.Column(
                    TAB_TEXT["Schedules"],
                    pn.Row(
                        self._map(figures.schedule_plot),
                        self._map(
                            self._energy_bars, source="comparison", also=[self.lab.param.schedule]
                        ),
                        sizing_mode="stretch_width",
                    ),
                    self._map(figures.budget_plot, source="comparison"),
                    sizing_mode="stretch_width",
                ),
            ),
            ("Flow matching", self._training_tab()),
            ("Steering", self._steering_tab()),
            dynamic=True,
            sizing_mode="stretch_width",
        )
        steering_tab = len(tabs) - 1
        # The animation's trajectories are packed and sent only while its tab is open.
        animation_tab = next(i for i, tab in enumerate(tabs) if player in tab)
        player.follow(
            while_tab_open(self.shown.param.result, tabs, animation_tab), animation_frames
        )

        def follow_tab(*_):
            self.steering.active = tabs.active == steering_tab

        tabs.param.watch(follow_tab, "active")
        follow_tab()
        return pn.Column(INTRO, error, summary, tabs, sizing_mode="stretch_width")

    def _animation_tab(self, player):
        caption = pn.pane.Markdown(
            pn.bind(animation_caption, self.shown.param.result), sizing_mode="stretch_width"
        )
        return pn.Column(TAB_TEXT["Animation"], caption, player, sizing_mode="stretch_width")

    def _training_tab(self):
        controls = pn.Param(
            self.lab,
            parameters=TRAINING_CONTROLS,
            widgets={
                "train": {"type": pn.widgets.Button, "color": "primary"},
                "learning_rate": {"type": pn.widgets.EditableFloatSlider, "format": "0.0000"},
            },
            show_name=False,
            width=260,
        )
        status = pn.pane.Markdown(
            pn.bind(training_summary, self.shown.param.training_result),
            sizing_mode="stretch_width",
            name="training summary",
        )
        return pn.Column(
            TAB_TEXT["Flow matching"],
            pn.Row(controls, status, sizing_mode="stretch_width"),
            pn.Row(
                self._map(figures.training_loss_plot, source="training_result"),
                self._map(figures.velocity_error_plot, source="training_result"),
                sizing_mode="stretch_width",
            ),
            self._map(figures.learned_field_plot, source="training_result"),
            sizing_mode="stretch_width",
        )

    def _steering_tab(self):
        steering = self.steering
        controls = pn.Param(
            steering,
            parameters=list(STEERING_URL_PARAMETERS),
            widgets=STEERING_WIDGETS,
            show_name=False,
            width=290,
        )
        error = error_alert(self.steering_shown, "steering error")
        table = table_markdown(
            pn.bind(steering_summary, self.steering_shown.param.result),
            sizing_mode="stretch_width",
            name="steering summary",
        )

        def plot(function):
            return self._map(function, owner=self.steering_shown)

        return pn.Column(
            TAB_TEXT["Steering"],
            pn.Row(
                controls,
                pn.Column(
                    error, table, plot(steering_figures.answers_plot), sizing_mode="stretch_width"
                ),
                sizing_mode="stretch_width",
            ),  # fmt: skip
            pn.Row(
                plot(steering_figures.smc_trajectories_plot),
                pn.Column(
                    plot(steering_figures.ess_plot),
                    plot(steering_figures.rbf_budget_plot),
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )

    def _energy_bars(self, comparison, schedule):
        """Every schedule's kinetic energy, the chosen one highlighted."""
        return figures.kinetic_energy_plot(comparison, SCHEDULE_NAMES[schedule])

    @property
    def main(self):
        return self._main

    def __panel__(self):
        return pn.Row(pn.Column(self._controls, width=330), self._main, sizing_mode="stretch_width")


def result_summary(result) -> str:
    """The numbers of the current run: kinetic energy, sample quality against exact draws."""
    if result is None:
        return ""
    return (
        f"**{result.schedule}**, {result.integrator}, {result.num_steps} steps · "
        f"kinetic energy **{result.kinetic_energy:.3f}** · energy distance to exact draws "
        f"**{result.energy_distance:.4f}** (two exact samples differ by "
        f"{result.reference_energy_distance:.4f}) · mean log p₁ of the samples "
        f"{result.mean_log_prob:.3f} vs exact {result.exact_mean_log_prob:.3f} · "
        f"{1000 * result.seconds:.0f} ms"
    )


def training_summary(training) -> str:
    """Where flow-matching training stands: steps, loss against its floor."""
    if training is None:
        return "No network yet: press **Train 200 steps**."
    return (
        f"**{int(training.steps[-1])} steps** · loss on the fixed set "
        f"**{training.evaluated_loss[-1]:.4f}**, exact field's loss (the floor) "
        f"{training.exact_field_loss[-1]:.4f} · distance to the exact field "
        f"E‖v_θ − u‖² = **{training.velocity_error[-1]:.4f}**"
    )


def steering_summary(result) -> str:
    """A table of the three methods against the exact tilted target."""
    if result is None:
        return "Computing…"
    rows = "\n".join(
        f"| {m.name} | {m.nfe:,} | {m.mean_reward:.3f} | {m.energy_distance:.3f} |"
        for m in result.methods
    )
    return (
        "| method | evaluations per answer | mean reward r | energy distance to π_λ |\n"
        "|---|---|---|---|\n"
        f"{rows}\n"
        f"| **exact π_λ** | — | {result.exact_mean_reward:.3f} | "
        f"0 ± {result.energy_distance_noise:.3f} (12 exact draws) |\n\n"
        f"Largest possible reward sup r = {result.max_reward:.3f}. SMC estimates "
        f"log Z_λ = **{result.smc_log_evidence:.3f}** (exact **{result.exact_log_normalizer:.3f}**)"
        f"; its weighted mean ({result.smc_mean[0]:.3f}, {result.smc_mean[1]:.3f}) vs exact "
        f"({result.exact_mean[0]:.3f}, {result.exact_mean[1]:.3f}) · {1000 * result.seconds:.0f} ms"
    )


def animation_frames(result) -> dict:
    """The trajectories of the current result, for the trajectory player: positions at
    every step, the time t of each step, and the same window as the other plots (at equal
    scales, so that straight paths look straight and round blobs round)."""
    bounds = (result.grid_x[0], result.grid_x[-1], result.grid_y[0], result.grid_y[-1])
    return dict(
        positions=result.animated_trajectories,
        times=result.times,
        bounds=bounds,
        x_label="x₁",
        y_label="x₂",
        equal_aspect=True,
    )


def animation_caption(result) -> str:
    """How many trajectories the animation plays, of how many."""
    if result is None:
        return ""
    points, count, _ = result.animated_trajectories.shape
    total = result.endpoints.shape[0]
    shown = f"all {count:,}" if count == total else f"{count:,} of {total:,}"
    return (
        f"Playing {shown} trajectories over {points - 1} steps: the page receives at most "
        f"{ANIMATED_TRAJECTORY_POINTS:,} positions (trajectories × (steps + 1)) per update."
    )


def result_table(result) -> dict:
    """Every trajectory's start (noise) and end (sample); the page's summary line has
    the aggregate scores."""
    return {
        "start_x1": result.starts[:, 0], "start_x2": result.starts[:, 1],
        "end_x1": result.endpoints[:, 0], "end_x2": result.endpoints[:, 1],
    }  # fmt: skip
