"""A home: the areas, floors and entities whose names Home Assistant's slots accept.

A home file (YAML or JSON) looks like::

    language: zh-CN
    areas: [客厅, 卧室, {name: 厨房, aliases: [灶间]}]
    floors: [{name: 一楼}]
    entities:
      - {name: 床头灯, domain: light, area: 卧室, aliases: [台灯]}
      - {name: 客厅空调, domain: climate, area: 客厅}
      - {name: 窗帘, domain: cover, area: 卧室, device_class: curtain}

``intentkit ha home --url URL --token TOKEN`` writes one from a running Home Assistant. Names
are the only values ``name``, ``area`` and ``floor`` take: a model's value is matched to them
(case, width, traditional characters, homophones from speech recognition), never invented.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydantic

from ..errors import DataError, MissingDependencyError

__all__ = ["Area", "Entity", "Floor", "Home"]


class _Named(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = pydantic.Field(min_length=1)
    aliases: tuple[str, ...] = ()

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def spoken(self) -> tuple[str, ...]:
        """Every way the home names it: the name, then its aliases."""
        return (self.name, *(a for a in self.aliases if a != self.name))


class Area(_Named):
    """An area (a room): ``name`` and optional ``aliases``; ``floor`` names the floor it is on."""

    floor: str | None = None


class Floor(_Named):
    """A floor of the home."""


class Entity(_Named):
    """A device or entity: its ``name`` (what users say), ``domain`` (``light``, ``cover`` …),
    and optionally its ``area``, ``device_class`` and Home Assistant ``entity_id``."""

    domain: str = pydantic.Field(min_length=1)
    area: str | None = None
    device_class: str | None = None
    entity_id: str | None = None


class Home(pydantic.BaseModel):
    """The names a home's intents may use (see the module docstring)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    language: str = "zh-CN"
    areas: tuple[Area, ...] = ()
    floors: tuple[Floor, ...] = ()
    entities: tuple[Entity, ...] = ()

    @pydantic.model_validator(mode="after")
    def _known_places(self) -> Home:
        areas = {a.name for a in self.areas}
        floors = {f.name for f in self.floors}
        for entity in self.entities:
            if entity.area is not None and entity.area not in areas:
                raise ValueError(f"entity {entity.name!r} is in area {entity.area!r}, which the home does not list")
        for area in self.areas:
            if area.floor is not None and area.floor not in floors:
                raise ValueError(f"area {area.name!r} is on floor {area.floor!r}, which the home does not list")
        return self

    @classmethod
    def load(cls, path: str | Path) -> Home:
        """Read a home file (``.yaml`` / ``.yml`` or ``.json``); errors name the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(str(path), "no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(str(path), f"cannot be read ({exc})") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise MissingDependencyError("pyyaml") from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise DataError(str(path), f"invalid YAML: {exc}") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data: Any, *, source: str = "home") -> Home:
        if not isinstance(data, Mapping):
            raise DataError(source, f"a home is a mapping with areas, floors and entities, not {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(home)'}: {e['msg']}" for e in exc.errors())
            raise DataError(source, problems) from None

    def save(self, path: str | Path) -> Path:
        """Write the home as YAML (``.yaml``/``.yml``) or JSON."""
        path = Path(path)
        data = self.model_dump(mode="json", exclude_defaults=True)
        data["language"] = self.language
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise MissingDependencyError("pyyaml") from None
            text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        else:
            text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        path.write_text(text, encoding="utf-8")
        return path

    def name_choices(self, items: Iterable[_Named]) -> dict[str, str]:
        """Spoken form → canonical name, for a slot's choices: aliases map to their name, and so do
        a Chinese name's simplified and traditional forms (客廳 → 客厅), which a model copies from
        the utterance as written."""
        from ..coerce import script_variants

        items = list(items)
        choices: dict[str, str] = {}
        for item in items:
            for spoken in item.spoken:
                choices.setdefault(spoken, item.name)
        for item in items:  # after every real name, so that a variant never shadows one
            for spoken in item.spoken:
                for variant in script_variants(spoken):
                    choices.setdefault(variant, item.name)
        return choices

    @property
    def entity_names(self) -> dict[str, str]:
        return self.name_choices(self.entities)

    @property
    def area_names(self) -> dict[str, str]:
        return self.name_choices(self.areas)

    @property
    def floor_names(self) -> dict[str, str]:
        return self.name_choices(self.floors)
