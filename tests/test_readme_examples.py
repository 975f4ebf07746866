"""Every command of README.md's shell blocks runs here, as a user would type it,
rewritten only where it must be: sweeps on the smoke grid (the kernels grid on
the smoke grid's guest sizes and pages; the fleet grid, the inventory's VMs, as
it is) and in a temporary run directory, ``ray.address=auto`` onto a real Ray
cluster this test starts on loopback, placeholders (``RUN``, ``RUN_A``,
``outputs/<date>/<time>``) onto the runs made by the examples before them
(``RUN_B``: the first run with kernel presets).  The first sweep starts its
own local Ray, as the README's first command does; the sweeps after it join
the test's cluster (started meanwhile), which takes half the time of starting
a Ray (about 6 s and 14 s for the smoke grid on 2 busy cores), and those that
stand on their own (they name no run and no model another example writes) run
three at a time (this is the suite's longest test).  The install steps and
``pytest`` are what ``.ci/run`` runs.  A command this file does not know fails the test,
naming it: an example added to the README is run, or the test says why not.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPTS = ("zapsweep", "zapsweep-report", "zapsweep-calibrate", "zapsweep-trace")
# A grid an example names runs as the smoke grid, but for these: the grid with
# the smoke grid's guest sizes and page sizes (the fleet grid's come from its
# inventory of six VMs).
SMOKE_SIZED = {
    "kernels": ["grid.guest_memory=[16MiB,64MiB]", "grid.page_size=[4K,2M]"],
    "fleet": [],
}
# The install steps of the README's first two commands; .ci/run runs them.
INSTALL = (
    ["python3.11", "-m", "venv", ".venv"],
    [".", ".venv/bin/activate"],
    ["pip", "install", "-e", "."],
    ["pip", "install", "-e", ".[test]"],
)
RUN_PLACEHOLDER = re.compile(r"^(outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d|RUN_A|RUN_B|RUN)(?=/|$)")


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```(?:sh|bash|console|shell)\n(.*?)^```", text, re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """Each line's commands (``a && b`` is two), comments dropped; a line ending
    in a backslash goes on on the next."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1 :]
    return out


def readme_commands() -> list[list[str]]:
    return [c for b in shell_blocks((ROOT / "README.md").read_text()) for c in commands(b)]


def test_the_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    blocks = shell_blocks((ROOT / "README.md").read_text())
    first, second = commands(blocks[0]), commands(blocks[1])
    assert first == [list(INSTALL[i]) for i in (0, 1, 2)] + [["zapsweep"]]
    assert second == [list(INSTALL[i]) for i in (0, 1, 3)] + [["pytest"]]
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci  # the README's test command, as it is


