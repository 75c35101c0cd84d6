"""The multi-page Panel server behind ``posteriorlab serve``.

Each page is a function, called once per browser session, that builds a fresh lab and
dashboard: nothing a student changes is shared with another session. Heavy programs are
compiled once per process (and cached on disk across restarts) by a warm-up that runs in
the background as the server starts.
"""

import os
import pathlib
import signal
import threading
import time

import panel as pn
from panel.io.document import init_doc
from panel.links import Callback

from posteriorlab.dashboards import paths as paths_dashboard
from posteriorlab.dashboards import smc as smc_dashboard
from posteriorlab.dashboards import transformer as transformer_dashboard
from posteriorlab.dashboards import vi as vi_dashboard
from posteriorlab.labs.paths import INTEGRATOR_LABELS, PathsLab
from posteriorlab.labs.smc import RESAMPLING_LABELS, SMCLab
from posteriorlab.labs.steering import SteeringLab
from posteriorlab.labs.transformer import TransformerLab
from posteriorlab.labs.vi import VILab

ASSETS = pathlib.Path(__file__).parent / "assets"

LABS = {
    "smc": {
        "title": "Sequential Monte Carlo",
        "summary": (
            "Filter a state-space model with particles. Change N, the resampling scheme, "
            "the ESS threshold and entropic annealing; watch the particle cloud, the ESS, the "
            "genealogy collapse, PaRIS and FFBSm smoothing, and the log-evidence against the "
            "exact Kalman answer."
        ),
        "thumbnail": "smc.png",
    },
    "paths": {
        "title": "Probability paths",
        "summary": (
            "Carry noise to a Gaussian mixture along exact probability paths. Switch the "
            "noise schedule (Cond-OT, cosine, VP, VE, kinetic-optimal), the integrator, the "
            "step count and the SDE noise level; watch the trajectories, the density and "
            "velocity field, and compare kinetic energy and error per step budget."
        ),
        "thumbnail": "paths.png",
    },
    "vi": {
        "title": "Variational inference",
        "summary": (
            "Fit a Gaussian, a mixture, a hierarchical or a ring family to a banana, a "
            "funnel, two modes, a regression posterior or the noisy cone by maximising the "
            "ELBO, IWAE, the Rényi bound or HVI / IWHVI / DIWHVI, written as programs. Choose "
            "the gradient estimator at each sample site and compare their variance; the exact "
            "posterior and log p(x) are drawn beside the fit."
        ),
        "thumbnail": "vi.png",
    },
    "transformer": {
        "title": "Distribution transformer",
        "summary": (
            "Edit a Gaussian-mixture prior and click to add data: a trained transformer "
            "maps prior to posterior in about a millisecond. Compare it with the exact "
            "posterior, importance sampling and full-rank VI, their times and scores, and "
            "see where each prior component goes."
        ),
        "thumbnail": "transformer.png",
    },
}

ACCENT = "#1f77b4"
# No busy indicator: Panel's follows one server-wide flag, so every open page's spinner
# would turn on and off (twice, each sent to its browser) whenever any student moved a
# control: wrong for the student watching it, and with thirty pages open the event loop
# spent a sixth of its time on other pages' spinners.
TEMPLATE_STYLE = dict(header_background=ACCENT, busy_indicator=None)


class Template(pn.template.BootstrapTemplate):
    """The page template: Bootstrap, which fetches nothing from outside the server (the
    Fast one loads a web font), so a page loads at full speed on a network without the
    public font hosts.

    Building a page adds a few hundred Bokeh models to its document, and each browser-side
    link between widgets (an editable slider's box and its slider) would make Bokeh walk
    the document's whole model graph again: about twenty walks per lab page. Holding the
    graph frozen while the page is built leaves one walk, at the end.
    """

    def server_doc(self, doc=None, title=None, location=True):
        document = init_doc(doc or pn.state.curdoc)
        with document.models.freeze():
            return super().server_doc(document, title, location)



def _configure() -> None:
    # Sliders recompute on release, not on every pixel of a drag.
    pn.config.throttled = True


def _navigation(current: str) -> pn.pane.HTML:
    """Links to the home page and every lab, white on the header; the current one in bold."""
    style = "color: white; margin-right: 1.2em; font-size: 1.05em"
    links = [("./", "Home", current == "")] + [
        (f"./{name}", lab["title"], current == name) for name, lab in LABS.items()
    ]
    html = "".join(
        f'<a href="{href}" style="{style}; font-weight: {700 if here else 400}">{title}</a>'
        for href, title, here in links
    )
    return pn.pane.HTML(html, margin=(8, 20))


