"""Simulated students: websocket clients that open a lab page and move one of its controls.

A browser holds one websocket per page to ``posteriorlab serve``. Over it, it

1. pulls the document (every Bokeh model on the page: widgets, figures, data sources);
2. announces that the page is ready (Panel holds the figures' updates until then);
3. sends each control change as a document patch, and receives the new figure data and
   the new address (the page's ``Location`` model) as patches.

:class:`StudentSession` speaks the same protocol with Bokeh's Python client, without a
browser, so a load test can run tens of them on a 2-core machine: it measures the
server's work and the network, not the browser's drawing. Nor the browser's decoding: a
session reads each incoming patch's events as they arrive (what changed, on which model)
and does not apply them to its own copy of the page. Applying them, in Python, costs a
client more than the server spends making them (a whole copy of the page's models is
looked through for every message), and thirty such clients in one process would be
measuring their own queue.

Which change a reply belongs to
-------------------------------
Each change sets the lab's seed control to a value no earlier change used. A page that
says which seed its figures show (the SMC lab's summary line, "Filter seed 5: …",
changes in the same message as its figures) names the reply: the first message naming
seed ``s`` marks ``Change.applied``, and figure data arriving before the next seed is
named (a lab's second, slower part, e.g. the SMC lab's replicates) extends
``Change.finished``. On other pages the address stands in: its query string carries the
seed once the change is applied, and the figure data in or after that message are taken
for that seed's. A change whose seed is never named, because a newer one overtook it,
was superseded: its work was skipped, not queued.
"""

import importlib
import pkgutil
import re
import threading
import time
import urllib.parse
import urllib.request
from typing import NamedTuple

from bokeh.client import pull_session
from bokeh.events import DocumentReady


class LabControl(NamedTuple):
    """The control a simulated student moves on a lab page."""

    path: str  # the page, e.g. "/smc"
    title: str  # the widget's title on the page
    url_key: str  # the query parameter the page writes the value to
    shown: re.Pattern | None = None  # finds the value in the page's text about its figures


LAB_CONTROLS = {
    "smc": LabControl("/smc", "Filter seed", "seed", re.compile(r"Filter seed (\d+):")),
    "transformer": LabControl("/transformer", "Seed", "seed"),
    "vi": LabControl("/vi", "Seed", "seed"),
}


class Change(NamedTuple):
    """One control change and when its answer arrived (seconds on this client's clock)."""

    value: int
    sent: float
    applied: float | None  # the first figure data for this value arrived
    finished: float | None  # the last figure data for it, before the next address change


def register_panel_models() -> None:
    """Import every Panel Bokeh model, so a pulled page's document can be decoded."""
    import panel.models

    for module in pkgutil.iter_modules(panel.models.__path__):
        importlib.import_module(f"panel.models.{module.name}")


FIGURE_DATA_EVENTS = {"ColumnDataChanged", "ColumnsStreamed", "ColumnsPatched"}


def _is_figure_data(event: dict) -> bool:
    """Whether a patch event (as sent: ``kind``, ``model``, ``attr``, ``new``) carries new
    data for a figure: columns of a data source, or a whole new ``data``."""
    return event["kind"] in FIGURE_DATA_EVENTS or (
        event["kind"] == "ModelChanged" and event["attr"] == "data"
    )


def _set_from_browser(model, value) -> None:
    """Set a spinner as a browser does: ``value`` and, on release, ``value_throttled``
    (read-only in Python, so set through the JSON path the server's patches also use)."""
    model.value = value
    model.set_from_json("value_throttled", value)


class StudentSession(threading.Thread):
    """One page held open for ``duration`` seconds, its control changed every ``period``.

    The session runs on its own thread and event loop. ``first_value`` makes its seeds
    distinct from every other session's. With ``class_opened`` (a barrier shared by the
    sessions of one class) it starts changing only once every session's page is open, so
    the changes meet a server that has finished building pages; ``start_delay`` then
    offsets its changes within the period, so that a class's changes are spread out rather
    than sent all at once. After the last change it waits up to ``drain`` seconds for that
    change's answer, then closes. After :meth:`join`, ``changes`` lists what was sent and
    answered, ``open_seconds`` how long the page took to pull, and ``error`` anything that
    went wrong.
    """

    def __init__(self, base_url: str, control: LabControl, *, duration: float, period: float,
                 first_value: int, drain: float = 10.0, start_delay: float = 0.0,
                 class_opened: threading.Barrier | None = None):  # fmt: skip
        super().__init__(daemon=True)
        self.url = base_url.rstrip("/") + control.path
        self.control = control
        self.duration = duration
        self.period = period
        self.first_value = first_value
        self.drain = drain
        self.start_delay = start_delay
        self.class_opened = class_opened
        self.changes: list[Change] = []
        self.open_seconds: float | None = None
        self.error: str | None = None
        self._pending: dict[int, list] = {}  # value -> [sent, applied, finished]
        self._current: int | None = None  # the value the page says it shows now

    def run(self) -> None:
        try:
            self._run()
        except Exception as failure:  # a load test reports failures instead of dying
            self.error = f"{type(failure).__name__}: {failure}"
            if self.class_opened is not None:
                self.class_opened.abort()  # the others stop waiting for this one

    def _run(self) -> None:
        opened = time.perf_counter()
        session = pull_session(url=self.url)
        self.open_seconds = time.perf_counter() - opened
        # Browsers send without Nagle's delay; Python's websocket client would hold each
        # change's second frame until the server's delayed ACK (40 ms).
        session._connection._socket._socket.protocol.set_nodelay(True)
        document = session.document
        spinner = next(
            (m for m in document.models if getattr(m, "title", None) == self.control.title),
            None,
        )
        if spinner is None:
            session.close()
            raise LookupError(f"no control titled {self.control.title!r} on {self.url}")
        # Read each patch as it comes, without applying it to this copy of the page.
        # (The payload's content is JSON; its arrays stay binary buffers, unread.)
        session._handle_patch = lambda message: self._on_message(
            time.perf_counter(), message.payload.content["events"]
        )
        document.callbacks.send_event(DocumentReady())
        if self.class_opened is not None:
            session._connection.force_roundtrip()  # the page is ready on the server
            self.class_opened.wait(timeout=600)
        time.sleep(self.start_delay)
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

    def _named_value(self, event: dict) -> int | None:
        """The control value that ``event`` says the page now shows, if it says one."""
        if event["kind"] != "ModelChanged":
            return None
        if self.control.shown is not None:
            found = event["attr"] == "text" and self.control.shown.search(str(event["new"]))
            return int(found.group(1)) if found else None
        if event["attr"] == "search":
            query = str(event["new"]).lstrip("?")
            values = urllib.parse.parse_qs(query).get(self.control.url_key)
            return int(values[0]) if values and values[0].isdigit() else None
        return None

    def _on_message(self, now: float, events) -> None:
        """Attribute one message's figure data to the value shown by then."""
        for event in events:
            value = self._named_value(event)
            if value in self._pending:
                self._current = value
        if self._current is not None and any(_is_figure_data(event) for event in events):
            times = self._pending[self._current]
            times[1] = times[1] or now
            times[2] = now


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
