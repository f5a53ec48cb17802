"""The call value type shared by the parser, the registry, the trainer and the backends."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = ["NO_INTENT", "Call", "Value", "render_call", "render_value"]

Value: TypeAlias = "str | int | float | bool | list[Value] | dict[str, Value] | None"

#: The reserved call a fine-tuned model answers when no registered intent applies.
#: The registry refuses it as an intent name; the router maps it to ``no_intent``.
NO_INTENT = "no_intent"


@dataclass(frozen=True, slots=True)
class Call:
    """One function call as the model wrote it: syntax only, nothing validated or executed.

    ``args`` are the positional values in order, ``kwargs`` the keyword values;
    ``span`` is the (start, end) character range of the call in the raw model output.
    """

    name: str
    args: tuple[Value, ...] = ()
    kwargs: Mapping[str, Value] = field(default_factory=dict)
    span: tuple[int, int] = (0, 0)

    def render(self) -> str:
        """The canonical text of this call (keyword values JSON-quoted), e.g. ``f(1, city="杭州")``."""
        return render_call(self.name, self.args, self.kwargs)


def render_value(value: Value) -> str:
    """Render one value the way the datasets and the trainer write it (JSON, Unicode kept)."""
    return json.dumps(value, ensure_ascii=False)


def render_call(name: str, args: Sequence[Value] = (), kwargs: Mapping[str, Value] | None = None) -> str:
    """Render ``name(args..., key=value...)`` in the canonical output format."""
    parts = [render_value(v) for v in args]
    parts += [f"{k}={render_value(v)}" for k, v in (kwargs or {}).items()]
    return f"{name}({', '.join(parts)})"
