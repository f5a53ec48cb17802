"""Resumable training: checkpoints, the check that a checkpoint belongs to the run resuming it,
and Ctrl-C that stops between steps.

A checkpoint (``checkpoint-last/state.pt`` in the output directory) holds the trainable weights,
the optimizer and scheduler, the torch RNG, the step, the best evaluation so far and the place in
the current epoch (the data-order RNG at the epoch's start and the batches done), so a resumed
run continues with the batches an uninterrupted one would have trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pydantic

from intentkit.errors import ConfigError

__all__ = ["CHECKPOINT_DIR", "load_checkpoint", "run_identity", "save_checkpoint", "stop_on_interrupt"]

CHECKPOINT_DIR = "checkpoint-last"


def save_checkpoint(output_dir: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> None:
    import torch

    directory = output_dir / CHECKPOINT_DIR
    directory.mkdir(exist_ok=True)
    trainable = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    partial = directory / f"state.{os.getpid()}.partial"
    torch.save(
        {
            "model": trainable,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state,
            "rng": torch.get_rng_state(),
        },
        partial,
    )
    partial.replace(directory / "state.pt")  # an interrupted save leaves the previous checkpoint whole


def load_checkpoint(output_dir: Path, model: Any, optimizer: Any, scheduler: Any, run: dict[str, Any]) -> dict[str, Any]:
    """The saved state of ``output_dir``'s checkpoint, loaded into the model, optimizer and
    scheduler, when it was written by the same run (:func:`run_identity`: data, prompt and every
    setting but the length of training); a different run's checkpoint is an error, not a silent mix."""
    import torch

    path = output_dir / CHECKPOINT_DIR / "state.pt"
    if not path.exists():
        return {"step": 0, "tokens": 0, "history": []}
    saved = torch.load(path, weights_only=False)
    written_by = saved["state"].get("run")
    if written_by is not None and written_by != run:
        before, now = {**written_by["config"], **written_by["data"]}, {**run["config"], **run["data"]}
        changed = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key))
        raise ConfigError(
            f"{path} was written by a different training run (changed: {', '.join(changed)}); "
            f"train into a new output directory, or delete {path.parent} to start over"
        )
    model.load_state_dict(saved["model"], strict=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    return dict(saved["state"])


# Settings a resumed run may change: how long it trains, how often it evaluates and saves.
_RESUMABLE_CHANGES = frozenset({"epochs", "patience", "eval_every", "save_every", "threads"})


def run_identity(config: pydantic.BaseModel, examples: Sequence[Any], dev: Sequence[Any]) -> dict[str, Any]:
    """What a checkpoint must share with the run resuming it: the settings (but the length of
    training) and digests of the encoded training and dev examples (the data and the prompt)."""
    digests = {}
    for name, encoded in (("training examples", examples), ("dev examples", dev)):
        digest = hashlib.sha256()
        for e in encoded:
            digest.update(repr((e.input_ids, e.answer_start)).encode())
        digests[name] = digest.hexdigest()[:16]
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in _RESUMABLE_CHANGES}
    return {"config": settings, "data": digests}


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[Callable[[], bool]]:
    """While training: the first Ctrl-C asks the loop to stop after the current step (which then
    saves a checkpoint and raises KeyboardInterrupt); a second one interrupts at once. Stopping
    between steps keeps the weights and the optimizer consistent. Outside the main thread
    signals cannot be caught, and Ctrl-C keeps its usual meaning."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    asked: list[bool] = []

    def handler(signum: int, frame: Any) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(True)
        print("\nstopping after this step to save a checkpoint (Ctrl-C again to quit at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, previous)
