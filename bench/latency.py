"""Latency of the served SMC, paths and VI labs, measured in headless Chromium.

Starts ``posteriorlab serve`` on a free localhost port and reports, for the SMC lab
(``--lab smc``, the default)

* cold start: from launching the server to the first SMC page showing its figures and
  the exact answer (compilation included; a second start reads the persistent
  compilation cache);
* update latency: from typing a new value into a control (the filter seed, then the
  data seed) to the page showing the new numbers, median and 90th percentile over
  repeated changes, at N = 1000, T = 100 (the defaults) after warm-up. A new session
  and the updates are timed once the server is idle: after its start it compiles (or
  reads from its cache) the other labs' programs in the background;

and for the paths lab (``--lab paths``) the latency of a schedule change at the default
1,000 trajectories and 50 Heun steps, in the page's own clock: until the summary line
names the new schedule, until the last binary websocket message (the figures' new
arrays) has arrived, and until the last message of the update.

For the VI lab (``--lab vi``): cold start to the first VI page, a warm page load in a
new session, the latency of an estimator change (the fit restarts: a new gradient-variance table)
in the page's clock, and the streaming rate while **Run** is
on (new fit lines per second over ten seconds, each a chunk of 50 optimiser steps), on
the regression target and on the noisy cone with the ring family and DIWHVI(5, 5).

Usage::

    python bench/latency.py [--lab smc|paths|vi] [--repeats 15] [--port 5099]

Needs Debian's ``chromium`` (or ``POSTERIORLAB_CHROMIUM``) and Playwright.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

import psutil
from playwright.sync_api import sync_playwright

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def wait_for_server(url, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def wait_until_idle(pid: int, timeout: float = 180.0) -> None:
    """Wait until the server used less than a fifth of a core for two seconds running."""
    server = psutil.Process(pid)
    server.cpu_percent(None)
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(1.0)
        quiet = quiet + 1 if server.cpu_percent(None) < 20 else 0


def control(page, label):
    return page.locator(".bk-input-group", has_text=label).locator("input, select").first


def evidence_line(page):
    return page.locator("p", has_text="log-evidence").first.inner_text()


def time_change(page, label, value):
    """Seconds from submitting ``value`` in the control ``label`` to a new evidence line."""
    before = evidence_line(page)
    box = control(page, label)
    box.fill(str(value))
    start = time.perf_counter()
    box.press("Enter")
    while evidence_line(page) == before:
        page.wait_for_timeout(5)
    return time.perf_counter() - start


def paths_summary(page):
    return page.locator("p", has_text="kinetic energy").first.inner_text()


SCHEDULES = ("Cosine", "Cond-OT (straight lines)", "Linear VP", "Kinetic-optimal for this mixture")

# Stamp every websocket message in the page's own clock: binary messages carry the
# figures' new arrays, text messages the document patches and status changes.
RECORD_MESSAGES = """
const NativeWebSocket = window.WebSocket;
window.__messages = [];
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) =>
      window.__messages.push([performance.now(), typeof event.data !== "string"]));
  }
};
"""


def time_schedule_change(page, label):
    """Milliseconds, in the page's clock, from the change to the new summary line, to the
    last figure data (binary message) and to the last message of the update."""
    before = paths_summary(page)
    start = page.evaluate("() => { window.__messages = []; return performance.now(); }")
    control(page, "Schedule").select_option(label=label)
    while paths_summary(page) == before:
        page.wait_for_timeout(2)
    summary = page.evaluate("() => performance.now()")
    page.wait_for_timeout(1000)  # every message of the update has arrived by then
    messages = page.evaluate("() => window.__messages")
    figures = [stamp for stamp, binary in messages if binary] or [summary]
    return summary - start, max(figures) - start, max(stamp for stamp, _ in messages) - start


def measure_paths(page, url, launched, repeats):
    page.add_init_script(RECORD_MESSAGES)
    page.goto(url + "/paths")
    page.get_by_text("energy distance to exact draws").wait_for()
    print(f"cold start to first interactive paths page: {time.perf_counter() - launched:.1f} s")
    page.wait_for_timeout(3000)  # let the deferred schedule comparison finish
    for label in SCHEDULES:  # warm-up: every schedule once
        time_schedule_change(page, label)
    times = [time_schedule_change(page, SCHEDULES[i % 4]) for i in range(repeats)]
    names = ("summary line shown", "last figure data received", "last message")
    for index, name in enumerate(names):
        report(f"schedule change to {name}", [measured[index] for measured in times])


def fit_line(page):
    return page.locator("p", has_text="bound (mean of the last 50)").first.inner_text()


ESTIMATORS = ("Score function (REINFORCE)", "Score function with baseline", "Reparameterisation")


def variance_table(page):
    return page.locator("table", has_text="total gradient variance").first.inner_text()


def time_estimator_change(page, label):
    """Milliseconds in the page's clock from choosing ``label`` to the new gradient
    variance table (the fit restarted; Gradients tab open) and to the last figure data."""
    page.wait_for_timeout(300)
    before = variance_table(page)
    start = page.evaluate("() => { window.__messages = []; return performance.now(); }")
    control(page, "Gradient estimator at z").select_option(label=label)
    deadline = time.monotonic() + 120
    while variance_table(page) == before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new variance table after choosing {label!r}")
        page.wait_for_timeout(2)
    line = page.evaluate("() => performance.now()")
    page.wait_for_timeout(1000)
    figures = [stamp for stamp, binary in page.evaluate("() => window.__messages") if binary]
    return line - start, max(figures or [line]) - start


def chunks_per_second(page, seconds=10.0):
    """New fit lines (chunks) per second while Run is on."""
    run = page.get_by_role("button", name="Run / pause")
    run.click()
    seen, last = 0, fit_line(page)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        page.wait_for_timeout(20)
        line = fit_line(page)
        seen, last = seen + (line != last), line
    run.click()
    return seen / (time.perf_counter() - start)


def report(name, values, unit="ms"):
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    print(f"{name}: median {statistics.median(ordered):.0f} {unit}, p90 {p90:.0f} {unit} "
          f"over {len(ordered)} changes")  # fmt: skip


def measure_vi(page, url, launched, repeats):
    page.add_init_script(RECORD_MESSAGES)
    page.goto(url + "/vi?target=regression")
    page.get_by_text("vs exact log p(x)").wait_for()
    print(f"cold start to first interactive VI page: {time.perf_counter() - launched:.1f} s")
    loaded = time.perf_counter()
    page.goto(url + "/vi?target=regression&seed=1")
    page.get_by_text("vs exact log p(x)").wait_for()
    print(f"warm page load (new session):           {time.perf_counter() - loaded:.2f} s")
    page.locator(".bk-tab", has_text="Gradients").click()
    page.locator("td", has_text="(in use)").wait_for()
    for label in ESTIMATORS:  # warm-up: each estimator once
        time_estimator_change(page, label)
    times = [time_estimator_change(page, ESTIMATORS[i % 3]) for i in range(repeats)]
    report("estimator change to new variance table", [line for line, _ in times])
    report("estimator change to last figure data", [figure for _, figure in times])
    print(f"streaming, regression, mean field + ELBO: {chunks_per_second(page):.1f} chunks/s")
    page.goto(url + "/vi?target=cone&family=ring&objective=diwhvi")
    page.get_by_text("vs exact log p(x)").wait_for()
    chunks_per_second(page, 3.0)  # compiles the cone's programs
    print(f"streaming, cone, ring + DIWHVI(5, 5):     {chunks_per_second(page):.1f} chunks/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", choices=("smc", "paths", "vi"), default="smc")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()
    chromium = os.environ.get("POSTERIORLAB_CHROMIUM") or shutil.which("chromium")
    url = f"http://localhost:{args.port}"

    launched = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "posteriorlab.cli", "serve", "--port", str(args.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_server(url + "/")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(300_000)
            if args.lab in ("paths", "vi"):
                measure = measure_paths if args.lab == "paths" else measure_vi
                measure(page, url, launched, args.repeats)
                return
            page.goto(url + "/smc")
            page.get_by_text("exact log Z (Kalman)").wait_for()
            cold = time.perf_counter() - launched
            print(f"cold start to first interactive SMC page: {cold:.1f} s")
            wait_until_idle(server.pid)

            loaded = time.perf_counter()
            page.goto(url + "/smc?seed=1")
            page.get_by_text("exact log Z (Kalman)").wait_for()
            print(f"warm page load (new session):            {time.perf_counter() - loaded:.2f} s")

            for label in ("Filter seed", "Data seed"):
                time_change(page, label, 1000)  # warm-up change
                times = sorted(time_change(page, label, v) for v in range(2, 2 + args.repeats))
                p90 = times[int(0.9 * (len(times) - 1))]
                median = 1000 * statistics.median(times)
                print(
                    f"update after changing {label!r}: median {median:.0f} ms,"
                    f" p90 {1000 * p90:.0f} ms over {len(times)} changes"
                )
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
