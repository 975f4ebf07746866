"""Reliability: bad results files, two sweeps in one directory, an unwritable or
full disk, determinism, and Ray's safe defaults.

These run in-process on the session's local Ray (``ray_local``) where they can;
the command-line cases run ``zapsweep`` as a subprocess that fails before Ray.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_module
from processes import descendants

from sweep.dataset import ResultWriter, RunDir, check_dataset, open_dataset
from sweep.dataset.layout import LOCK_FILE, QUARANTINE
from sweep.run.cli import sweep
from sweep.run.lock import LockHolder, RunDirLocked, run_dir_lock
from sweep.run.validate import OutputError

ROOT = Path(__file__).resolve().parents[1]
ZAPSWEEP = str(Path(sys.executable).with_name("zapsweep"))
SMALL = [
    "grid=smoke",
    "engine=reference",
    "report=false",
    "progress.bar=false",
    "grid.page_size=[2M]",
    "grid.dirty_ratio=[0.5]",
]


def _cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*SMALL, *overrides])


def _ids(run_dir: Path) -> list[str]:
    return open_dataset(run_dir / "results").to_table(columns=["cell_id"])["cell_id"].to_pylist()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}


def _cli(run_dir: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ZAPSWEEP, *SMALL, f"hydra.run.dir={run_dir}", *extra],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        **kw,
    )


# Bad files in results/ ---------------------------------------------------------------


def _damage(files: list[Path]) -> dict[Path, list[str]]:
    """Truncate one file, scribble over another's footer; return their cell ids."""
    held = {p: pq.read_table(p, columns=["cell_id"])["cell_id"].to_pylist() for p in files}
    truncated, scribbled = files
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    data = bytearray(scribbled.read_bytes())
    data[-40:-8] = b"\xff" * 32  # the footer's metadata, before its length and magic
    scribbled.write_bytes(bytes(data))
    return held


