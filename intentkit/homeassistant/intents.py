"""Home Assistant's intents of one language as an intentkit registry.

The intents, their slots and slot lists come from the ``home-assistant-intents`` package (the
templates Home Assistant itself matches with hassil); the names ``name``, ``area`` and ``floor``
take come from a :class:`~intentkit.homeassistant.home.Home`. Each slot becomes a typed
parameter, so that a routed call is exactly what Home Assistant executes::

    HassTurnOn(area="客厅", domain="light")
    HassClimateSetTemperature(temperature=24)
    HassLightSet(name="床头灯", brightness=50)

- a **range** list becomes a bounded int (a float where the range allows halves or tenths);
- a **closed list** (``cover_classes``, ``color``, fixed values such as ``domain``) becomes a
  choice of the values Home Assistant expects (``curtain``, ``red``, ``light``);
- a **wildcard** (a message, a shopping-list item) is text copied from the utterance;
- ``name`` / ``area`` / ``floor`` are choices of the home's names, aliases binding as their name;
- a slot fed by both numbers and words (``volume_step``: ``up``, ``down`` or a percentage) is
  text or a bare number (``Param(numbers=True)``), given to Home Assistant as a number when it is one.

A slot that every sentence of an intent fills is required; the others are optional. Every call
is grounded in the home before it runs (:mod:`.grounding`: the device the utterance names, the
area and kind of device where it names none of the home's, the state in the device's own words).
The language's templates, matched by hassil over the home's names, draft each call for the model
to verify (:mod:`.templates`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydantic

from ..coerce import to_float, to_int
from ..errors import ConfigError
from ..registry import IntentSpec, Param, Registry
from .grounding import grounder
from .home import Home
from .package import HA_LANGUAGES, _list_references, ha_language, language_data, package_language
from .templates import TemplateDrafter

_PLACES = {"name": "entity_names", "area": "area_names", "floor": "floor_names"}

__all__ = [
    "HA_LANGUAGES",
    "IntentSlots",
    "ha_language",
    "language_data",
    "language_intents",
    "package_language",
    "registry_for",
    "slot_values",
]


@dataclass
class IntentSlots:
    """What the templates of one intent say about its slots."""

    name: str
    description: str = ""
    lists: dict[str, set[str]] = field(default_factory=dict)  # slot -> the slot lists that fill it
    fixed: dict[str, set[Any]] = field(default_factory=dict)  # slot -> values sentences set without a list
    context: set[str] = field(default_factory=set)  # slots the satellite's context fills
    per_sentence: list[set[str]] = field(default_factory=list)  # the slots each template fills
    slot_descriptions: dict[str, str] = field(default_factory=dict)
    response: dict[str, str] = field(default_factory=dict)  # slot combination -> response key

    @property
    def slots(self) -> list[str]:
        named = list(self.slot_descriptions)
        found = sorted(set(self.lists) | set(self.fixed) | self.context)
        return [s for s in named if s in found] + [s for s in found if s not in named]

    @property
    def required(self) -> set[str]:
        return set.intersection(*self.per_sentence) if self.per_sentence else set()


def language_intents(language: str) -> dict[str, IntentSlots]:
    """The intents of ``language`` (``zh-CN``, ``en`` …; Home Assistant's ``zh-Hans`` too) and
    what their templates fill."""
    intents, _, info = language_data(package_language(language))
    found: dict[str, IntentSlots] = {}
    for name, intent in intents.intents.items():
        described = info.get(name, {})
        slots = IntentSlots(
            name,
            description=str(described.get("description", "")),
            slot_descriptions={k: str(v.get("description", "")) for k, v in (described.get("slots") or {}).items()},
        )
        for item in intent.data:
            rules = {**intents.expansion_rules, **item.expansion_rules}
            context_slots = {k for k, v in (item.requires_context or {}).items() if isinstance(v, dict) and v.get("slot")}
            for sentence in item.sentences:
                filled = set(item.slots) | context_slots
                for ref in _list_references(sentence.expression, rules, set()):
                    slots.lists.setdefault(ref.slot_name, set()).add(ref.list_name)
                    filled.add(ref.slot_name)
                slots.per_sentence.append(filled)
            for slot, value in item.slots.items():
                slots.fixed.setdefault(slot, set()).add(value)
            slots.context |= context_slots
            if item.response:
                slots.response[str((item.metadata or {}).get("slot_combination", ""))] = item.response
        found[name] = slots
    return found


def _slot_annotation(slot: str, spec: IntentSlots, home: Home, language: str, required: bool) -> Any:
    """The annotated type of one slot (see the module docstring)."""
    from hassil import RangeSlotList, TextSlotList, WildcardSlotList

    intents, _, _ = language_data(language)
    description = spec.slot_descriptions.get(slot, "")
    optional = (lambda t: t) if required else (lambda t: t | None)
    if slot in _PLACES and spec.lists.get(slot, {slot}) <= {slot}:  # {name} itself, not {timer_name:name}
        names = getattr(home, _PLACES[slot])
        if not names:  # the home lists none: nothing the model writes could be checked
            return None
        return Annotated[optional(str), Param(description=description, choices=names)]  # type: ignore[operator]
    lists = [intents.slot_lists.get(name) for name in sorted(spec.lists.get(slot, ()))]
    ranges = [item for item in lists if isinstance(item, RangeSlotList)]
    words: set[str] = {str(v) for v in spec.fixed.get(slot, ())}
    numbers: set[float] = set()
    for item in lists:
        if isinstance(item, TextSlotList):
            for value in item.values:
                out = value.value_out if value.value_out is not None else getattr(value.text_in, "text", None)
                (numbers.add(float(out)) if isinstance(out, int | float) and not isinstance(out, bool) else words.add(str(out)))
    if any(isinstance(item, WildcardSlotList) for item in lists) or (not ranges and not words and not numbers):
        # Copied from the utterance, unless closed values feed the slot too (state: a zone or "off").
        copied = not (ranges or words or numbers)
        return Annotated[optional(str), Param(description=description, from_utterance=copied)]  # type: ignore[operator]
    if ranges and not words:
        low = min(min(r.start, r.stop) * (r.multiplier or 1) for r in ranges)
        high = max(max(r.start, r.stop) * (r.multiplier or 1) for r in ranges)
        low, high = min([low, *numbers]), max([high, *numbers])
        fractional = any(r.fraction_type is not None for r in ranges)
        kind: Any = float if fractional else int
        return Annotated[optional(kind), pydantic.Field(ge=low, le=high), Param(description=description, from_utterance=False)]
    if ranges or numbers:  # words and numbers (volume_step: "up" or -20): the model writes either
        return Annotated[optional(str), Param(description=description, from_utterance=False, numbers=True)]  # type: ignore[operator]
    choices = {w: w for w in sorted(words)}
    return Annotated[optional(str), Param(description=description, choices=choices)]  # type: ignore[operator]


def registry_for(
    home: Home,
    *,
    language: str | None = None,
    handler: Callable[[str, dict[str, Any]], Any] | None = None,
    intents: Iterator[str] | list[str] | None = None,
    templates: str = "answer",
) -> Registry:
    """A :class:`~intentkit.Registry` of Home Assistant's intents for ``home`` (in its language
    unless ``language``). Each intent's handler calls ``handler(intent_name, slots)`` with the
    slots as Home Assistant takes them (:func:`slot_values`; default: returns them), e.g. a
    :class:`~intentkit.homeassistant.client.HomeAssistant` client's ``handle_intent``.
    ``intents`` limits the registry to those names.

    ``templates`` is what the language's templates (hassil, over the home's names) do:
    ``"answer"`` (default) takes a match without a wildcard value as the answer without the
    model, as Home Assistant's "prefer handling commands locally" does, and drafts the call of
    every other match; the model reads what no template matches. ``"draft"`` only drafts each
    call for the model to verify (the answer is always the model's); ``"off"``: neither."""
    language = package_language(language or home.language)
    found = language_intents(language)
    if intents is not None:
        wanted = list(intents)
        unknown = [name for name in wanted if name not in found]
        if unknown:
            raise ConfigError(f"no such Home Assistant intent(s) in {language}: {', '.join(unknown)}")
        found = {name: found[name] for name in wanted}
    registry = Registry()
    for name, spec in found.items():
        required = spec.required
        parameters, annotations = [], {}
        for slot in spec.slots:
            annotation = _slot_annotation(slot, spec, home, language, slot in required)
            if annotation is None:
                continue
            default = inspect.Parameter.empty if slot in required else None
            parameters.append(inspect.Parameter(slot, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
            annotations[slot] = annotation
        registry.register(
            _handler(name, handler, parameters, annotations),
            name=name,
            description=spec.description,
            resolve=grounder(home, language, name, set(annotations)),
        )
    if templates not in ("answer", "draft", "off"):
        raise ConfigError(f"templates is 'answer', 'draft' or 'off', not {templates!r}")
    if templates != "off":
        drafter = TemplateDrafter(home, registry, language=language)
        registry.drafter = drafter
        if templates == "answer":
            registry.matcher = drafter.match
    return registry


def _handler(
    name: str,
    handler: Callable[[str, dict[str, Any]], Any] | None,
    parameters: list[inspect.Parameter],
    annotations: dict[str, Any],
) -> Callable[..., Any]:
    numeric = frozenset(slot for slot, annotation in annotations.items() if _takes_numbers(annotation))

    def run(**slots: Any) -> Any:
        values = _ha_slots(slots, numeric)
        return handler(name, values) if handler is not None else values

    run.__name__ = run.__qualname__ = name
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = annotations
    return run


def _takes_numbers(annotation: Any) -> bool:
    return any(isinstance(m, Param) and m.numbers for m in getattr(annotation, "__metadata__", ()))


def slot_values(spec: IntentSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A bound call's arguments as Home Assistant's slots: unset ones left out, and a text slot
    that takes numbers too (``Param(numbers=True)``: ``volume_step="-20"``) given its number."""
    return _ha_slots(arguments, frozenset(p.name for p in spec.params if p.numbers))


def _ha_slots(arguments: Mapping[str, Any], numeric: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for slot, value in arguments.items():
        if value is None:
            continue
        if slot in numeric:
            number: int | float | None = to_int(value)
            number = to_float(value) if number is None else number
            value = value if number is None else number
        out[slot] = value
    return out
