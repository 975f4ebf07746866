"""Ctrl-C and SIGTERM stop a running sweep cleanly, and the line it prints resumes it.

The signal is sent once a given number of result files exist (the sweep is
far from done then: 96 files to write, one at a time on one CPU), never after
a delay.  Ctrl-C is the terminal's: SIGINT to the driver's whole process group.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import descendants
from test_resume import ARGS as SLOW_ARGS

from sweep.dataset import open_dataset
from sweep.report import cli as report_cli

ZAPSWEEP = str(Path(sys.executable).with_name("zapsweep"))
ARGS = [*SLOW_ARGS, "grid.seed=[0,1,2]"]  # 192 cells, two a task, one task at a time
ENV = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}
LINE = re.compile(
    r"interrupted \((?P<sig>SIG\w+)\): (?P<saved>\d+) cells saved in (?P<dir>\S+), "
    r"(?P<mine>\d+) of them by this run; resume with: (?P<command>.+)$"
)


def _files(run_dir: Path) -> int:
    return len(list((run_dir / "results").rglob("*.parquet")))


def _alive(procs: dict[int, str]) -> list[int]:
    left = []
    for pid, start in procs.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and fields[19] == start:
            left.append(pid)
    return left


def _start(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [ZAPSWEEP, *ARGS, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        start_new_session=True,  # its own process group, as a shell gives a job
    )


def _interrupt(run_dir: Path, signum: int, group: bool, at_files: int = 6):
    driver = _start(run_dir)
    deadline = time.monotonic() + 180
    while _files(run_dir) < at_files and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert driver.poll() is None, "the sweep ended before the signal:\n" + driver.stdout.read()
    ray_processes = descendants(driver.pid)  # its local Ray, among others
    sent = time.monotonic()
    if group:
        os.killpg(driver.pid, signum)
    else:
        driver.send_signal(signum)
    out, _ = driver.communicate(timeout=60)
    stopped_in = time.monotonic() - sent
    deadline = time.monotonic() + 30
    while _alive(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return driver.returncode, out, stopped_in, _alive(ray_processes)


def _rows(run_dir: Path):
    return open_dataset(run_dir / "results").to_table(columns=["cell_id", "status"])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ctrl_c_stops_with_one_line_and_its_command_resumes_to_every_cell_once(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, stopped_in, left = _interrupt(run_dir, signal.SIGINT, group=True)

    assert code == 130, out
    assert "Traceback" not in out, out
    assert stopped_in < 20, stopped_in  # Ray's own shutdown included; the loop stops in 0.5 s
    assert not left, f"processes of the driver's Ray still alive: {left}"
    warnings = [x for x in out.splitlines() if "][WARNING]" in x or "][ERROR]" in x]
    assert len(warnings) == 1, out
    m = LINE.search(warnings[0])
    assert m, warnings[0]
    saved = int(m["saved"])
    rows = _rows(run_dir)
    assert saved == rows.num_rows == int(m["mine"]) > 0
    assert Path(m["dir"]) == run_dir
    assert set(rows["status"].to_pylist()) == {"ok"}  # workers hit by Ctrl-C left no error row

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["stopped_by"] == "SIGINT"
    assert manifest["counts"]["rows_in_dataset"] == saved
    assert manifest["command"] == m["command"]
    assert not (run_dir / ".staging").exists() or not any((run_dir / ".staging").iterdir())

    # A report on the partial run says so first, with the counts.
    assert report_cli.main([str(run_dir)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(
        f"Incomplete run (status interrupted, stopped by SIGINT): {saved} cells"
    )
    assert "of the grid's 240 combinations covered" in first and m["command"] in first
    assert (run_dir / "report.md").read_text().split("\n\n")[1].startswith("> **Incomplete run**")

    # The command it printed resumes it: every cell once.
    argv = shlex.split(m["command"])
    assert argv[0] == "zapsweep" and argv[-1] == f"hydra.run.dir={run_dir}"
    resumed = subprocess.run(
        [ZAPSWEEP, *argv[1:]], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = _rows(run_dir)
    ids = rows["cell_id"].to_pylist()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert len(ids) == len(set(ids)) == manifest["counts"]["valid"] == 192
    assert manifest["counts"]["resumed"] == saved
    assert set(rows["status"].to_pylist()) == {"ok"}
    assert f"already there: {saved} of {saved} met" in resumed.stdout  # labelled counts


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_stops_with_one_line_and_the_manifest_says_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    code, out, stopped_in, left = _interrupt(run_dir, signal.SIGTERM, group=False)
    assert code == 143, out
    assert "Traceback" not in out and stopped_in < 20 and not left, out
    (line,) = [x for x in out.splitlines() if "][WARNING]" in x or "][ERROR]" in x]
    m = LINE.search(line)
    assert m and m["sig"] == "SIGTERM", line
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["stopped_by"] == "SIGTERM"
    assert manifest["counts"]["rows_in_dataset"] == _rows(run_dir).num_rows == int(m["saved"])


def _interrupt_at(run_dir: Path, marker: str, signum: int) -> tuple[int, str, list[int]]:
    """Start a sweep and send ``signum`` to its process group as soon as it logs
    ``marker``: "grid:" (Ray starts next), "Ray:" (Ray is up, the workers warm up)."""
    driver = _start(run_dir)
    seen = []
    for line in driver.stdout:
        seen.append(line)
        if marker in line:
            break
    ray_processes = descendants(driver.pid)
    os.killpg(driver.pid, signum)
    out, _ = driver.communicate(timeout=120)
    deadline = time.monotonic() + 30
    while _alive(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return driver.returncode, "".join(seen) + out, _alive(ray_processes)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("marker", ["grid:", "Ray:"])
def test_ctrl_c_while_ray_starts_is_one_line_and_leaves_nothing(tmp_path, marker):
    """Ray's start and the workers' warm-up are not cut by the signal (an exception
    raised inside Ray's core can break it: a SystemError, a crash at exit): the
    sweep stops once Ray's calls return, with the one line, and removes the run
    directory it made if no cell was saved."""
    run_dir = tmp_path / "new" / "run"
    code, out, left = _interrupt_at(run_dir, marker, signal.SIGINT)
    assert code == 130, out
    assert "Traceback" not in out and "SystemError" not in out, out
    assert "Error executing job" not in out, out  # Hydra's words for an exception
    assert not left, f"processes of the driver's Ray still alive: {left}"
    (line,) = [x for x in out.splitlines() if "][WARNING]" in x or "][ERROR]" in x]
    m = LINE.search(line)
    if m is None:  # no cell saved (the usual case): nothing is left to resume
        assert "interrupted (SIGINT) before any cell was saved; nothing left behind" in line, line
        assert not (tmp_path / "new").exists()
    else:  # a range finished during the warm-up's last moments: a run to resume
        assert int(m["saved"]) == _rows(run_dir).num_rows > 0
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
