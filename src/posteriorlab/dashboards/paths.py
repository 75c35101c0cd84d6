"""The paths dashboard: a thin Panel view over :class:`posteriorlab.labs.paths.PathsLab`.

Widgets come from the lab's parameters; figures are HoloViews DynamicMaps bound to the
lab's results. Clicking on the density or trajectory plot adds a target component there.
"""

import holoviews as hv
import panel as pn
import param

from posteriorlab.labs.paths import PathsLab
from posteriorlab.plots import paths as figures

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
    "Schedules": "The kinetic energy ∫E‖u_t‖² dt measures how much the particles must move; "
    "the kinetic-optimal schedule, computed for this mixture from its data-separation "
    "function, has the least. The lower plot is what a step budget buys each schedule.",
}


class PathsDashboard(pn.viewable.Viewer):
    """Controls, explanations and live figures of the paths lab."""

    lab = param.ClassSelector(class_=PathsLab)

    def __init__(self, **params):
        if "lab" not in params:
            params["lab"] = PathsLab()
        super().__init__(**params)
        self._controls = self._build_controls()
        self._main = self._build_main()

    # ----------------------------------------------------------------- controls
    def _build_controls(self):
        cards = [
            pn.Card(
                pn.Param(
                    self.lab,
                    parameters=names,
                    widgets={n: WIDGETS[n] for n in names if n in WIDGETS},
                    show_name=False,
                    sizing_mode="stretch_width",
                ),
                title=title,
                sizing_mode="stretch_width",
            )
            for title, names in CONTROL_GROUPS.items()
        ]
        self.lab.param.watch(self._hide_unused, ["schedule", "integrator"])
        self._hide_unused()
        return pn.Column(*cards, sizing_mode="stretch_width")

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
    def _map(self, function, source="result", clickable=False):
        def draw(value):
            if value is None:
                return hv.Overlay([])
            return function(value)

        dynamic = hv.DynamicMap(pn.bind(draw, self.lab.param[source]))
        if clickable:
            tap = hv.streams.SingleTap(source=dynamic)
            tap.add_subscriber(self._add_component)
        return pn.pane.HoloViews(dynamic, sizing_mode="stretch_width", min_height=380)

    def _add_component(self, x=None, y=None):
        if x is not None and y is not None:
            self.lab.add_component(x, y)

    def _build_main(self):
        error = pn.pane.Alert(
            pn.bind(lambda e: f"**Input problem:** {e}", self.lab.param.error),
            alert_type="danger",
            visible=pn.bind(bool, self.lab.param.error),
            sizing_mode="stretch_width",
            name="error",
        )
        summary = pn.pane.Markdown(
            pn.bind(result_summary, self.lab.param.result),
            sizing_mode="stretch_width",
            name="summary",
        )
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
            (
                "Schedules",
                pn.Column(
                    TAB_TEXT["Schedules"],
                    pn.Row(
                        self._map(figures.schedule_plot),
                        self._map(self._energy_bars, source="comparison"),
                        sizing_mode="stretch_width",
                    ),
                    self._map(figures.budget_plot, source="comparison"),
                    sizing_mode="stretch_width",
                ),
            ),
            dynamic=True,
            sizing_mode="stretch_width",
        )
        return pn.Column(INTRO, error, summary, tabs, sizing_mode="stretch_width")

    def _energy_bars(self, comparison):
        current = self.lab.result.schedule if self.lab.result is not None else None
        return figures.kinetic_energy_plot(comparison, current)

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
