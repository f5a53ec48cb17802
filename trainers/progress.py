"""Progress bars for every step that takes more than a few seconds (training, fitting a detector,
evaluating): tqdm, which also writes to a log file or a pipe, where a live terminal display
would print nothing until the end."""

from __future__ import annotations

from typing import Any

from intentkit.errors import MissingDependencyError

__all__ = ["progress_bar"]


def progress_bar(total: int | None, description: str, unit: str = "it", *, initial: int = 0) -> Any:
    """A tqdm bar on stderr."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise MissingDependencyError("tqdm") from None
    return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True, mininterval=1.0)
