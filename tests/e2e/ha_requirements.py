"""Print the pip requirements of the Home Assistant integrations the end-to-end test loads (and of
everything they depend on), read from the installed Home Assistant's own manifests: run with the
Home Assistant venv's Python, so the pins are that release's. ``--skip-pip`` then starts with them."""

from __future__ import annotations

import json
from pathlib import Path

import homeassistant

COMPONENTS = Path(homeassistant.__file__).parent / "components"
USED = [
    "frontend",
    "http",
    "api",
    "onboarding",
    "config",
    "intent",
    "conversation",
    "input_boolean",
    "template",
    "light",
    "wyoming",
]


def requirements(names: list[str]) -> list[str]:
    seen: set[str] = set()
    found: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen or not (COMPONENTS / name / "manifest.json").is_file():
            continue
        seen.add(name)
        manifest = json.loads((COMPONENTS / name / "manifest.json").read_text(encoding="utf-8"))
        found += [r for r in manifest.get("requirements", []) if r not in found]
        todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
    return sorted(found)


if __name__ == "__main__":
    print("\n".join(requirements(USED)))
