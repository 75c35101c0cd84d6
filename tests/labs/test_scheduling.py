"""Recomputation: serialised, coalesced (newest inputs win), superseded work dropped."""

import threading

import pytest

from posteriorlab.labs.scheduling import Deadline, Recomputation


def test_a_request_runs_at_once_without_threads():
    recomputation, runs = Recomputation(), []
    recomputation.request(lambda: runs.append(recomputation.generation))
    recomputation.request(lambda: runs.append(recomputation.generation))
    assert runs == [1, 2]


def test_requests_during_a_computation_cost_one_more_run_with_the_newest_inputs():
    recomputation = Recomputation()
    inputs = {"value": 0}
    seen = []
    started, release = threading.Event(), threading.Event()

    def compute():
        seen.append(inputs["value"])
        if len(seen) == 1:
            started.set()
            assert release.wait(10)

    first = threading.Thread(target=recomputation.request, args=(compute,))
    first.start()
    assert started.wait(10)
    for value in (1, 2, 3):  # three changes while the first computation runs
        inputs["value"] = value
        recomputation.request(compute)  # returns at once: one is running
    release.set()
    first.join(10)
    assert seen == [0, 3]
    assert recomputation.generation == 4


def test_a_failed_computation_does_not_block_the_next():
    recomputation = Recomputation()
    with pytest.raises(ZeroDivisionError):
        recomputation.request(lambda: 1 / 0)
    runs = []
    recomputation.request(lambda: runs.append("ran"))
    assert runs == ["ran"]


def test_a_follow_up_is_skipped_once_superseded():
    queued = []
    recomputation = Recomputation(run_later=queued.append)
    phases = []
    recomputation.request(lambda: recomputation.follow_up(phases.append))
    recomputation.request(lambda: recomputation.follow_up(phases.append))
    for run in queued:
        run()
    assert phases == [2]  # the first change's follow-up found a newer one and did nothing
    assert recomputation.is_current(2)
    assert not recomputation.is_current(1)


def test_deadline():
    assert not Deadline(60.0).expired()
    assert Deadline(-1.0).expired()


def test_each_computation_asked_for_during_a_run_runs_once_after_it():
    recomputation = Recomputation()
    runs = []

    def full():
        runs.append("full")
        if len(runs) == 1:  # while the first full update runs, three changes arrive
            for compute in (time_only, full, time_only):
                recomputation.request(compute)

    def time_only():
        runs.append("time")

    recomputation.request(full)
    assert runs == ["full", "full", "time"]  # in the order each was last asked for


def test_a_computation_that_does_not_supersede_keeps_follow_ups_valid():
    queued = []
    recomputation = Recomputation(run_later=queued.append)
    phases = []
    recomputation.request(lambda: recomputation.follow_up(phases.append))
    recomputation.request(lambda: None, supersedes=False)  # e.g. only the time shown moved
    for run in queued:
        run()
    assert phases == [1]
