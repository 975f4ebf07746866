"""The report of a run's dataset: summary, verdicts, plots, report.md and report.html.

It only reads the dataset: a file that fails the integrity check is skipped,
named and counted, never moved.

- ``summarize``, ``verdicts``, ``kernel_verdicts``, ``price_of_safety``, ``open_results``
  (``summary``);
- ``write_report``, ``headline_table`` (``render``); ``compare`` (``compare``);
- ``main``: the ``zapsweep-report`` command (``cli``).
"""

from .cli import main
from .compare import compare
from .render import headline_table, write_report
from .summary import kernel_verdicts, open_results, price_of_safety, summarize, verdicts

__all__ = [
    "compare",
    "headline_table",
    "kernel_verdicts",
    "main",
    "open_results",
    "price_of_safety",
    "summarize",
    "verdicts",
    "write_report",
]
