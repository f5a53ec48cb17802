"""Edge latency / accuracy / memory benchmark: intentkit's llama.cpp router vs the naive recipe.

    python benchmarks/bench_edge.py                                  # demo dev set, bundled model
    python benchmarks/bench_edge.py --data ../shared/datasets/smp2020/dev.jsonl \\
        --adapter runs/smp2020 --registry-from ../shared/datasets/smp2020/train.jsonl

Each mode runs in its own process (so peak RSS and cold start are its own):

- ``router``: ``Router.handle`` with :class:`LlamaCppBackend` (prefix cache, constrained decoding,
  drafted calls when the adapter's directory has ``drafts.jsonl`` or ``--drafts`` names one, and
  the out-of-scope detector when it has ``scope.npz``; ``--no-scope``);
- ``stepwise``: ``router`` without drafts: every decision after the prompt is its own evaluation;
- ``greedy``: the same backend with ``constrained=False`` (unconstrained greedy, prefix cache);
- ``naive``: llama-cpp-python ``Llama.create_completion`` with the same model, adapter and prompt,
  greedy, stopping at the end-of-turn marker;
- ``naive-lora``: ``naive`` with the adapter applied at run time over the base (only differs from
  ``naive`` when the adapter is merged, the default: ``--no-merge`` runs everything unmerged);
- ``gbnf``: ``naive`` plus a GBNF grammar of the registered calls.

Reports p50/p95 latency, the ratio to naive, intent / exact-call accuracy, ECE, peak RSS and cold
start (load + first route), as a table and as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("router", "stepwise", "greedy", "naive", "naive-lora", "gbnf")


def _registry(args: argparse.Namespace) -> Any:
    from intentkit import Router
    from intentkit.demo import SmartHome
    from trainers.data import build_registry, load_records

    if args.registry_from:
        return build_registry(load_records(args.registry_from))
    router = Router()
    SmartHome().register(router)
    return router.registry


def _gbnf(registry: Any) -> str:
    """A GBNF grammar of the registered calls (the one ``OpenAIBackend(structured="grammar")`` sends)."""
    from intentkit.backends.openai import call_gbnf

    return call_gbnf(registry.catalog)


def _model_files(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(base GGUF, adapter GGUF, model directory); the default base is the one Router.default()
    runs (vocabulary trimmed for the bundled adapter). The derived files are built here once, so
    that no mode's cold start includes building them."""
    from intentkit.backends.llamacpp.bundled import bundled_adapter_gguf, bundled_model_dir, deployment_base, merged_model_path

    model_dir = Path(args.adapter) if args.adapter else bundled_model_dir()
    if model_dir.suffix == ".gguf":
        model_dir, adapter = model_dir.parent, model_dir
    else:
        adapter = model_dir / "adapter.gguf" if (model_dir / "adapter.gguf").is_file() else bundled_adapter_gguf()
    base = Path(args.base) if args.base else deployment_base(model_dir)
    if args.merge:
        merged_model_path(base, adapter)
    return base, adapter, model_dir


