"""Averaged weights: an exponential moving average of the trainable weights, kept beside them.

The trainer evaluates each average beside the trained weights at every held-back evaluation,
and keeps whichever scores best (``TrainConfig.average_decays``; one more evaluation per
average). Measured on SMP2020 (docs/benchmarks.md): far ahead of the trained weights while the
learning rate is high, level with them at the end of a run whose rate decays to zero, so it
pays where a run stops early.

The average starts at zero and is read divided by ``1 - decay**updates`` (Adam's bias
correction), so it is the exponentially weighted mean of every step's weights so far, not pulled
toward zero (or the initial weights) early in training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["WeightAverage"]


class WeightAverage:
    """An exponential moving average, with decay ``decay`` per optimizer step (in (0, 1), as
    ``TrainConfig`` checks), of ``params``."""

    def __init__(self, params: Sequence[Any], decay: float) -> None:
        import torch

        self.params = list(params)
        self.decay = decay
        self.updates = 0
        self._sums = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]

    @property
    def name(self) -> str:
        return f"average {self.decay:g}"

    def update(self) -> None:
        """Take the parameters' current values into the average (after each optimizer step)."""
        import torch

        with torch.no_grad():
            for total, p in zip(self._sums, self.params, strict=True):
                total.mul_(self.decay).add_(p.detach().float(), alpha=1.0 - self.decay)
        self.updates += 1

    def averaged(self) -> list[Any]:
        """The bias-corrected average, one tensor per parameter (the parameters' dtype)."""
        correction = 1.0 - self.decay**self.updates if self.updates else 1.0
        return [(total / correction).to(p.dtype) for total, p in zip(self._sums, self.params, strict=True)]

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The parameters hold the average inside the block, their own values again after it."""
        import torch

        if not self.updates:
            yield
            return
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, value in zip(self.params, self.averaged(), strict=True):
                p.copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self.params, saved, strict=True):
                    p.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "sums": [t.clone() for t in self._sums]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["decay"] != self.decay or len(state["sums"]) != len(self._sums):
            raise ValueError(f"a checkpoint's average (decay {state['decay']:g}) does not match {self.name}")
        self.updates = int(state["updates"])
        for total, saved in zip(self._sums, state["sums"], strict=True):
            total.copy_(saved)
