"""The VI dashboard: a thin Panel view over :class:`posteriorlab.labs.vi.VILab`.

Widgets come from the lab's parameters; figures are HoloViews DynamicMaps bound to the
lab's result. While **Run** is on, this session advances the fit one jitted chunk at a
time, each scheduled a short pause after the previous one is drawn, so the page stays
responsive and the figures stream.
"""

import math

import numpy as np
import panel as pn
import param

from posteriorlab.dashboards.common import (
    control_cards,
    error_alert,
    live_figure,
    page_copy,
    table_markdown,
)
from posteriorlab.dashboards.export import export_card
from posteriorlab.labs.vi import CHUNK_STEPS, VILab
from posteriorlab.plots import vi as figures

CONTROL_GROUPS = {
    "Target": ["target", "curvature", "separation", "noise_scale", "cone_observation"],
    "Family, objective, estimator": [
        "family",
        "objective",
        "num_particles",
        "num_inner",
        "alpha",
        "estimator",
        "component_estimator",
    ],
    "Optimiser": ["learning_rate", "samples_per_step", "seed", "running", "step", "reset"],
}
TARGET_PARAMETERS = {
    "banana": ("curvature",),
    "mixture": ("separation",),
    "regression": ("noise_scale",),
    "cone": ("cone_observation",),
}
WIDGETS = {
    "curvature": pn.widgets.EditableFloatSlider,
    "separation": pn.widgets.EditableFloatSlider,
    "noise_scale": pn.widgets.EditableFloatSlider,
    "cone_observation": pn.widgets.EditableFloatSlider,
    "alpha": pn.widgets.EditableFloatSlider,
    "learning_rate": {"type": pn.widgets.EditableFloatSlider, "format": "0.000"},
    # No start or end: an out-of-range count reaches the lab, which explains it.
    "num_particles": {"type": pn.widgets.IntInput, "start": None, "end": None},
    "num_inner": {"type": pn.widgets.IntInput, "start": None, "end": None},
    "seed": pn.widgets.IntInput,
    "running": {"type": pn.widgets.Toggle, "color": "primary"},
}
URL_PARAMETERS = {name: name for name in VILab.INPUTS} | {
    "learning_rate": "lr",
    "num_particles": "K",
    "num_inner": "m",
    "cone_observation": "o",
    "samples_per_step": "samples",
}
TICK_MS = 100  # the pause between two chunks of a running fit

INTRO = f"""
**Variational inference** fits a simple family q to a posterior p by maximising a lower
bound on log p(x). Here the bound is a *program* — the ELBO, IWAE with K samples, the
Rényi-α bound, or for families with an auxiliary variable (a hierarchical Gaussian, a
ring) HVI, IWHVI and DIWHVI, which estimate log q(z) with m inner samples — and you choose
how its gradient passes through the draw z ~ q: the reparameterisation trick, the score
function (REINFORCE), or the score function with a baseline. Every target has its exact
posterior and exact log p(x), so you can see how far q is from the truth; the noisy cone
is the ring of the programmable-VI paper (Table 4: ELBO −8.08, DIWHVI(5, 5) −7.33 against
log p = −5.32). **Run** trains {CHUNK_STEPS} steps at a time; any change restarts.
"""

TAB_TEXT = {
    "Fit": "Left: q's contours over the exact posterior. Right: the bound per step and its "
    "running mean against the exact log p(x); the gap is KL(q ‖ p) for the ELBO, smaller for "
    "IWAE with more samples.",
    "Gradients": "The variance of each estimator's gradient at the current q, on the same "
    "random numbers: the estimator changes the noise, never the mean. Lower variance means "
    "larger stable learning rates.",
}


