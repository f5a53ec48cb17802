"""Home Assistant's own sentence templates as a drafter: hassil's match, for the model to verify.

A Home Assistant call carries three or four values (``HassTurnOn(area="客厅", domain="light")``),
and each value the model writes is one more evaluation on a CPU. The nearest training utterance
(:class:`~intentkit.drafts.DraftIndex`) seldom names the same place and device, so its draft
stops early. hassil, matching the language's templates over the home's own names, answers a
templated sentence exactly and in about as long as a millisecond or two; its match, turned into a
:class:`~intentkit.drafts.Draft` in the registry's parameter order, is evaluated in one batch with
the prompt. The model still decides every token (a wrong match costs its batched tokens, never the
answer); a sentence no template matches, the natural phrasing hassil misses, is drafted from the
nearest training utterance as before.

:func:`~intentkit.homeassistant.registry_for` sets a :class:`TemplateDrafter` as the registry's
:attr:`~intentkit.Registry.drafter`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..calls import Call
from ..drafts import Draft
from .package import language_data, package_language

if TYPE_CHECKING:
    from ..calls import Value
    from ..registry import Registry
    from .home import Home

__all__ = ["TemplateDrafter", "slot_lists"]


def slot_lists(home: Home) -> dict[str, Any]:
    """hassil's ``area``, ``floor`` and ``name`` lists for ``home``, as Home Assistant builds them:
    every spoken form (name, aliases) maps to the canonical name, and an entity's name carries its
    domain (and area) as context, so that templates whose ``requires_context`` names a domain match."""
    from hassil import TextSlotList

    names = [
        (spoken, e.name, {"domain": e.domain, **({"area": e.area} if e.area else {})})
        for e in home.entities
        for spoken in e.spoken
    ]
    areas = [(spoken, a.name) for a in home.areas for spoken in a.spoken]
    floors = [(spoken, f.name) for f in home.floors for spoken in f.spoken]
    # hassil needs every list a template references; an empty home's are a name nobody says.
    return {
        "area": TextSlotList.from_tuples(areas or [("-", "-")], name="area"),
        "floor": TextSlotList.from_tuples(floors or [("-", "-")], name="floor"),
        "name": TextSlotList.from_tuples(names or [("-", "-")], name="name"),
    }


class TemplateDrafter:
    """``drafter(text)``: hassil's best template match of ``text`` over ``home``'s names as a
    :class:`~intentkit.drafts.Draft` of ``registry``'s call (values in the order of the intent's
    parameters, only those it declares), or ``None`` when no template matches or the matched
    intent is not in the registry.

    :meth:`match` is the same match as a :class:`~intentkit.calls.Call` for the router to take
    without the model (``registry_for(templates="answer")``, as Home Assistant's "prefer handling
    commands locally" does), when no value of it is a wildcard's: a template's wildcard takes
    whatever stands in its place (``广播一下，开饭了`` → ``message="，开饭了"``), so such matches
    are only drafted."""

    def __init__(self, home: Home, registry: Registry, *, language: str | None = None) -> None:
        self.language = package_language(language or home.language)
        self.intents, data, _ = language_data(self.language)
        self.skip_words = list(data.get("skip_words", []))
        self.lists = slot_lists(home)
        self.registry = registry
        self._last: tuple[str, Any] | None = None  # (text, hassil's result): match, then draft

    def _recognize(self, text: str) -> Any:
        if self._last is not None and self._last[0] == text:
            return self._last[1]
        from hassil import recognize_best

        result = recognize_best(text, self.intents, slot_lists=self.lists, skip_words=self.skip_words, language=self.language)
        if result is not None and result.intent.name not in self.registry:
            result = None
        self._last = (text, result)
        return result

    def _items(self, result: Any) -> tuple[list[tuple[str, Value]], bool]:
        """The match's values in the parameters' order, and whether they are all of it."""
        items: list[tuple[str, Value]] = []
        for param in self.registry.get(result.intent.name).params:
            entity = result.entities.get(param.name)
            if entity is None:
                continue
            value = _value(entity.value)
            if value is None:  # a list of values, or something no parameter is written as
                return items, False
            items.append((param.name, value))
        return items, True

    def __call__(self, text: str) -> Draft | None:
        result = self._recognize(text)
        if result is None:
            return None
        items, _ = self._items(result)
        return Draft(self.registry.get(result.intent.name).name, tuple(items))

    def match(self, text: str) -> Call | None:
        """The template match of ``text`` as a call, when it has no wildcard value; else ``None``."""
        result = self._recognize(text)
        if result is None or any(entity.is_wildcard for entity in result.entities.values()):
            return None
        items, whole = self._items(result)
        return Call(result.intent.name, (), dict(items)) if whole else None


def _value(value: Any) -> Value | None:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return int(value) if float(value).is_integer() else float(value)
    return None
