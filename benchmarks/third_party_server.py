"""The bundled model in a third-party OpenAI-compatible server, against the in-process backend.

    python benchmarks/third_party_server.py [--data examples/demo/dev.jsonl] [--limit N] [--model DIR]

The GGUF that ``Router.default()`` runs (vocabulary trimmed, adapter merged; it carries the
trained prompt as ``tokenizer.chat_template`` and ``<end_of_turn>`` as its end-of-turn token) is
served by llama-cpp-python's own server (``python -m llama_cpp.server``, its ``server`` extra) on
127.0.0.1; the same rows go through the in-process :class:`LlamaCppBackend` and through
:class:`OpenAIBackend` in chat mode (the server renders the GGUF's template) and in completions
mode (intentkit renders the prompt). Reported side by side: intent and exact-call accuracy, parse
failures, p50 / p95 latency (:func:`intentkit.testing.llama_cpp_server` starts the server, as
the tests do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def compare(data: Path, *, limit: int = 0, model: Path | None = None) -> dict[str, Any]:
    from intentkit import Router
    from intentkit.backends.llamacpp import LlamaCppBackend
    from intentkit.backends.openai import OpenAIBackend
    from intentkit.demo import SmartHome
    from intentkit.testing import llama_cpp_server
    from trainers.data import load_records
    from trainers.evaluate import backend_predictor, evaluate

    records = load_records(data)[: limit or None]
    local = LlamaCppBackend.from_model_dir(model) if model else LlamaCppBackend.default()
    registry = SmartHome().register(Router()).registry
    prompt = local.prompt
    assert prompt is not None
    report: dict[str, Any] = {"rows": len(records), "gguf": str(local.loaded_path)}
    with local:
        report["in-process"] = evaluate(records, backend_predictor(local, registry, prompt)).to_dict()
    with llama_cpp_server(Path(local.loaded_path)) as url:
        for mode in ("chat", "completions"):
            with OpenAIBackend(url, model="intentkit", mode=mode, timeout=60) as remote:  # type: ignore[arg-type]
                report[f"server, {mode}"] = evaluate(records, backend_predictor(remote, registry, prompt)).to_dict()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "examples" / "demo" / "dev.jsonl")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--model", type=Path, help="a model directory (default: the bundled demo model)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = compare(args.data, limit=args.limit, model=args.model)
    print(f"{report['rows']} rows, {report['gguf']}")
    print(f"{'backend':22s} {'intent':>8s} {'exact':>8s} {'parse':>7s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for name in ("in-process", "server, chat", "server, completions"):
        r = report[name]
        print(
            f"{name:22s} {r['intent_accuracy']:8.2%} {r['exact_call_accuracy']:8.2%} {r['parse_failure_rate']:7.2%} "
            f"{r['latency_p50_ms']:8.1f} {r['latency_p95_ms']:8.1f}"
        )
    if args.out:
        import json

        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
