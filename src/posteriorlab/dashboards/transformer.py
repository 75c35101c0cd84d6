"""The distribution-transformer dashboard: a thin Panel view over
:class:`posteriorlab.labs.transformer.TransformerLab`.

Controls come from the lab's parameters; on the prior plot a drag of a component's
mean (its + marker) moves that component, and a click adds an observation (a point, or
its distance from the origin); the five answers (network, exact, importance
sampling, tempered SMC, VI) are drawn in a grid with a table of their cost and scores and
a table mapping prior components to posterior ones.
"""

import math

import holoviews as hv
import numpy as np
import panel as pn
import param

from posteriorlab.dashboards.common import (
    control_cards,
    error_alert,
    live_figure,
    live_map,
    page_copy,
    table_markdown,
)
from posteriorlab.dashboards.export import export_card
from posteriorlab.labs.transformer import TransformerLab
from posteriorlab.plots import transformer as figures
from posteriorlab.plots.style import OVERLAY

CONTROL_GROUPS = {
    "Prior": ["components"],
    "Data": ["likelihood", "observations", "distances", "direction_degrees", "noise_sd",
             "simulate"],
    "Reference methods": ["num_particles", "seed"],
}
WIDGETS = {
    "components": {"type": pn.widgets.TextAreaInput, "height": 130},
    "observations": {"type": pn.widgets.TextAreaInput, "height": 130},
    "distances": {"type": pn.widgets.TextAreaInput, "height": 80},
    "direction_degrees": pn.widgets.EditableFloatSlider,
    "noise_sd": pn.widgets.EditableFloatSlider,
    "seed": pn.widgets.IntInput,
}
URL_PARAMETERS = {
    "components": "prior",
    "observations": "data",
    "distances": "r",
    "likelihood": "likelihood",
    "direction_degrees": "angle",
    "noise_sd": "sigma",
    "num_particles": "N",
    "seed": "seed",
}

NUM_ANSWERS = 5
"""Transformer, exact, importance sampling, tempered SMC, VI."""
PRIOR_CAPTION = (
    "*Drag a **+** (a prior component's mean) to move that component: its row in the "
    "components box is rewritten and every answer follows. Click elsewhere on the plot "
    "to add an observation.*"
)

INTRO = """
A **distribution transformer** reads a Gaussian-mixture prior as a set of component
tokens and the data as observation tokens; a few attention layers turn the prior's
components into the posterior's, in one pass of about a millisecond, for any prior it
was trained around. Edit the prior (one row per component: weight, mean, standard
deviations, correlation) or drag a component's mean on the prior plot, click on it to
add data, and compare the network with the **exact posterior**, **importance sampling**
from the prior, **tempered SMC** (prior to posterior through adaptively chosen
temperatures, resampling and Metropolis moves) and **full-rank VI**, each with its time.
For a point or a direction the exact posterior is a mixture again (each component
Kalman-updated and re-weighted by its evidence); for a **distance** ‖x‖ a component near
the origin becomes a ring, there is no closed form, and the exact answer is a quadrature
on a fine polar grid. KL(exact ‖ q) is what the network was trained to make small; the
particle answers are scored through a kernel density estimate of their particles.
"""


class TransformerDashboard(pn.viewable.Viewer):
    """Controls, explanations and live figures of the distribution-transformer lab."""

    lab = param.ClassSelector(class_=TransformerLab)

    def __init__(self, **params):
        if "lab" not in params:
            params["lab"] = TransformerLab()
        super().__init__(**params)
        self.shown = page_copy(self.lab, ["result", "error"])  # what the page shows, per batch
        self._controls = control_cards(self.lab, CONTROL_GROUPS, WIDGETS)
        self._controls.append(export_card(self.lab, "posteriorlab-transformer.csv", result_table))
        self._main = self._build_main()
        self.lab.param.watch(self._show_likelihood_controls, ["likelihood"])
        self._show_likelihood_controls()

    def _show_likelihood_controls(self, *_):
        """Only the controls of the chosen likelihood: points or distances, and the
        direction of a projection."""
        likelihood = self.lab.likelihood
        shown = {"direction_degrees": likelihood == "projection",
                 "observations": likelihood != "norm", "distances": likelihood == "norm"}
        for name, visible in shown.items():
            self.lab.param[name].precedence = None if visible else -1

    @property
    def controls(self):
        return self._controls

    def _figure(self, function, *args):
        return live_figure(self.shown.param.result, function, *args, min_height=360)

    def _prior_figure(self) -> pn.Column:
        """The prior plot, its + markers draggable and its area clickable, with a caption.

        Three live layers in a fixed order (density, means, data): the drag and the click
        streams belong to the means layer, a drawn element (on the DynamicMap of the
        whole overlay they would be linked to no plot). The drag tool is active from
        the start, so the student drags a + without picking a tool first.
        """
        density, self._means, data = (
            live_map(self.shown.param.result, layer) for layer in figures.PRIOR_LAYERS
        )
        self._drag = hv.streams.PointDraw(source=self._means, add=False)
        self._drag.add_subscriber(self._dropped)
        self._tap = hv.streams.SingleTap(source=self._means)
        self._tap.add_subscriber(self._add_observation)
        overlay = (density * self._means * data).opts(
            title=figures.PRIOR_TITLE, active_tools=["point_draw", "wheel_zoom"], **OVERLAY
        )
        figure = pn.pane.HoloViews(overlay, sizing_mode="stretch_width", min_height=360)
        return pn.Column(figure, pn.pane.Markdown(PRIOR_CAPTION, name="prior caption"),
                         sizing_mode="stretch_width")  # fmt: skip

    def _dropped(self, data=None):
        """A drop of the drag tool: move each component whose + now lies elsewhere.

        The points arrive in the order drawn, point k for component k of the result
        shown. A drop that changes no row (a point deleted by Backspace, a drop while
        the text does not parse, a move below the rows' three decimals) redraws the
        markers where the prior has them.
        """
        shown = self.shown.result
        before = self.lab.components
        if data and shown is not None and len(data.get("x", ())) == len(shown.prior_means):
            dropped = np.column_stack([data["x"], data["y"]]).astype(float)
            moved = ~np.all(np.isclose(dropped, shown.prior_means, rtol=0.0, atol=1e-6), axis=1)
            for index in np.flatnonzero(moved):
                self.lab.move_component(int(index), dropped[index])
        if self.lab.components == before:
            hv.streams.Stream.trigger(self._means.streams)  # redraw the markers

    def _add_observation(self, x=None, y=None):
        if x is not None and y is not None:
            self.lab.add_observation(x, y)

    def _build_main(self):
        def markdown(function, name):
            return table_markdown(pn.bind(function, self.shown.param.result),
                                  sizing_mode="stretch_width", name=name)  # fmt: skip

        grid = pn.GridBox(
            *(self._figure(figures.answer_plot, index) for index in range(NUM_ANSWERS)),
            ncols=2, sizing_mode="stretch_width",
        )  # fmt: skip
        return pn.Column(
            INTRO,
            error_alert(self.shown),
            markdown(note, "note"),
            markdown(scores_table, "scores"),
            pn.Row(
                self._prior_figure(),
                markdown(components_table, "components"),
                sizing_mode="stretch_width",
            ),
            grid,
            sizing_mode="stretch_width",
        )

    @property
    def main(self):
        return self._main

    def __panel__(self):
        return pn.Row(pn.Column(self._controls, width=330), self._main, sizing_mode="stretch_width")


