"""Simulated students: websocket clients that open a lab page and move one of its controls.

A browser holds one websocket per page to ``posteriorlab serve``. Over it, it

1. pulls the document (every Bokeh model on the page: widgets, figures, data sources);
2. announces that the page is ready (Panel holds the figures' updates until then);
3. sends each control change as a document patch, and receives the new figure data and
   the new address (the page's ``Location`` model) as patches.

:class:`StudentSession` speaks the same protocol with Bokeh's Python client, without a
browser, so a load test can run tens of them on a 2-core machine: it measures the
server's work and the network, not the browser's drawing.

Which change a reply belongs to
-------------------------------
Each change sets the lab's seed control to a value no earlier change used. The server
applies a change and recomputes inside one Panel callback, and sends everything that
callback changed together at its end: the figures' new data and the address, whose
query string now carries the new seed. So the first address naming seed ``s`` marks the
moment the figures for ``s`` were sent: ``Change.applied``. Figure data that keeps
arriving before the next address (a lab's second, slower part, e.g. the SMC lab's
replicates) extends ``Change.finished``. A change whose seed never reaches the address,
because a newer one overtook it, was superseded: its work was skipped, not queued.
"""

import importlib
import pkgutil
import threading
import time
import urllib.parse
import urllib.request
from typing import NamedTuple

from bokeh.client import pull_session
from bokeh.document.events import (
    ColumnDataChangedEvent,
    ColumnsPatchedEvent,
    ColumnsStreamedEvent,
    ModelChangedEvent,
)
from bokeh.events import DocumentReady
from bokeh.models import ColumnDataSource


class LabControl(NamedTuple):
    """The control a simulated student moves on a lab page."""

    path: str  # the page, e.g. "/smc"
    title: str  # the widget's title on the page
    url_key: str  # the query parameter the page writes the value to


LAB_CONTROLS = {
    "smc": LabControl("/smc", "Filter seed", "seed"),
    "transformer": LabControl("/transformer", "Seed", "seed"),
    "vi": LabControl("/vi", "Seed", "seed"),
}


class Change(NamedTuple):
    """One control change and when its answer arrived (seconds on this client's clock)."""

    value: int
    sent: float
    applied: float | None  # the address first named this value (figures sent with it)
    finished: float | None  # the last figure data before the next address change


def register_panel_models() -> None:
    """Import every Panel Bokeh model, so a pulled page's document can be decoded."""
    import panel.models

    for module in pkgutil.iter_modules(panel.models.__path__):
        importlib.import_module(f"panel.models.{module.name}")


def _is_figure_data(event) -> bool:
    if isinstance(event, ColumnDataChangedEvent | ColumnsStreamedEvent | ColumnsPatchedEvent):
        return True
    return (
        isinstance(event, ModelChangedEvent)
        and isinstance(event.model, ColumnDataSource)
        and event.attr == "data"
    )


def _set_from_browser(model, value) -> None:
    """Set a spinner as a browser does: ``value`` and, on release, ``value_throttled``
    (read-only in Python, so set through the JSON path the server's patches also use)."""
    model.value = value
    model.set_from_json("value_throttled", value)


class StudentSession(threading.Thread):
    """One page held open for ``duration`` seconds, its control changed every ``period``.

    The session runs on its own thread and event loop. ``first_value`` makes its seeds
    distinct from every other session's. After the last change it waits up to ``drain``
    seconds for that change's answer, then closes. After :meth:`join`, ``changes`` lists what was
    sent and answered, ``open_seconds`` how long the page took to pull, and ``error``
    anything that went wrong.
    """

    def __init__(self, base_url: str, control: LabControl, *, duration: float, period: float,
                 first_value: int, drain: float = 10.0, start_delay: float = 0.0):  # fmt: skip
        super().__init__(daemon=True)
        self.url = base_url.rstrip("/") + control.path
        self.control = control
        self.duration = duration
        self.period = period
        self.first_value = first_value
        self.drain = drain
        self.start_delay = start_delay
        self.changes: list[Change] = []
        self.open_seconds: float | None = None
        self.error: str | None = None
        self._pending: dict[int, list] = {}  # value -> [sent, applied, finished]
        self._current: int | None = None  # the value the address shows now

    def run(self) -> None:
        try:
            self._run()
        except Exception as failure:  # a load test reports failures instead of dying
            self.error = f"{type(failure).__name__}: {failure}"

    def _run(self) -> None:
        time.sleep(self.start_delay)
        opened = time.perf_counter()
        session = pull_session(url=self.url)
        self.open_seconds = time.perf_counter() - opened
        document = session.document
        spinner = next(
            (m for m in document.models if getattr(m, "title", None) == self.control.title),
            None,
        )
        if spinner is None:
            session.close()
            raise LookupError(f"no control titled {self.control.title!r} on {self.url}")
        document.on_change(self._on_change)
        document.callbacks.send_event(DocumentReady())
        loop = session._connection.io_loop
        begin = time.perf_counter()
        values = iter(range(self.first_value, self.first_value + 1_000_000))

        def close_when_answered(deadline):
            last = self._pending[max(self._pending)] if self._pending else None
            if last is None or last[1] is not None or time.perf_counter() > deadline:
                session.close()
            else:
                loop.call_later(0.1, close_when_answered, deadline)

        def change():
            if time.perf_counter() - begin + self.period > self.duration:
                close_when_answered(time.perf_counter() + self.drain)
                return
            value = next(values)
            self._pending[value] = [time.perf_counter(), None, None]
            _set_from_browser(spinner, value)
            loop.call_later(self.period, change)

        loop.call_later(self.period, change)
        session._connection.loop_until_closed()
        self.changes = [Change(value, *times) for value, times in self._pending.items()]

    def _on_change(self, event) -> None:
        now = time.perf_counter()
        if isinstance(event, ModelChangedEvent) and event.attr == "search":
            query = urllib.parse.parse_qs(str(event.new).lstrip("?"))
            values = query.get(self.control.url_key)
            if values and values[0].isdigit() and int(values[0]) in self._pending:
                self._current = int(values[0])
                times = self._pending[self._current]
                if times[1] is None:
                    times[1] = times[2] = now
        elif _is_figure_data(event) and self._current is not None:
            self._pending[self._current][2] = now


def open_and_close(base_url: str, path: str) -> float:
    """Open one page as a browser would (pull, announce ready), close it; seconds taken."""
    opened = time.perf_counter()
    page, _, query = path.partition("?")
    arguments = dict(urllib.parse.parse_qsl(query)) or None  # e.g. /smc?N=100
    session = pull_session(url=base_url.rstrip("/") + page, arguments=arguments)
    session.document.callbacks.send_event(DocumentReady())
    session._connection.force_roundtrip()  # the ready event has reached the server
    session.close()
    return time.perf_counter() - opened


def build_pages(base_url: str, paths, timeout: float = 300.0) -> None:
    """Request each page once over plain HTTP, which builds its document in the server.

    The first build of a lab compiles its programs (tens of seconds on a cold cache), longer
    than the websocket client waits for a connection (20 s); afterwards pages open in
    about a second.
    """
    for path in paths:
        with urllib.request.urlopen(base_url.rstrip("/") + path, timeout=timeout) as response:
            response.read()