class Cluster:
    """``ray start --head`` on loopback with its own temp dir and token, stopped by pid.

    Its raylet keeps up to six idle workers (two per sweep, three sweeps at a
    time) instead of two: a sweep's workers are its own, and with two kept
    the sweeps side by side kill and start each other's workers all along
    (six smoke sweeps, three at a time: 23 s, against 47 s with two kept and
    32 s with a local Ray each)."""

    def __init__(self, tmp: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.temp_dir = tempfile.mkdtemp(prefix="zr", dir="/tmp")  # socket paths are short
        self.proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", f"--port={self.port}", "--num-cpus=2",
             "--node-ip-address=127.0.0.1", "--include-dashboard=false",
             '--system-config={"num_workers_soft_limit": 6}',
             f"--temp-dir={self.temp_dir}", "--block"],
            stdout=(tmp / "head.log").open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )  # fmt: skip
        from sweep.run.cluster import wait_for_cluster

        reason = wait_for_cluster("127.0.0.1", self.port, time.monotonic() + 120)
        assert reason is None, f"the test cluster did not come up: {reason}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Examples:
    """Runs the README's commands in order, keeping the runs they make."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.runs: dict[str, Path] = {}  # placeholder -> run directory
        self.cluster: Cluster | None = None
        self.n = 0
        self.searchpath = tmp / "models"  # not conf/: a worker imports its cwd first
        self.lock = threading.Lock()

    def place(self, word: str) -> str:
        m = RUN_PLACEHOLDER.match(word)
        if not m:
            return word
        key = "RUN_B" if m[1] == "RUN_B" else "RUN"
        if key not in self.runs:
            pytest.fail(f"README example names {m[1]} before any example made that run")
        return str(self.runs[key]) + word[m.end() :]

    def zapsweep(self, args: list[str]) -> tuple[list[str], dict, Path | None]:
        if "--help" in args:
            return args, {}, None
        with self.lock:  # examples are prepared side by side
            return self.sweep_argv(args)

    def sweep_argv(self, args: list[str]) -> tuple[list[str], dict, Path | None]:
        env: dict[str, str] = {}
        out = []
        run_dir = None
        grid = ["grid=smoke"]
        for a in args:
            key, _, value = a.partition("=")
            if key == "grid":
                if value in SMOKE_SIZED:
                    grid = [a, *SMOKE_SIZED[value]]
                continue  # onto the smoke grid, but for SMOKE_SIZED
            if key == "hydra.run.dir":
                run_dir = Path(self.place(value))
                continue
            if key == "ray.address" and value == "auto":
                a = self.join(env)
            if key.startswith("cost_model") and value != "seed-2022":
                out.append(f"hydra.searchpath=[file://{self.searchpath}]")
            out.append(a)
        self.n += 1
        first = "RUN" not in self.runs
        if not first and not any(a.startswith("ray.address=") for a in out):
            out.append(self.join(env))  # onto the test's cluster
        run_dir = run_dir or self.tmp / "runs" / str(self.n)
        if first:
            self.runs["RUN"] = run_dir
        kernels = any(a == "grid=kernels" or a.startswith("grid.kernel=") for a in args)
        if kernels and "RUN_B" not in self.runs:
            self.runs["RUN_B"] = run_dir
        argv = [*grid, *out, "progress.bar=false", f"hydra.run.dir={run_dir}"]
        if not first:
            argv.append("report=false")  # the first example's report is the one looked at
        return argv, env, run_dir

    def join(self, env: dict[str, str]) -> str:
        """The test's cluster, as a ``ray.address`` setting."""
        assert self.cluster is not None, "the first example starts its own Ray"
        env.update(self.cluster.env)
        return f"ray.address=127.0.0.1:{self.cluster.port}"

    def calibrate(self, args: list[str]) -> list[str]:
        from test_calibrate import TRUTH, measured, measurement_design

        out = []
        for a in args:
            if a.endswith((".csv", ".parquet")) and not Path(a).is_absolute():
                path = self.tmp / a
                if not path.exists():
                    measured(measurement_design()[::3], TRUTH, noise=0.0).write_csv(path)
                a = str(path)
            out.append(a)
        if "--out" not in out:
            out += ["--out", str(self.searchpath / "cost_model")]
        return out

    def prepare(self, command: list[str]) -> tuple[list[str], list[str], dict, Path | None]:
        """The command as it runs here: (command, argv, environment, run directory)."""
        name, args = command[0], command[1:]
        env: dict[str, str] = {}
        run_dir = None
        if name == "zapsweep":
            args, env, run_dir = self.zapsweep(args)
        elif name == "zapsweep-report":
            args = [self.place(a) for a in args]
        elif name == "zapsweep-calibrate":
            args = self.calibrate(args)
        unknown = [a for a in args if re.fullmatch(r"[A-Z][A-Z_]+", a)]
        assert not unknown, f"README example {shlex.join(command)}: unknown placeholder {unknown}"
        return command, [str(BIN / name), *args], env, run_dir

    def execute(self, prepared: tuple[list[str], list[str], dict, Path | None]) -> dict | None:
        """Run it; the manifest of the run it made or resumed, as it left it."""
        command, argv, env, run_dir = prepared
        base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**base, **env},
            cwd=self.tmp,
            timeout=300,
        )
        said = f"README example `{shlex.join(command)}` ran as {argv[1:]}:\n"
        assert proc.returncode == 0, said + proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stdout + proc.stderr, said + proc.stderr[-3000:]
        if run_dir is None:
            return None
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "complete", said + str(manifest)
        return manifest

    def run(self, command: list[str]) -> dict | None:
        return self.execute(self.prepare(command))


