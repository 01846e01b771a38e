"""Progress bars for long work: tqdm on a terminal, silent otherwise.

``progress(iterable, desc=...)`` shows a bar on stderr only when stderr is a terminal, only once the work has
run for ``delay`` seconds (so quick calls never flash a bar), and never when ``quiet=True`` or the environment
sets ``WORKBENCH_PROGRESS=0``. Used by ``make-tiny`` (bytes written), ``workbench info --scan`` (blocks
scanned), ``load_model`` and long forward passes (blocks run).
"""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "enabled"]

T = TypeVar("T")


def enabled(quiet: bool | None = None) -> bool | None:
    """tqdm's ``disable`` argument for the policy above (None = decide by whether stderr is a terminal)."""
    if quiet or os.environ.get("WORKBENCH_PROGRESS", "1") == "0":
        return True
    return None


def progress(iterable: Iterable[T] | None = None, *, desc: str, total: float | None = None, unit: str = "it",
             quiet: bool | None = None, delay: float = 1.0, **kw) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``) following the workbench's policy."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=enabled(quiet), delay=delay, leave=False,
                dynamic_ncols=True, **kw)
