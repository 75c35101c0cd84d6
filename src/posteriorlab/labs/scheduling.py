"""When a lab recomputes: never twice at once, and the newest inputs win.

A served lab gets its changes from a pool of threads (one change per slider release, from
a student who may release it every half second). Computing every change in turn would
queue work faster than it is done; computing them side by side would race on the lab.
:class:`Recomputation` does neither:

* ``request(compute)`` runs ``compute`` at once if the lab is idle. If a computation is
  already running, it only notes that ``compute`` is wanted and returns; the thread that
  is running then runs it, once, with the newest inputs. Any number of changes that
  arrive during one computation cost a single further computation.
* Each request has a generation number. Work that runs in parts (a second phase handed
  to ``run_later``, or chunks of a long loop) asks ``is_current(generation)`` between
  parts and stops as soon as a newer request has come: superseded work is dropped, not
  finished.
* A :class:`Deadline` bounds how long the chunked parts may run.

Without threads (a notebook, a test) a request simply runs at once, as a plain call would.
"""

import threading
import time
from collections.abc import Callable


def run_now(function: Callable[[], None]) -> None:
    function()


class Recomputation:
    """One lab's recomputations, serialised and coalesced (newest inputs win)."""

    def __init__(self, run_later: Callable[[Callable[[], None]], None] | None = None):
        """``run_later(fn)`` runs follow-up phases (default: at once, in the caller)."""
        self.run_later = run_later or run_now
        self._lock = threading.Lock()
        self._generation = 0
        self._pending: dict[Callable[[], None], None] = {}  # an ordered set
        self._running = False

    @property
    def generation(self) -> int:
        """The number of the newest request."""
        return self._generation

    def is_current(self, generation: int) -> bool:
        """Whether no request has come since the one numbered ``generation``."""
        return generation == self._generation

    def request(self, compute: Callable[[], None], *, supersedes: bool = True) -> None:
        """Ask for ``compute()`` with the current inputs; see the module docstring.

        A lab may have several computations (a full update, a cheaper one for a time
        slider): each one asked for while another runs is run once more, in the order
        last asked, after it. ``supersedes=False`` marks a computation that leaves the
        pending follow-ups valid (it starts no new generation).
        """
        with self._lock:
            self._generation += supersedes
            self._pending.pop(compute, None)
            self._pending[compute] = None
            if self._running:
                return  # the running loop below will run it with the newest inputs
            self._running = True
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    return
                compute = next(iter(self._pending))
                del self._pending[compute]
            try:
                compute()
            except BaseException:
                with self._lock:
                    self._running = False
                raise

    def follow_up(self, phase: Callable[[int], None]) -> None:
        """Hand ``phase(generation)`` to ``run_later``; it is skipped if superseded by then."""
        generation = self._generation

        def run_if_current():
            if self.is_current(generation):
                phase(generation)

        self.run_later(run_if_current)


class Deadline:
    """A time limit for work done in chunks: ``expired()`` once ``seconds`` have passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.perf_counter() + seconds

    def expired(self) -> bool:
        return time.perf_counter() > self._end