def landing_page():
    """The front page: what each lab teaches, with a picture and a link."""
    _configure()
    cards = []
    for name, lab in LABS.items():
        thumbnail = ASSETS / lab["thumbnail"]
        picture = pn.pane.PNG(str(thumbnail), width=420) if thumbnail.exists() else None
        cards.append(
            pn.Card(
                *[
                    part
                    for part in (
                        picture,
                        pn.pane.Markdown(
                            f"{lab['summary']}\n\n**[Open the {lab['title']} lab →](./{name})**"
                        ),
                    )
                    if part is not None
                ],
                title=lab["title"],
                collapsible=False,
                width=460,
            )
        )
    intro = pn.pane.Markdown(
        "## Approximate Bayesian inference you can see\n\n"
        "Each lab runs a real inference algorithm (in JAX) live as you move its controls, "
        "and draws the **exact answer** beside the approximation wherever one exists. Every "
        "view's settings live in its URL: copy the address to share exactly what you see."
    )
    return Template(
        title="posteriorlab",
        main=[intro, pn.FlexBox(*cards)],
        **TEMPLATE_STYLE,
        header=[_navigation("")],
    )


def apply_url_values(query: dict, url_state) -> list[str]:
    """Set the parameters the address names, keeping every value that is valid.

    Panel's location sync applies all of a page's URL values in one update, so one bad
    value (``steps=abc``) would silently drop them all. Here each value is read and
    checked on its own; the valid ones are applied together (one recomputation) and a
    message is returned for each of the others.
    """
    problems = []
    for parameterized, names in url_state:
        valid = {}
        for name, key in names.items():
            if key not in query:
                continue
            parameter = parameterized.param[name]
            try:
                value = parameter.deserialize(query[key])
                parameter._validate(value)
            except Exception as error:  # param raises ValueError or TypeError, or others
                problems.append(
                    f"The address sets {key}={query[key]!r}, which “{parameter.label}” "
                    f"cannot take ({error}); the lab kept {getattr(parameterized, name)!r}."
                )
            else:
                valid[name] = value
        parameterized.param.update(**valid)
    return problems


def _lab_page(name: str, dashboard, url_state):
    """A lab page: the labs' state mirrored in the URL, controls in the sidebar.

    ``url_state`` lists ``(parameterized, {parameter: URL name})`` pairs.
    """
    problems = []
    if pn.state.location is not None:
        problems = apply_url_values(pn.state.location.query_params, url_state)
        for parameterized, names in url_state:
            # The values refused above fail again here; they were explained already.
            pn.state.location.sync(parameterized, names, on_error=lambda _: None)
    alert = pn.pane.Alert(
        "**Address problem:** " + " ".join(problems), alert_type="warning",
        visible=bool(problems), sizing_mode="stretch_width",
    )  # fmt: skip
    page = Template(
        title=f"posteriorlab · {LABS[name]['title']}",
        sidebar=[dashboard.controls],
        main=[alert, dashboard.main],
        **TEMPLATE_STYLE,
        header=[_navigation(name)],
        sidebar_width=340,
    )
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        parts = [dashboard.controls, dashboard.main]
        pn.state.on_session_destroyed(lambda _context: forget_browser_callbacks(parts))
    return page


def page_objects(parts) -> list:
    """Every Panel object inside ``parts`` (layouts of a page): what they show, the parts
    of composite widgets, and the widgets a ``pn.Param`` made but hides for now (e.g. a
    model's unused ρ)."""
    found, seen = [], set()
    pending = [viewable for part in parts for viewable in part.select()]
    while pending:
        viewable = pending.pop()
        if id(viewable) in seen:
            continue
        seen.add(id(viewable))
        found.append(viewable)
        if isinstance(viewable, pn.Param):
            for widget in viewable._widgets.values():
                pending.extend(widget.select())
    return found


def forget_browser_callbacks(parts) -> None:
    """Drop the browser-side callbacks of a closed page's ``parts`` from Panel's registry.

    Panel keeps every ``jscallback`` (an editable slider's text box steering its slider,
    a copy-link button) in a class-wide registry keyed weakly by the widget, but each entry
    holds the other widgets it names, and through them the widget itself and the page:
    without this, every closed page's lab would stay in memory for good.
    """
    for viewable in page_objects(parts):
        Callback.registry.pop(viewable, None)


def _run_in_background(function) -> None:
    """Run a lab's second phase once its first is on the page: on one of the server's
    threads when it has them (``serve`` gives it some), else on the next tick of the
    event loop."""
    pn.state.execute(function, schedule="thread" if pn.config.nthreads else True)


def smc_page():
    """The SMC lab, its state mirrored in the URL (e.g. ``/smc?N=1000&seed=3``)."""
    _configure()
    # The page opens on the Particles tab: the replicates wait for the Evidence tab, the
    # smoother for the Estimates tab.
    lab = SMCLab(run_later=_run_in_background, replicates_shown=False, smoothing_shown=False)
    url_state = [(lab, smc_dashboard.URL_PARAMETERS)]
    return _lab_page("smc", smc_dashboard.SMCDashboard(lab=lab), url_state)


