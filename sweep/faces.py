"""Package faces that import a module only when one of its names is first used.

A Ray worker imports the package of the function it runs; a face that imported
all of its package (Hydra, tqdm, pyarrow's datasets) would add most of a
second to every worker's start.  ``lazy_face`` lets a face name what it
offers, and import it on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_face(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps each
    public name to the module (relative to the package) that defines it."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