def _number(value, digits=3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def note(result) -> str:
    return f"*{result.note}*" if result is not None and result.note else ""


def scores_table(result) -> str:
    """Each method's time, forward KL to the exact posterior, error of its mean and the
    log-density it gives the simulated truth; then the evidence, the ESS and the SMC
    ladder."""
    if result is None:
        return ""
    exact_mean = result.answers[1].mean
    rows = []
    for answer in result.answers:
        error = float(((answer.mean - exact_mean) ** 2).sum() ** 0.5)
        rows.append(
            f"| {answer.name} | {answer.milliseconds:.2f} | "
            f"{answer.forward_kl:.3f} ± {answer.forward_kl_se:.3f} | {error:.3f} | "
            f"{_number(answer.truth_log_density)} |"
        )
    truth = "log q(true x)" if result.truth is not None else "log q(true x) — press *Simulate*"
    return (
        f"| method | time (ms) | KL(exact ‖ q) | distance of its mean to the exact mean | "
        f"{truth} |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Exact log p(y) = **{result.log_evidence:.3f}**; importance sampling's estimate "
        f"{result.log_evidence_estimate:.3f} with an effective sample size of "
        f"{result.effective_sample_size:.0f} of {result.particles.shape[0]}; tempered "
        f"SMC's {result.smc_log_evidence:.3f} after {result.smc_temperatures.size} "
        f"temperatures (Metropolis acceptance {result.smc_acceptance:.0%})."
    )


def components_table(result) -> str:
    """Prior component k → its posterior component under the network and exactly (where
    the exact posterior is a mixture)."""
    if result is None:
        return ""
    network_weights, network_means = result.transformer_components

    def exact_cell(k):
        if result.exact_components is None:
            return "—"
        weights, means = result.exact_components
        return f"{weights[k]:.2f} at ({means[k][0]:.2f}, {means[k][1]:.2f})"

    rows = "\n".join(
        f"| {k + 1} | {result.prior_weights[k]:.2f} at ({result.prior_means[k][0]:.2f}, "
        f"{result.prior_means[k][1]:.2f}) | {network_weights[k]:.2f} at "
        f"({network_means[k][0]:.2f}, {network_means[k][1]:.2f}) | {exact_cell(k)} |"
        for k in range(result.prior_weights.size)
    )
    footnote = (
        "\n\n*The exact posterior of a distance is no mixture (a ring or arcs): see its "
        "picture.*" if result.exact_components is None else ""
    )
    return (
        "**Each prior component and its posterior component** (weight at mean)\n\n"
        "| k | prior | transformer | exact |\n|---|---|---|---|\n" + rows + footnote
    )


def result_table(result) -> dict:
    """One row per method: its time, KL(exact ‖ q) with its standard error, its mean and
    the log-density it gives the simulated truth (empty where undefined)."""
    answers = result.answers
    return {
        "method": np.array([answer.name for answer in answers]),
        "milliseconds": np.array([answer.milliseconds for answer in answers]),
        "kl_exact_q": np.array([answer.forward_kl for answer in answers]),
        "kl_standard_error": np.array([answer.forward_kl_se for answer in answers]),
        "mean_x1": np.array([answer.mean[0] for answer in answers]),
        "mean_x2": np.array([answer.mean[1] for answer in answers]),
        "log_q_truth": np.array([answer.truth_log_density for answer in answers]),
    }
