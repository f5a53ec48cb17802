"""Grounding a routed call in the home: what the utterance names is what the call names.

The model does not see the home: it writes the names of its training homes, and constrained
decoding then has to pick one of this home's names. Home Assistant's own matcher knows the home,
so these three steps, applied to every routed call of a :func:`~.intents.registry_for` registry
(:attr:`intentkit.registry.IntentSpec.resolve`), put the home back into the call:

- **a device the utterance names**: when the utterance says a device's name or alias (``打开吊扇``,
  in a home with a fan called 吊扇) and the call names no device, or one the utterance does not
  say, the call names that device, and the domain words it was read as (``domain="fan"``) go;
  not for ``所有 / 全部 …`` requests, which mean every device of a kind;
- **a name the utterance does not say**: a device name that is nowhere in the utterance (not even
  as a homophone, 床头等 → 床头灯), where the utterance says an area and a kind of device
  (``打开厨房窗帘`` in a home whose curtains are not called that), becomes that area, domain and
  device class, as Home Assistant reads the sentence;
- **a state in the device's own words**: ``HassGetState``'s ``state`` is read from the
  utterance with the state list of the device's domain, from the intents package's templates
  (``打开`` is ``open`` for a cover, ``on`` for a light or a door sensor, 锁着 ``locked``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from ..coerce import fold, pinyin_of
from .home import Entity, Home
from .package import _list_references, language_data

__all__ = ["grounder"]

# The words for a kind of device, where the intents package has no list of them (it has one for
# cover classes and a rule for lights), folded to simplified characters.
_DOMAIN_WORDS: dict[str, tuple[str, ...]] = {
    "fan": ("风扇", "电扇", "吊扇"),
    "climate": ("空调", "暖气", "地暖"),
    "media_player": ("电视", "音箱", "音响", "播放器"),
    "switch": ("插座", "开关"),
    "lock": ("门锁", "锁"),
    "valve": ("阀门", "水阀"),
    "vacuum": ("扫地机器人", "扫地机"),
}
# Words that make a request about every device of a kind, or ask whether there is any: the
# devices the utterance names are then a kind and an area ("厨房灯有没有开着的"), not one device.
_EVERY = ("所有", "全部", "全屋", "每个", "每一个", "都", "有没有", "哪些", "哪个", "多少", "几个", "有几")
Resolve = Callable[[dict[str, Any], str], dict[str, Any]]


def grounder(home: Home, language: str, intent: str, slots: set[str]) -> Resolve | None:
    """The resolve step for ``intent`` (whose slots are ``slots``) in ``home``, or ``None`` when
    it has nothing to ground (no ``name`` slot and no state)."""
    if "name" not in slots and intent != "HassGetState":
        return None
    entities = _spoken_entities(home)
    areas = sorted(((fold(s), a.name) for a in home.areas for s in a.spoken), key=lambda p: -len(p[0]))
    kinds = _kind_words(language)
    states = _state_phrases(language) if intent == "HassGetState" and "state" in slots else {}
    by_name = {e.name: e for e in home.entities}

    def resolve(arguments: dict[str, Any], utterance: str) -> dict[str, Any]:
        said = fold(utterance)
        out = dict(arguments)
        if "name" in slots:
            out = _ground_name(out, said, entities, areas, kinds, slots)
        if states:
            entity = by_name.get(str(out.get("name"))) if out.get("name") else None
            domain = entity.domain if entity is not None else out.get("domain")
            device_class = entity.device_class if entity is not None else out.get("device_class")
            phrase_values = states.get((str(domain), device_class)) or states.get((str(domain), None))
            if phrase_values:
                found = next((value for phrase, value in phrase_values if phrase in said), None)
                if found is not None:
                    out["state"] = found
        return out

    return resolve


def _ground_name(
    arguments: dict[str, Any],
    said: str,
    entities: list[tuple[str, Entity]],
    areas: list[tuple[str, str]],
    kinds: list[tuple[str, str, str | None]],
    slots: set[str],
) -> dict[str, Any]:
    out = dict(arguments)
    name = out.get("name")
    named = _says(said, name, entities) if name else False
    if not named and not any(word in said for word in _EVERY):
        spoken = next((entity for folded, entity in entities if len(folded) >= 2 and folded in said), None)
        if spoken is not None:  # the utterance says a device of the home
            out["name"] = spoken.name
            for slot in ("domain", "device_class"):
                out.pop(slot, None)
            return out
    if name and not named and "domain" in slots:  # a name the utterance does not say
        kind = next(((word, domain, device_class) for word, domain, device_class in kinds if word in said), None)
        area = next((canonical for folded, canonical in areas if folded in said), None)
        if kind is not None:
            out.pop("name")
            out["domain"] = kind[1]
            if kind[2] is not None and "device_class" in slots:
                out["device_class"] = kind[2]
            if area is not None and "area" in slots and not out.get("area"):
                out["area"] = area
    return out


def _says(said: str, name: Any, entities: list[tuple[str, Entity]]) -> bool:
    """Whether the utterance says ``name`` (one of its spoken forms), as written or as it sounds."""
    forms = [folded for folded, entity in entities if entity.name == name] or [fold(str(name))]
    if any(form in said for form in forms):
        return True
    heard = f" {pinyin_of(said)} "
    return any(pinyin_of(form) and f" {pinyin_of(form)} " in heard for form in forms)


def _spoken_entities(home: Home) -> list[tuple[str, Entity]]:
    """(folded spoken form, entity), the longest forms first."""
    pairs = [(fold(spoken), entity) for entity in home.entities for spoken in entity.spoken]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


@functools.cache
def _kind_words(language: str) -> list[tuple[str, str, str | None]]:
    """(word, domain, device class) for the kinds of device, the longest words first: the
    package's cover classes and light words, and the table above."""
    _, data, _ = language_data(language)
    found: list[tuple[str, str, str | None]] = []
    for item in (data.get("lists", {}).get("cover_classes") or {}).get("values", []):
        for word in _alternatives(str(item.get("in", ""))):
            found.append((fold(word), "cover", str(item.get("out"))))
    light = (data.get("expansion_rules") or {}).get("light", "")
    found += [(fold(word), "light", None) for word in _alternatives(light) if word]
    for domain, words in _DOMAIN_WORDS.items():
        found += [(word, domain, None) for word in words]
    return sorted({w for w in found if w[0]}, key=lambda w: -len(w[0]))


