"""The ``home-assistant-intents`` package: a language's intents, lists and templates, loaded once."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ConfigError, MissingDependencyError

__all__ = ["HA_LANGUAGES", "bundled_model_name", "ha_language", "language_data", "package_language"]

#: Home Assistant's own language codes for the intents package's Chinese ones (core uses zh-Hans).
HA_LANGUAGES = {"zh-CN": "zh-Hans", "zh-TW": "zh-Hant", "zh-HK": "zh-HK"}


def ha_language(language: str) -> str:
    """The code Home Assistant's conversation API uses for an intents-package language."""
    return HA_LANGUAGES.get(language, language)


def package_language(language: str) -> str:
    """The intents package's code for a language as Home Assistant or a user writes it."""
    for package, core in HA_LANGUAGES.items():
        if language.lower() in (package.lower(), core.lower()):
            return package
    return language


def bundled_model_name(language: str) -> str | None:
    """The bundled model (``models/<name>``) trained for ``language``: ``home-assistant`` for
    Chinese (zh-CN and zh-TW rows), ``home-assistant-en`` for English; ``None`` for the others."""
    if language.lower().startswith("zh"):
        return "home-assistant"
    if language.split("-")[0].lower() == "en":
        return "home-assistant-en"
    return None


@functools.cache
def language_data(language: str) -> Any:
    """(hassil Intents, the raw language data, the intent descriptions) of an intents-package
    language, loaded once."""
    try:
        import home_assistant_intents as hai
        from hassil import Intents
    except ImportError as exc:
        raise MissingDependencyError("hassil" if "hassil" in str(exc) else "home-assistant-intents") from None
    data = hai.get_intents(language)
    if data is None:
        raise ConfigError(f"home-assistant-intents has no language {language!r}; languages: {', '.join(hai.get_languages())}")
    return Intents.from_dict(data), data, hai.get_intent_info() or {}


def _list_references(expression: Any, rules: Mapping[str, Any], seen: set[str]) -> Iterator[Any]:
    from hassil.expression import Group, ListReference, RuleReference

    if isinstance(expression, ListReference):
        yield expression
    elif isinstance(expression, RuleReference):
        if expression.rule_name in rules and expression.rule_name not in seen:
            yield from _list_references(rules[expression.rule_name].expression, rules, seen | {expression.rule_name})
    elif isinstance(expression, Group):
        for item in expression.items:
            yield from _list_references(item, rules, seen)