def paths_page():
    """The paths lab (e.g. ``/paths?schedule=cosine&steps=20``; the steering tab's state
    too, e.g. ``&lambda=0.5&N=256``)."""
    _configure()
    lab = PathsLab(run_later=_run_in_background)
    steering = SteeringLab(paths=lab, compute=False, run_later=_run_in_background)
    url_state = [
        (lab, paths_dashboard.URL_PARAMETERS),
        (steering, paths_dashboard.STEERING_URL_PARAMETERS),
    ]
    dashboard = paths_dashboard.PathsDashboard(lab=lab, steering=steering)
    return _lab_page("paths", dashboard, url_state)


def vi_page():
    """The VI lab (e.g. ``/vi?target=regression&estimator=score``)."""
    _configure()
    lab = VILab()
    url_state = [(lab, vi_dashboard.URL_PARAMETERS)]
    return _lab_page("vi", vi_dashboard.VIDashboard(lab=lab), url_state)


def transformer_page():
    """The distribution-transformer lab (e.g. ``/transformer?sigma=0.3&seed=2``)."""
    _configure()
    lab = TransformerLab()
    url_state = [(lab, transformer_dashboard.URL_PARAMETERS)]
    dashboard = transformer_dashboard.TransformerDashboard(lab=lab)
    return _lab_page("transformer", dashboard, url_state)


PAGES = {
    "/": landing_page,
    "/smc": smc_page,
    "/paths": paths_page,
    "/vi": vi_page,
    "/transformer": transformer_page,
}


def warm_up() -> None:
    """Compile the default programs of every lab (each SMC resampling scheme, each paths
    integrator, the steering methods and both transformer likelihoods at the default
    sizes)."""
    for scheme in RESAMPLING_LABELS.values():
        SMCLab(resampling=scheme)
    for integrator in INTEGRATOR_LABELS.values():
        PathsLab(integrator=integrator)
    SteeringLab()
    VILab().advance()
    TransformerLab()
    TransformerLab(likelihood="norm")


def start_warm_up() -> None:
    threading.Thread(target=warm_up, name="posteriorlab-warmup", daemon=True).start()


def stop_with_parent() -> None:
    """In a forked server process: stop once the process that forked it has gone.

    The forking parent only waits on its children, so a ``kill`` of the parent alone
    (what a process manager or a lecturer's ``kill PID`` sends) would leave them serving
    the port with nobody to stop them. Each child checks once a second whether it has
    been re-parented, and then sends itself the same SIGTERM.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="posteriorlab-parent-watch", daemon=True).start()


def serve(
    *,
    port: int,
    address: str,
    websocket_origin,
    num_procs: int = 1,
    num_threads: int | None = None,
    prefix: str = "",
    show: bool = False,
    warmup: bool = True,
    **server_options,
) -> None:
    """Start the server and block; warm-up runs in a background thread of each process.

    With ``num_procs > 1`` Bokeh forks the server processes after binding the port, so
    nothing before this call may start JAX's runtime (importing the labs does not; a
    test holds that).

    Each process handles its pages' changes on ``num_threads`` threads (default: one
    per core), so one student's computation does not hold up another's page; JAX
    releases Python's lock while it computes. A lab never runs two computations at once
    and skips superseded ones (:mod:`posteriorlab.labs.scheduling`).

    ``server_options`` go to Bokeh's server, e.g. ``unused_session_lifetime_milliseconds``
    (how long a closed page's session is kept before it is discarded; 15 s by default).
    """
    pn.config.nthreads = num_threads or os.cpu_count() or 1
    if warmup and num_procs == 1:
        start_warm_up()
    elif warmup:
        # Each forked server process compiles its own programs (from the disk cache
        # after a first start). JAX must not have started in this parent: a process
        # whose XLA threads are running cannot be forked safely.
        os.register_at_fork(after_in_child=start_warm_up)
    if num_procs > 1:
        os.register_at_fork(after_in_child=stop_with_parent)
    pn.serve(
        {path.strip("/") or "/": page for path, page in PAGES.items()},
        port=port,
        address=address,
        websocket_origin=websocket_origin,
        num_procs=num_procs,
        prefix=prefix,
        show=show,
        title={
            "/": "posteriorlab",
            "smc": "posteriorlab · SMC",
            "paths": "posteriorlab · paths",
            "vi": "posteriorlab · VI",
            "transformer": "posteriorlab · transformer",
        },
        static_dirs={"assets": str(ASSETS)},
        threaded=False,
        **server_options,
    )
