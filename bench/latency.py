"""Latency of the served SMC and paths labs, measured in headless Chromium.

Starts ``posteriorlab serve`` on a free localhost port and reports, for the SMC lab
(``--lab smc``, the default)

* cold start: from launching the server to the first SMC page showing its figures and
  the exact answer (compilation included; a second start reads the persistent
  compilation cache);
* update latency: from typing a new value into a control (the filter seed, then the
  data seed) to the page showing the new numbers, median and 90th percentile over
  repeated changes, at N = 1000, T = 100 (the defaults) after warm-up;

and for the paths lab (``--lab paths``) the latency of a schedule change at the default
1,000 trajectories and 50 Heun steps, measured two ways: until the summary line names
the new schedule, and until the last websocket message of the update has arrived (the
figures' new data; the page is quiet for 0.5 s after it).

Usage::

    python bench/latency.py [--lab smc|paths] [--repeats 15] [--port 5099]

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


def time_schedule_change(page, label, frames):
    """Seconds to the new summary and to the last websocket frame of the update."""
    before = paths_summary(page)
    frames.clear()
    start = time.perf_counter()
    control(page, "Schedule").select_option(label=label)
    while paths_summary(page) == before:
        page.wait_for_timeout(2)
    summary = time.perf_counter() - start
    while not frames or time.perf_counter() - frames[-1] < 0.5:
        page.wait_for_timeout(20)
    return summary, frames[-1] - start


def measure_paths(page, url, launched, repeats):
    frames = []
    page.on(
        "websocket",
        lambda socket: socket.on("framereceived", lambda _: frames.append(time.perf_counter())),
    )
    page.goto(url + "/paths")
    page.get_by_text("energy distance to exact draws").wait_for()
    print(f"cold start to first interactive paths page: {time.perf_counter() - launched:.1f} s")
    page.wait_for_timeout(3000)  # let the deferred schedule comparison finish
    for label in SCHEDULES:  # warm-up: every schedule once
        time_schedule_change(page, label, frames)
    times = [time_schedule_change(page, SCHEDULES[i % 4], frames) for i in range(repeats)]
    measured = {
        "summary line": [summary for summary, _ in times],
        "last message": [message for _, message in times],
    }
    for name, values in measured.items():
        ordered = sorted(values)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(
            f"schedule change to {name}: median {1000 * statistics.median(ordered):.0f} ms, "
            f"p90 {1000 * p90:.0f} ms over {len(ordered)} changes"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", choices=("smc", "paths"), default="smc")
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
            if args.lab == "paths":
                measure_paths(page, url, launched, args.repeats)
                return
            page.goto(url + "/smc")
            page.get_by_text("exact log Z (Kalman)").wait_for()
            cold = time.perf_counter() - launched
            print(f"cold start to first interactive SMC page: {cold:.1f} s")

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