@functools.cache
def _state_phrases(language: str) -> dict[tuple[str, str | None], list[tuple[str, str]]]:
    """(domain, device class or None) → (phrase, state value), the longest phrases first, from
    the ``HassGetState`` templates: each template names the domain (and class) it is for and the
    state list its ``{state}`` takes."""
    from hassil import TextSlotList

    intents, _, _ = language_data(language)
    intent = intents.intents.get("HassGetState")
    table: dict[tuple[str, str | None], dict[str, str]] = {}
    if intent is None:
        return {}
    for item in intent.data:
        context = item.requires_context or {}
        domains = context.get("domain")
        classes = context.get("device_class")
        if not domains:
            continue
        rules = {**intents.expansion_rules, **item.expansion_rules}
        lists = {
            ref.list_name
            for sentence in item.sentences
            for ref in _list_references(sentence.expression, rules, set())
            if ref.slot_name == "state"
        }
        phrases: dict[str, str] = {}
        for list_name in lists:
            slot_list = intents.slot_lists.get(list_name)
            if not isinstance(slot_list, TextSlotList):
                continue
            for value in slot_list.values:
                out = value.value_out if value.value_out is not None else None
                texts = [value.text_in] if isinstance(value.text_in, str) else list(_expansions(value.text_in))
                for text in texts:
                    if text and out is not None:
                        phrases.setdefault(fold(text), str(out))
        for domain in [domains] if isinstance(domains, str) else domains:
            for device_class in [classes] if isinstance(classes, str) else (classes or [None]):
                table.setdefault((str(domain), device_class), {}).update(phrases)
    return {key: sorted(values.items(), key=lambda p: -len(p[0])) for key, values in table.items()}


def _expansions(expression: Any) -> Iterator[str]:
    """Every text a hassil expression (of a slot value) can say."""
    from hassil.expression import Alternative, Sequence, TextChunk

    if isinstance(expression, TextChunk):
        yield expression.text
    elif isinstance(expression, Alternative):
        for item in expression.items:
            yield from _expansions(item)
    elif isinstance(expression, Sequence):
        texts = [""]
        for item in expression.items:
            texts = [a + b for a in texts for b in _expansions(item)]
        yield from texts


def _alternatives(template: str) -> list[str]:
    """Every text a template such as ``(遮阳|雨)(蓬|棚)`` or ``(灯|台灯)[的]`` says, optional parts
    left out where they can be."""
    from hassil.parse_expression import parse_sentence

    if not template:
        return []
    texts = {text.strip() for text in _expansions(parse_sentence(template).expression)}
    return sorted(t for t in texts if t and not t.endswith("的")) or sorted(t for t in texts if t)