class VIDashboard(pn.viewable.Viewer):
    """Controls, explanations and live figures of the VI lab."""

    lab = param.ClassSelector(class_=VILab)

    def __init__(self, **params):
        if "lab" not in params:
            params["lab"] = VILab()
        super().__init__(**params)
        self.shown = page_copy(self.lab, ["result", "error"])  # what the page shows, per batch
        self._callback = None
        self._controls = self._build_controls()
        self._main = self._build_main()
        self.lab.param.watch(self._run_or_pause, ["running"])

    # ----------------------------------------------------------------- streaming
    def _run_or_pause(self, event) -> None:
        if event.new:
            self._schedule_tick()
        elif self._callback is not None:
            self._callback.stop()
            self._callback = None

    def _schedule_tick(self) -> None:
        """Take the next chunk :data:`TICK_MS` after this one is drawn: the gap keeps the
        page responsive (a pause click is handled in it) however long a chunk takes."""
        self._callback = pn.state.add_periodic_callback(self._tick, period=TICK_MS, count=1)

    def _tick(self) -> None:
        self._callback = None
        if self.lab.running:
            self.lab.advance()
        if self.lab.running:
            self._schedule_tick()

    # ----------------------------------------------------------------- controls
    def _build_controls(self):
        self.lab.param.watch(self._hide_unused, ["target", "objective", "family"])
        self._hide_unused()
        cards = control_cards(self.lab, CONTROL_GROUPS, WIDGETS)
        cards.append(export_card(self.lab, "posteriorlab-vi.csv", result_table))
        return cards

    def _hide_unused(self, *_):
        """Show only the settings the chosen target, objective and family use."""
        for kind, names in TARGET_PARAMETERS.items():
            for name in names:
                self.lab.param[name].precedence = None if self.lab.target == kind else -1
        show = {
            "num_particles": self.lab.objective in ("iwae", "renyi", "diwhvi"),
            "num_inner": self.lab.objective in ("iwhvi", "diwhvi"),
            "alpha": self.lab.objective == "renyi",
            "component_estimator": self.lab.family == "mixture",
        }
        for name, shown in show.items():
            self.lab.param[name].precedence = None if shown else -1

    @property
    def controls(self):
        return self._controls

    # ----------------------------------------------------------------- main area
    def _figure(self, function):
        return live_figure(self.shown.param.result, function)

    def _build_main(self):
        summary = pn.pane.Markdown(
            pn.bind(fit_summary, self.shown.param.result), sizing_mode="stretch_width",
            name="summary",
        )  # fmt: skip
        tabs = pn.Tabs(
            (
                "Fit",
                pn.Column(
                    TAB_TEXT["Fit"],
                    pn.Row(
                        self._figure(figures.density_plot),
                        self._figure(figures.bound_plot),
                        sizing_mode="stretch_width",
                    ),  # fmt: skip
                    self._figure(figures.kl_plot),
                    sizing_mode="stretch_width",
                ),
            ),
            (
                "Gradients",
                pn.Column(
                    TAB_TEXT["Gradients"],
                    table_markdown(
                        pn.bind(variance_summary, self.shown.param.result),
                        sizing_mode="stretch_width",
                        name="variance summary",
                    ),  # fmt: skip
                    self._figure(figures.variance_plot),
                    sizing_mode="stretch_width",
                ),
            ),
            dynamic=True,
            sizing_mode="stretch_width",
        )
        return pn.Column(INTRO, error_alert(self.shown), summary, tabs, sizing_mode="stretch_width")

    @property
    def main(self):
        return self._main

    def __panel__(self):
        return pn.Row(pn.Column(self._controls, width=330), self._main, sizing_mode="stretch_width")


def fit_summary(result) -> str:
    """Where the fit stands: steps, the bound against log p(x), KL on the grid."""
    if result is None:
        return ""
    steps = int(result.steps[-1]) if result.steps.size else 0
    recent = result.bounds[-50:].mean() if result.bounds.size else float("nan")
    speed = (
        f" · {1e3 * result.seconds_per_step:.2f} ms per step"
        if math.isfinite(result.seconds_per_step)
        else ""
    )
    return (
        f"**{steps} steps** · bound (mean of the last 50) **{recent:.3f}** vs "
        f"{result.evidence_label} **{result.exact_log_evidence:.3f}** · KL(q ‖ p) on the grid "
        f"**{result.kl[-1]:.3f}** · mean of q ({result.q_mean[0]:.2f}, {result.q_mean[1]:.2f})"
        f" vs exact ({result.exact_mean[0]:.2f}, {result.exact_mean[1]:.2f}){speed}"
    )


def variance_summary(result) -> str:
    """A table of each estimator's total gradient variance and mean signal-to-noise."""
    if result is None:
        return ""
    rows = "\n".join(
        f"| {label}{' (in use)' if label == result.chosen_estimator else ''} | {v:.4g} | {s:.3f} |"
        for label, v, s in zip(
            result.estimator_labels, result.gradient_variance, result.gradient_snr, strict=True
        )
    )
    return "| estimator | total gradient variance | mean SNR |\n|---|---|---|\n" + rows


def result_table(result) -> dict:
    """Per optimiser step: the bound, the exact log p(x), and KL(q ‖ p) on the grid at
    the steps where it was measured (after each chunk; empty elsewhere)."""
    kl = np.full(result.steps.size, np.nan)
    measured = result.kl_steps >= 1
    kl[result.kl_steps[measured] - 1] = result.kl[measured]
    return {
        "step": result.steps, "bound": result.bounds,
        "log_evidence": np.full(result.steps.size, result.exact_log_evidence), "kl": kl,
    }  # fmt: skip
