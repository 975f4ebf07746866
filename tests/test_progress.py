"""Progress while a sweep runs: lines while nothing completes, labelled resume
counts, a smoothed ETA; the driver's loop polls and stops when asked.

``Progress`` runs on a fake clock; the loop runs on the session's local Ray
with ``ray.wait`` made to report "nothing yet" a given number of times.
"""

from __future__ import annotations

import logging

import pytest
import yaml

from engine import load_cost_model
from sweep.dataset import ResultWriter, RunDir, check_dataset
from sweep.run import progress as progress_module
from sweep.run import runner
from sweep.run.cells import RunSettings
from sweep.run.grid import Grid
from sweep.run.progress import Progress, fmt_duration
from sweep.run.ranges import FIRST
from sweep.run.runner import RunPlan


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", c)
    return c


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == progress_module.log.name]


def test_a_line_every_interval_while_nothing_completes(clock, caplog):
    caplog.set_level(logging.INFO)
    p = Progress(100, bar=False, log_interval_s=10)
    for t in (4, 9.9):
        clock.now += t - (clock.now - 1000)
        p.idle(3)
    assert _lines(caplog) == []
    clock.now = 1010
    p.idle(3)
    clock.now = 1015
    p.idle(3)
    clock.now = 1020.5
    p.idle(2)
    lines = _lines(caplog)
    assert len(lines) == 2
    assert "0/100 combinations (0%); this run: 0 cells (0 failed); 3 ranges in flight" in lines[0]
    assert "elapsed 10s" in lines[0] and lines[0].endswith("ETA ?")
    assert "2 ranges in flight; elapsed 20s" in lines[1]


def test_resume_counts_are_labelled_and_the_eta_leaves_out_cells_already_there(clock, caplog):
    caplog.set_level(logging.INFO)
    p = Progress(100, bar=False, log_interval_s=10, already_done=40)
    clock.now = 1010
    p.advance(50, ok=10, resumed=40, in_flight=1)  # 40 of the 50 were there already
    line = _lines(caplog)[-1]
    assert "50/100 combinations (50%); this run: 10 cells (0 failed)" in line
    assert "already there: 40 of 40 met" in line
    assert "; 1 range in flight;" in line
    assert p.remaining() == 50 and p.rate == pytest.approx(1.0)
    assert p.eta_s() == pytest.approx(50)
    p2 = Progress(100, bar=False, log_interval_s=10, already_done=40)
    clock.now = 1020
    p2.advance(10, ok=10)  # none met yet: 40 of the remaining 90 will be skipped
    assert p2.remaining() == 50


def test_the_eta_is_smoothed(clock):
    p = Progress(10_000, bar=False, log_interval_s=10)
    for _ in range(120):  # 10 combinations a second for two minutes
        clock.now += 1
        p.advance(10)
    steady = p.eta_s()
    assert steady == pytest.approx((10_000 - 1200) / 10, rel=0.01)
    clock.now += 0.01
    p.advance(200)  # one fast range: 20,000 combinations a second, for an instant
    assert 0.7 * steady < p.eta_s() < steady
    for _ in range(30):  # then half a minute without a result
        clock.now += 1
        p.idle(4)
    assert p.eta_s() > 1.2 * steady  # waiting raises it, gradually
    assert p.eta_s() < 3 * steady


def test_durations():
    assert [fmt_duration(s) for s in (0, 45, 125, 3725)] == ["0s", "45s", "2m05s", "1h02m"]


# The loop ------------------------------------------------------------------------------


class Recorder(Progress):
    def __init__(self, total: int, **kw):
        super().__init__(total, bar=False, log_interval_s=0.2, **kw)
        self.idles = 0

    def idle(self, in_flight: int) -> None:
        self.idles += 1
        super().idle(in_flight)


def _plan(**kw):
    grid = Grid.of(yaml.safe_load(open("conf/grid/smoke.yaml")))
    settings = RunSettings(engine="fast", cost_model=load_cost_model("seed-2022"))
    return RunPlan(grid, settings, batch_size=8, max_in_flight=2, **kw)


@pytest.fixture
def slow_waits(monkeypatch):
    """``ray.wait`` answers "nothing yet" to its first calls, as with a long range."""
    real = runner.ray.wait
    state = {"calls": 0, "empty": 5}

    def wait(refs, num_returns=1, timeout=None):
        state["calls"] += 1
        if state["calls"] <= state["empty"]:
            return [], list(refs)
        return real(refs, num_returns=num_returns, timeout=timeout)

    monkeypatch.setattr(runner.ray, "wait", wait)
    return state


def test_the_loop_reports_while_a_range_runs(ray_local, tmp_path, slow_waits):
    plan = _plan()
    run = RunDir.at(tmp_path / "run")
    progress = Recorder(plan.grid.size)
    stats = runner.run(plan, ResultWriter(run, {}), progress)
    assert progress.idles >= slow_waits["empty"]
    assert stats.ok == 64 and stats.abandoned_batches == 0


def test_the_loop_stops_when_asked_and_leaves_no_error_rows(ray_local, tmp_path, slow_waits):
    plan = _plan()
    run = RunDir.at(tmp_path / "run")
    writer = ResultWriter(run, {})
    stats = runner.run(plan, writer, Recorder(plan.grid.size), stop=lambda: writer.files >= 2)
    writer.close()
    assert stats.lost_batches == 0 and stats.failed == 0
    assert 0 < stats.ok < 64
    assert stats.batches < -(-plan.grid.size // 8)  # not every range went out
    assert len(check_dataset(run).cell_ids) == stats.ok  # what it counts is what is there


def test_one_probe_range_per_cpu_until_one_comes_back(ray_local, tmp_path, monkeypatch):
    """Before any range has completed, one (small) range per CPU is out; then
    up to ``max_in_flight``, sized by the time the probes took."""
    grid = Grid.of(yaml.safe_load(open("conf/grid/bench.yaml")))
    settings = RunSettings(engine="fast", cost_model=load_cost_model("seed-2022"))
    plan = RunPlan(grid, settings)
    seen: list[tuple[bool, int, int]] = []  # (a result came back, ranges out, size)
    real = runner.RangeLoop.submit

    def submit(loop):
        real(loop)
        sizes = [hi - lo for lo, hi in loop.pending.values()]
        seen.append((loop.stats.first_result_s is not None, len(sizes), max(sizes, default=0)))

    monkeypatch.setattr(runner.RangeLoop, "submit", submit)
    stats = runner.run(plan, ResultWriter(RunDir.at(tmp_path / "run"), {}))
    cpus = int(ray_local.cluster_resources()["CPU"])
    before = [s for s in seen if not s[0]]
    after = [s for s in seen if s[0]]
    assert before and all(out <= cpus and size == FIRST for _, out, size in before)
    assert max(out for _, out, _ in after) == 2 * cpus
    assert max(size for _, _, size in after) > FIRST
    assert stats.ok == 10_000 and stats.batches < 40