def _peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` rather than ``ru_maxrss``, which Linux carries over
    ``execve`` from the parent (the one that built the merged model)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    from intentkit import PromptFormat, Router
    from intentkit.backends.base import Generation
    from intentkit.backends.llamacpp.bundled import merged_model_path
    from intentkit.model_dir import ModelInfo
    from trainers.data import load_records
    from trainers.evaluate import evaluate

    records = load_records(args.data)[: args.limit or None]
    base, lora, model_dir = _model_files(args)
    registry = _registry(args)
    prompt_ms: list[float] = []
    started = time.perf_counter()
    evaluations: list[int] = []
    if args.mode in ("router", "stepwise", "greedy"):
        from intentkit.backends.llamacpp import LlamaCppBackend

        backend = LlamaCppBackend(
            base,
            adapter=lora,
            model_dir=model_dir,
            n_threads=args.threads,
            constrained=args.mode != "greedy",
            merge_adapter=args.merge,
            scope="auto" if args.scope else None,
            drafts=(args.drafts or "auto") if args.mode == "router" else None,
        )
        router = Router(backend, registry=registry, fast_path=False)
        generate = backend.generate

        def timed_generate(request: Any) -> Generation:  # keeps the prompt-evaluation share of each request
            generation = generate(request)
            prompt_ms.append(generation.info["prompt_ms"])
            evaluations.append(generation.info.get("evaluations", 0))
            return generation

        backend.generate = timed_generate  # type: ignore[method-assign]

        def predict(text: str) -> Generation:
            result = router.handle(text)
            return Generation(result.raw_output or "", confidence=result.confidence)

    else:
        import llama_cpp

        prompt = ModelInfo.load(model_dir).prompt_format or PromptFormat()
        if args.merge and args.mode != "naive-lora":  # the very model file the router runs
            llm = llama_cpp.Llama(str(merged_model_path(base, lora)), n_ctx=512, n_threads=args.threads, verbose=False)
        else:
            llm = llama_cpp.Llama(str(base), lora_path=str(lora), n_ctx=512, n_threads=args.threads, verbose=False)
        grammar = llama_cpp.LlamaGrammar.from_string(_gbnf(registry), verbose=False) if args.mode == "gbnf" else None

        def predict(text: str) -> Generation:
            out = llm.create_completion(
                prompt.render(text), max_tokens=64, temperature=0.0, stop=[prompt.answer_end], grammar=grammar
            )
            return Generation(out["choices"][0]["text"])

    predict(records[0].instruction)
    cold_start = time.perf_counter() - started
    report = evaluate(records, predict)
    return {
        "mode": args.mode,
        "n": report.n,
        "p50_ms": report.latency_p50_ms,
        "p95_ms": report.latency_p95_ms,
        "intent_accuracy": report.intent_accuracy,
        "exact_call_accuracy": report.exact_call_accuracy,
        "argument_accuracy": report.argument_accuracy,
        "slot_f1": report.slot_f1,
        "oos_f1": (report.out_of_scope or {}).get("f1"),
        "ece": report.ece,
        "peak_rss_mb": _peak_rss_mb(),
        "cold_start_s": cold_start,
        # Evaluating the prompt's new tokens (the utterance and the turn markers), which every recipe
        # pays; in ``router`` mode with a drafted call's tokens in the same batch.
        "prompt_p50_ms": statistics.median(prompt_ms[1:]) if len(prompt_ms) > 1 else None,
        "evaluations_mean": statistics.mean(evaluations[1:]) if len(evaluations) > 1 else None,
        "errors": report.errors[:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "examples" / "demo" / "dev.jsonl"), help="datasets-format JSONL")
    parser.add_argument(
        "--base", help="base GGUF (default: gemma-3-270m Q4_K_M, vocabulary-trimmed when the adapter ships keep_tokens.npy)"
    )
    parser.add_argument(
        "--adapter", "--lora", help="a model directory or its GGUF LoRA adapter (default: the bundled models/smart-home)"
    )
    parser.add_argument("--registry-from", help="derive the intents from this data file instead of the demo intents")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--limit", type=int, default=0, help="first N records only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--merge", action=argparse.BooleanOptionalAction, default=True, help="merge the adapter into the weights (default)"
    )
    parser.add_argument(
        "--scope",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="router/greedy: use the adapter directory's out-of-scope detector (scope.npz) when it has one (default)",
    )
    parser.add_argument("--drafts", help="router: draft calls from this drafts.jsonl (default: the adapter directory's)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args), ensure_ascii=False))
        return
    _model_files(args)
    results = {}
    for mode in args.modes.split(","):
        command = [sys.executable, __file__, "--mode", mode, "--data", args.data, "--threads", str(args.threads)]
        command.append("--merge" if args.merge else "--no-merge")
        command.append("--scope" if args.scope else "--no-scope")
        for flag in ("base", "adapter", "registry_from", "limit", "drafts"):
            if getattr(args, flag):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"mode {mode} failed:\n{done.stderr[-3000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{mode}: done", file=sys.stderr)
    naive = results.get("naive", {}).get("p50_ms")
    header = "| mode | n | p50 ms | p95 ms | × naive p50 | intent acc | exact call | OOS F1 | ECE | peak RSS MB | cold start s |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for mode, r in results.items():
        ratio = f"{r['p50_ms'] / naive:.2f}" if naive else "—"
        oos = f"{r['oos_f1']:.3f}" if r["oos_f1"] is not None else "—"
        ece = f"{r['ece']:.3f}" if r["ece"] is not None else "—"
        print(
            f"| {mode} | {r['n']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {ratio} | {r['intent_accuracy']:.2%} | "
            f"{r['exact_call_accuracy']:.2%} | {oos} | {ece} | {r['peak_rss_mb']:.0f} | {r['cold_start_s']:.2f} |"
        )
    for mode, r in results.items():
        if r.get("prompt_p50_ms") is not None:
            share = f" = {r['prompt_p50_ms'] / naive:.2f} × naive p50" if naive else ""
            print(
                f"{mode}: prompt evaluation p50 {r['prompt_p50_ms']:.1f} ms{share}; "
                f"{r['evaluations_mean']:.2f} evaluations after it per request"
            )
    floor = results.get("stepwise", {}).get("prompt_p50_ms")  # the prompt alone, no draft in its batch
    for mode in ("router", "stepwise"):
        if floor and mode in results:
            print(f"{mode}: p50 = {results[mode]['p50_ms'] / floor:.2f} × the prompt's own evaluation (stepwise prompt p50)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
