"""How a signal becomes a stop: at once in Python code, held while in Ray's core
(``deferred``), and one line at the console scripts' entry while they import."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from sweep import console
from sweep.run.stop import Stopped, StopSignals


def test_a_signal_raises_at_once_outside_a_deferred_block():
    with StopSignals() as stop, pytest.raises(Stopped) as err:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as os.kill returns
    assert err.value.signum == signal.SIGTERM and stop.requested()


def test_a_deferred_signal_waits_for_check():
    with StopSignals() as stop:
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested()  # nothing raised inside the block
        with pytest.raises(Stopped):
            stop.check()


def test_an_error_after_a_deferred_signal_is_the_stop():
    """The terminal's Ctrl-C reaches Ray's processes too: what fails after it is its doing."""
    with StopSignals() as stop, pytest.raises(Stopped):
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            raise RuntimeError("Failed to start GCS")


def test_an_error_without_a_signal_stays_what_it_is():
    with StopSignals() as stop, pytest.raises(RuntimeError), stop.deferred():
        raise RuntimeError("boom")


def test_leaving_a_deferred_block_puts_the_handlers_back():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        ours = signal.getsignal(signal.SIGTERM)
        with stop.deferred():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as ray.init does with its own
        assert signal.getsignal(signal.SIGTERM) == ours != before
    assert signal.getsignal(signal.SIGTERM) == before


def test_ctrl_c_while_a_console_script_imports_is_one_line(monkeypatch, capsys):
    def interrupted(_name):
        raise KeyboardInterrupt

    monkeypatch.setattr(console.importlib, "import_module", interrupted)
    with pytest.raises(SystemExit) as end:
        console.zapsweep_report()
    assert end.value.code == 130
    assert capsys.readouterr().err == "zapsweep-report: interrupted\n"


def test_a_console_script_exits_with_what_main_returns(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["zapsweep-report", "--budget-ms", "-1", "x"])
    with pytest.raises(SystemExit) as end:
        console.zapsweep_report()
    assert end.value.code == 2