def _flip_last_page_byte(path: Path, column: str) -> None:
    meta = pq.ParquetFile(path).metadata.row_group(0)
    names = [meta.column(i).path_in_schema for i in range(meta.num_columns)]
    chunk = meta.column(names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    end = start + chunk.total_compressed_size  # the chunk's last page's last byte
    data = bytearray(path.read_bytes())
    data[end - 1] ^= 0x01
    path.write_bytes(bytes(data))


def test_bad_files_are_quarantined_named_and_their_cells_rerun(ray_local, tmp_path, caplog):
    run_dir = tmp_path / "run"
    first = sweep(_cfg(), run_dir)
    valid = first["counts"]["valid"]
    files = sorted((run_dir / "results").rglob("*.parquet"))
    assert len(files) >= 4
    held = _damage(files[:2])
    flipped = files[2]  # one bit of page data: only the page checksum can tell
    held[flipped] = pq.read_table(flipped, columns=["cell_id"])["cell_id"].to_pylist()
    _flip_last_page_byte(flipped, "status")
    stray = run_dir / "results" / "paging_levels=4" / "strategy=root" / "part-empty.parquet"
    stray.write_bytes(b"")  # a zero-byte file, as a crash of another writer leaves
    alien = run_dir / "results" / "paging_levels=4" / "strategy=root" / "part-alien.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), alien)  # whole, but not a results file

    caplog.set_level("WARNING")
    again = sweep(_cfg(), run_dir)

    lost = sum(len(v) for v in held.values())
    assert again["counts"]["submitted"] == lost and again["counts"]["resumed"] == valid - lost
    ids = _ids(run_dir)
    assert len(ids) == len(set(ids)) == valid
    quarantined = {Path(q["path"]).name for q in again["quarantined"]}
    assert quarantined == {p.name for p in [*held, stray, alien]}
    for path in [*held, stray, alien]:
        assert not path.exists()
        moved = run_dir / QUARANTINE / path.relative_to(run_dir / "results")
        assert moved.exists() and moved.with_name(moved.name + ".why").read_text().strip()
        assert str(path) in caplog.text  # the warning names the file
    assert again["status"] == "complete"
    assert check_dataset(RunDir.at(run_dir)).bad == []


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_report_leaves_a_corrupt_dataset_unchanged_and_the_next_sweep_quarantines(
    ray_local, tmp_path, capsys
):
    from sweep.report import cli as report_cli

    run_dir = tmp_path / "run"
    first = sweep(_cfg(), run_dir)
    files = sorted((run_dir / "results").rglob("*.parquet"))
    held = _damage(files[:2])
    flipped = files[2]  # one bit of page data: only the page checksum can tell
    held[flipped] = pq.read_table(flipped, columns=["cell_id"])["cell_id"].to_pylist()
    _flip_last_page_byte(flipped, "status")
    before = _snapshot(run_dir / "results")

    assert report_cli.main([str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert _snapshot(run_dir / "results") == before  # byte for byte, nothing moved
    assert not (run_dir / QUARANTINE).exists()
    for path in held:
        assert f"skipped bad results file {path} (" in err  # named, with the reason
    md = (run_dir / "report.md").read_text()
    assert f"## Skipped files ({len(held)})" in md
    for path in held:
        assert str(path) in md
    rows = first["counts"]["valid"] - sum(len(v) for v in held.values())
    assert f": {rows} cells (" in md  # the report counts only what it could read

    again = sweep(_cfg(), run_dir)  # the next sweep moves them aside and reruns their cells
    assert {Path(q["path"]) for q in again["quarantined"]} == set(held)
    assert again["counts"]["submitted"] == sum(len(v) for v in held.values())
    for path in held:
        assert (
            not path.exists()
            and (run_dir / QUARANTINE / path.relative_to(run_dir / "results")).exists()
        )
    ids = _ids(run_dir)
    assert len(ids) == len(set(ids)) == first["counts"]["valid"]


# One sweep per directory ----------------------------------------------------------------


def test_second_sweep_into_a_busy_directory_refuses_and_the_first_is_unharmed(
    ray_local, tmp_path, monkeypatch
):
    """The first sweep is held at its first write of results (it holds the
    directory then, whatever the machine's speed) while a second one tries."""
    run_dir = tmp_path / "run"
    cells = ["grid.paging_levels=[4]", "grid.page_size=[4K]", "grid.guest_memory=[16MiB]"]
    cells += ["grid.zap_levels=[root,two_pass]", "grid.seed=[0,1,2]"]
    cfg = _cfg(*cells, "batch.size=1", "batch.max_in_flight=1")
    writing, release = threading.Event(), threading.Event()
    place = ResultWriter.place

    def held_place(self, files):
        writing.set()
        assert release.wait(timeout=120), "the second sweep never came"
        return place(self, files)

    monkeypatch.setattr(ResultWriter, "place", held_place)
    outcome: dict = {}

    def first():
        try:
            outcome["manifest"] = sweep(cfg, run_dir)
        except BaseException as err:  # reported by the assertions below
            outcome["error"] = err

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert writing.wait(timeout=120), outcome.get("error")
        lock = run_dir / LOCK_FILE
        holder = LockHolder.parse(lock.read_text())
        assert holder is not None and holder.pid == os.getpid()
        with pytest.raises(RunDirLocked):  # in this process too (another open of the lock)
            sweep(cfg, run_dir)
        second = _cli(run_dir, *cells)
        first_still_running = thread.is_alive()
    finally:
        release.set()
        thread.join(timeout=240)

    assert first_still_running, "the first sweep ended before the second tried"
    said = second.stdout + second.stderr
    assert second.returncode == 2, said[-2000:]
    assert f"pid {os.getpid()} on {socket.gethostname()}" in said
    assert "in use by another zapsweep" in said and "Traceback" not in said
    assert "Ray:" not in said  # refused before starting Ray
    assert not (run_dir / ".hydra").exists()  # ... and before Hydra wrote its config there
    assert "error" not in outcome, outcome.get("error")
    manifest = outcome["manifest"]
    assert manifest["status"] == "complete"
    ids = _ids(run_dir)
    assert len(ids) == len(set(ids)) == manifest["counts"]["valid"] == manifest["counts"]["ok"]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    assert lock.read_text() == ""  # released: the next run may go


def test_a_live_holder_is_named_and_a_dead_ones_lock_is_taken_over(tmp_path, caplog):
    holding = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sweep.run.lock import run_dir_lock\n"
            "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holding.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked) as err:
            with run_dir_lock(tmp_path):
                pass
        assert err.value.holder.pid == holding.pid
        assert f"pid {holding.pid} on {socket.gethostname()}" in str(err.value)
    finally:
        holding.kill()  # SIGKILL: no clean-up, the lock file keeps its holder
        holding.wait()
    assert LockHolder.parse((tmp_path / LOCK_FILE).read_text()).pid == holding.pid
    caplog.set_level("WARNING")
    with run_dir_lock(tmp_path) as me:
        assert me.pid == os.getpid()
    assert f"stale lock of pid {holding.pid}" in caplog.text and "no longer running" in caplog.text


# Unwritable or full output -------------------------------------------------------------


def test_unwritable_results_dir_fails_before_ray(ray_local, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError) as err:
        sweep(_cfg(f"results_dir={blocker}/results"), tmp_path / "run")
    assert str(blocker) in str(err.value) and "nothing was run" in str(err.value)
    assert not (tmp_path / "run" / "manifest.json").exists()

    cli = _cli(tmp_path / "run2", "results_dir=/proc/zapsweep/results")
    said = cli.stdout + cli.stderr
    assert cli.returncode == 2
    assert "cannot write results under /proc/zapsweep/results" in said
    assert "Traceback" not in said and "Ray:" not in said


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.parametrize("how", ["file-size-limit", "tmpfs-full"])
def test_full_disk_is_a_clear_error_before_ray(tmp_path, how):
    run_dir = tmp_path / "mnt" / "run"
    if how == "file-size-limit":  # writes past 256 KiB fail with EFBIG, as on a full disk
        cli = _cli(run_dir, preexec_fn=_limit_file_size)
        reason = "File too large"
    else:  # a real full filesystem: a 64 KiB tmpfs in a private mount namespace
        if not _can_mount_tmpfs():
            pytest.skip("no permission to mount a tmpfs in a private mount namespace")
        (tmp_path / "mnt").mkdir()
        script = f'mount -t tmpfs -o size=64k tmpfs "$1" && shift && exec {ZAPSWEEP} "$@"'
        cli = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", str(tmp_path / "mnt"), *SMALL,
             f"hydra.run.dir={run_dir}"],
            capture_output=True, text=True, env=_env(), timeout=120,
        )  # fmt: skip
        reason = "No space left on device"
    said = cli.stdout + cli.stderr
    assert cli.returncode == 2, said[-3000:]
    assert f"cannot write results under {run_dir / 'results'}: {reason}" in said
    assert "Traceback" not in said and "Ray:" not in said


# Determinism ------------------------------------------------------------------------------

VARYING = {"sim_seconds", "worker"}


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_same_config_twice_gives_identical_rows(ray_local, tmp_path, engine):
    cfg = _cfg(f"engine={engine}", "grid.dirty_ratio=[0.0,1.0]", "batch.size=3")
    runs = []
    for name in ("a", "b"):
        sweep(cfg, tmp_path / name)
        table = open_dataset(tmp_path / name / "results").to_table()
        rows = sorted(table.drop_columns(sorted(VARYING)).to_pylist(), key=lambda r: r["cell_id"])
        runs.append(rows)
    assert len(runs[0]) > 10 and runs[0] == runs[1]
    assert {r["status"] for r in runs[0]} == {"ok"}


# Safe defaults ----------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    """``root`` and every process under it."""
    return [root, *descendants(root)]


def _listening(pids: list[int]) -> list[tuple[str, int]]:
    """(local address as /proc/net shows it, port) of the LISTEN sockets of ``pids``."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                address, port = f[1].split(":")
                out.append((address, int(port, 16)))
    return out


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_local_ray_listens_on_loopback_only_and_serves_no_dashboard(ray_local):
    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("the session runs on an external cluster")
    sockets = _listening(_descendants(os.getpid()))
    assert sockets, "found none of Ray's listening sockets"
    assert {address for address, _ in sockets} <= LOOPBACK, sockets
    assert 8265 not in {port for _, port in sockets}  # the dashboard's web UI
    node = ray_local._private.worker._global_node
    assert node._ray_params.include_dashboard is False
    assert not node.webui_url


SOURCES = [
    p
    for p in subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if p.endswith((".py", ".yaml", ".yml", ".toml", ".sh", ".md", ".cfg", ".ini", ".txt"))
]
AUTH_OFF = re.compile(r"AUTH_MODE\W{0,8}disabled", re.IGNORECASE)
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")


def test_nothing_turns_ray_token_authentication_off():
    offenders = [
        f"{path}:{n}: {line.strip()}"
        for path in SOURCES
        for n, line in enumerate((ROOT / path).read_text(errors="replace").splitlines(), 1)
        if AUTH_OFF.search(line)
    ]
    assert SOURCES and not offenders, offenders
    off = "dis" + "abled"  # spelt apart so this file does not match itself
    for line in (
        f'env["RAY_AUTH_MODE"] = "{off}"',
        f"RAY_AUTH_MODE={off} ray start --head",
        f'_system_config={{"AUTH_MODE": "{off}"}}',
        f"export RAY_AUTH_MODE='{off}'",
    ):
        assert AUTH_OFF.search(line), line  # the pattern does bite
    assert not AUTH_OFF.search("RAY_AUTH_MODE=token")


def test_no_host_address_is_hard_coded():
    offenders = [
        f"{path}:{n}: {line.strip()}"
        for path in SOURCES
        if not path.startswith("BENCHMARKS")  # measured figures, not addresses
        for n, line in enumerate((ROOT / path).read_text(errors="replace").splitlines(), 1)
        for ip in IPV4.findall(line)
        if ip != "127.0.0.1"
    ]
    assert not offenders, offenders
    ip = ".".join(["10", "0", "0", "7"])  # spelt apart so this file does not match itself
    assert IPV4.findall(f"ray.address={ip}:6379") == [ip]
    cluster = (ROOT / "conf" / "ray" / "cluster.yaml").read_text()
    assert re.search(r"^address: auto$", cluster, re.MULTILINE)


# The reaper ------------------------------------------------------------------------------

# A driver: its "Ray" is started while the reaper marks the environment, one
# process ignoring SIGTERM and orphaned at once, and under a parent that lives
# on, one that starts with another environment; a stranger starts unmarked.
REAPED = """
import subprocess, sys, time
from sweep.run.reaper import Reaper

STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(flush=True); time.sleep(300)"
)
ORPHAN = (
    "import subprocess, sys; "
    f"p = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], stdout=subprocess.PIPE, "
    "stderr=subprocess.DEVNULL); "
    "p.stdout.readline(); print(p.pid)"
)
PARENT = (
    "import subprocess, time; "
    "c = subprocess.Popen(['sleep', '300'], env={'PATH': '/usr/bin:/bin'}); "
    "print(c.pid, flush=True); time.sleep(300)"
)
reaper = Reaper()
stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
with reaper.marking():
    orphan = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True)
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
print(stranger.pid, orphan.stdout.strip(), parent.pid, parent.stdout.readline().strip())
if sys.argv[1] == "clean":
    reaper.close()
    print("closed", reaper.proc.returncode)
sys.stdout.flush()
time.sleep(300)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("how", ["sigkill", "clean"])
def test_reaper_kills_the_marked_processes_of_a_killed_driver_only(how):
    """After a SIGKILL: the orphan that ignores SIGTERM, the parent and its child
    with another environment all go; the unmarked stranger stays.  After a
    clean close the watcher has exited, so nothing can be killed."""
    driver = subprocess.Popen(
        [sys.executable, "-c", REAPED, how], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    stranger, *ray = map(int, driver.stdout.readline().split())
    if how == "clean":
        assert driver.stdout.readline().split()[0] == "closed"
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 10
    while how == "sigkill" and any(map(_running, ray)) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = {pid: _running(pid) for pid in [stranger, *ray]}
    for pid, running in alive.items():
        if running:
            os.kill(pid, signal.SIGKILL)
    assert alive == {stranger: True, **{pid: how == "clean" for pid in ray}}
