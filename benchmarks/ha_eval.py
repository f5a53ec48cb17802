"""Home Assistant's own test sentences, intentkit against hassil side by side (paths are arguments).

    python benchmarks/ha_eval.py ../shared/datasets/home-assistant/zh-CN.tests.jsonl \\
        [--model models/home-assistant] [--limit N] [--out report.json]

Each row is routed over the home of its test file (the row's ``fixture``: areas, floors and
entities; ``registry_for`` makes their names the slots' choices), the way the Wyoming service
routes it, with the satellite's ``context`` (its area) filling what the model leaves to it. The
same rows go through hassil's ``recognize_best`` with the same names and context, which is what
Home Assistant runs by itself. Reported per recognizer: intent accuracy, exact-slot accuracy (every
slot Home Assistant's test checks has the expected value), p50 / p95 latency, and the intents that
fail most. Never train on these files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

Predict = Callable[[dict[str, Any]], tuple[str | None, dict[str, Any]]]


def home_of(fixture: dict[str, Any], language: str) -> Any:
    from intentkit.homeassistant import Home

    areas = [
        {"name": a["name"], **({"floor": a["floor"]} if a.get("floor") else {}), "aliases": a.get("aliases", [])}
        for a in fixture.get("areas", [])
    ]
    floors = {a["floor"] for a in areas if a.get("floor")} | {f["name"] for f in fixture.get("floors", [])}
    area_names = {a["name"] for a in areas}
    entities = []
    for e in fixture.get("entities", []):
        entity = {"name": e["name"], "domain": e["domain"], "aliases": e.get("aliases", [])}
        if e.get("area"):
            entity["area"] = e["area"]
            if e["area"] not in area_names:
                areas.append({"name": e["area"]})
                area_names.add(e["area"])
        device_class = e.get("device_class") or (e.get("attributes") or {}).get("device_class")
        if device_class:
            entity["device_class"] = device_class
        entities.append(entity)
    return Home(language=language, areas=areas, floors=sorted(floors), entities=entities)


def intentkit_predictor(
    model: Path | None, language: str, *, drafts: bool = True, templates: str = "answer", redraft: bool = True
) -> Predict:
    from intentkit import Router
    from intentkit.backends.llamacpp import LlamaCppBackend
    from intentkit.homeassistant import registry_for, slot_values
    from intentkit.homeassistant.package import bundled_model_name

    bundled = ROOT / "models" / (bundled_model_name(language) or "home-assistant")
    backend = LlamaCppBackend.from_model_dir(model or bundled, drafts="auto" if drafts else None)
    for generator in backend._generators:
        generator.redraft = redraft
    routers: dict[str, Any] = {}

    def predict(row: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        key = json.dumps(row.get("fixture", {}), sort_keys=True, ensure_ascii=False)
        if key not in routers:
            registry = registry_for(home_of(row.get("fixture", {}), language), templates=templates)
            routers[key] = Router(backend, registry=registry, fast_path=False)
        router = routers[key]
        result = router.handle(row["instruction"], dispatch=False)
        if not result.ok or not result.calls:
            return None, {}
        call = result.calls[0]
        slots = slot_values(router.registry.get(call.name), call.arguments)
        for slot, value in (row.get("context") or {}).items():  # what the satellite tells Home Assistant
            slots.setdefault(slot, value)
        return call.name, slots

    return predict


def hassil_predictor(language: str) -> Predict:
    from hassil import recognize_best

    from intentkit.homeassistant.intents import language_data
    from intentkit.homeassistant.templates import slot_lists

    intents, data, _ = language_data(language)
    skip = data.get("skip_words", [])

    def predict(row: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        # The home's names as Home Assistant gives them to hassil (the lists the drafter uses).
        lists = slot_lists(home_of(row.get("fixture", {}), language))
        result = recognize_best(
            row["instruction"], intents, slot_lists=lists, skip_words=skip, intent_context=row.get("context"), language=language
        )
        if result is None:
            return None, {}
        slots = {name: entity.value for name, entity in result.entities.items()}
        for slot, value in (row.get("context") or {}).items():
            slots.setdefault(slot, value)
        return result.intent.name, slots

    return predict


def same(expected: Any, got: Any) -> bool:
    if isinstance(expected, list):
        expected = expected[0] if len(expected) == 1 else expected
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        try:
            return float(got) == float(expected)
        except (TypeError, ValueError):
            return False
    return str(got) == str(expected)


def score(rows: list[dict[str, Any]], predict: Predict, *, examples_kept: int = 40) -> dict[str, Any]:
    latencies, intent_ok, exact_ok = [], 0, 0
    failures: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for row in rows:
        started = time.perf_counter()
        name, slots = predict(row)
        latencies.append((time.perf_counter() - started) * 1000)
        right_intent = name == row.get("name")  # None: out of scope, nothing may be recognised
        exact = right_intent and all(k in slots and same(v, slots[k]) for k, v in (row.get("args") or {}).items())
        intent_ok += right_intent
        exact_ok += exact
        if not exact:
            failures[str(row.get("name"))] += 1
            if len(examples) < examples_kept:
                examples.append({"text": row["instruction"], "expected": row["output"], "got": [name, slots]})
    latencies.sort()
    return {
        "rows": len(rows),
        "intent_accuracy": intent_ok / len(rows),
        "exact_slot_accuracy": exact_ok / len(rows),
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "failing_intents": failures.most_common(10),
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a tests file (datasets format with fixtures)")
    parser.add_argument("--model", type=Path, help="a model directory (default: models/home-assistant)")
    parser.add_argument("--language", default="zh-CN")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--only", choices=["intentkit", "hassil"], help="one recognizer only")
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    parser.add_argument("--examples", type=int, default=40, help="failures kept in the report (default 40)")
    parser.add_argument(
        "--drafts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draft calls from the model directory's drafts.jsonl (default; --no-drafts: decode step by step)",
    )
    parser.add_argument(
        "--redraft",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draft again where the first draft stops holding (default; --no-redraft: the first draft only)",
    )
    parser.add_argument(
        "--templates",
        choices=["answer", "draft", "off"],
        default="answer",
        help="what Home Assistant's templates do (registry_for): answer what they match without a wildcard and "
        "draft the rest (default), only draft each call, or nothing (drafts from the nearest training row only)",
    )
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[: args.limit or None]
    report: dict[str, Any] = {}
    if args.only in (None, "hassil"):
        report["hassil"] = score(rows, hassil_predictor(args.language), examples_kept=args.examples)
    if args.only in (None, "intentkit"):
        report["intentkit"] = score(
            rows,
            intentkit_predictor(args.model, args.language, drafts=args.drafts, templates=args.templates, redraft=args.redraft),
            examples_kept=args.examples,
        )
    for name, figures in report.items():
        print(
            f"{name:9s} {figures['rows']} rows: intent {figures['intent_accuracy']:.2%}, exact slots "
            f"{figures['exact_slot_accuracy']:.2%}, p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms; "
            f"most failing: {figures['failing_intents'][:5]}"
        )
    if args.out:
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