def on_its_own(command: list[str]) -> bool:
    """Does this example neither read a run another example makes (a placeholder,
    a run directory) nor a cost model one writes?  Then it may run beside others."""
    name, args = command[0], command[1:]
    if name in ("zapsweep-calibrate", "zapsweep-trace"):
        return True
    if name != "zapsweep":
        return False
    return not any(
        a.startswith("hydra.run.dir=")
        or (a.startswith("cost_model=") and a != "cost_model=seed-2022")
        for a in args
    )


def makes_run_b(command: list[str]) -> bool:
    return command[0] == "zapsweep" and any(
        a == "grid=kernels" or a.startswith("grid.kernel=") for a in command[1:]
    )


def chains(todo: list[list[str]]) -> list[list[list[str]]]:
    """The examples after the first, in chains that may run side by side, each in
    the README's order: the examples on the first example's run; each example on
    its own, followed by those that need what it makes (the cost model
    zapsweep-calibrate writes, RUN_B)."""
    alone = [c for c in todo if on_its_own(c)]
    out = [[c for c in todo if not on_its_own(c) and needs(c) is None]]
    out += [[c] for c in alone]
    makes_b = next(chain for chain in out[1:] if makes_run_b(chain[0]))
    calibrates = next(chain for chain in out[1:] if chain[0][0] == "zapsweep-calibrate")
    for c in todo:
        if not on_its_own(c) and needs(c) is not None:
            (makes_b if needs(c) == "RUN_B" else calibrates).append(c)
    return out


def needs(command: list[str]) -> str | None:
    """What this example needs beside the first example's run: RUN_B, a cost model."""
    if any("RUN_B" in a for a in command[1:]):
        return "RUN_B"
    if any(a.startswith("cost_model=") and a != "cost_model=seed-2022" for a in command[1:]):
        return "cost model"
    return None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_readme_shell_example_runs(tmp_path):
    """The first example makes the run the others name; then the other examples,
    in chains (``chains``) three at a time on the test's cluster, started while
    the first example runs: two run on the machine's two cores, and a sweep's
    start (its driver, its job's workers) partly waits."""
    examples = Examples(tmp_path)
    todo = []
    for command in readme_commands():
        if command in [list(c) for c in INSTALL] or command == ["pytest"]:
            continue  # .ci/run runs these (the test above)
        if command[0] not in SCRIPTS:
            pytest.fail(
                f"README example {shlex.join(command)!r}: tests/test_readme_examples.py "
                "does not know how to run it; teach it, or keep it out of shell blocks"
            )
        todo.append(command)
    starting = ThreadPoolExecutor(max_workers=1)
    cluster = starting.submit(Cluster, tmp_path)
    try:
        examples.run(todo[0])
        examples.cluster = cluster.result()

        def run_chain(chain: list[list[str]]) -> dict:
            return {shlex.join(c): examples.run(c) for c in chain}

        manifests = {}
        with ThreadPoolExecutor(max_workers=3) as pool:
            for done in pool.map(run_chain, chains(todo[1:])):
                manifests.update(done)
    finally:
        starting.shutdown()
        if cluster.exception() is None:
            cluster.result().stop()
    assert {c[0] for c in todo} == set(SCRIPTS), todo  # every console script has an example
    # The resume example resumed the first example's run: nothing new to run;
    # the retry found no failed cell there: nothing to run again.
    resumed = manifests["zapsweep hydra.run.dir=outputs/2026-11-25/12-00-00"]
    assert resumed["counts"]["resumed"] == resumed["counts"]["valid"] > 0
    assert resumed["counts"]["ok"] == 0
    retried = manifests["zapsweep retry=errors hydra.run.dir=outputs/2026-12-01/12-00-00"]
    assert retried["retry"]["cells"] == 0 and retried["counts"]["ok"] == 0
    # The kernels example ran every preset on both triggers.
    kernels = json.loads((examples.runs["RUN_B"] / "manifest.json").read_text())
    assert len(kernels["kernels"]) == 7 and kernels["counts"]["ok"] > 100
