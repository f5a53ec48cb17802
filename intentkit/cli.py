"""The ``intentkit`` command (``pip install 'intentkit-router[cli]'``).

    intentkit route "我想听音乐"            route one utterance with the embedded default model
    intentkit chat                          interactive, multi-turn
    intentkit serve --port 8000             HTTP service (route API + OpenAI-compatible)
    intentkit train train.jsonl --dev dev.jsonl --out runs/mine
    intentkit eval dev.jsonl --lora runs/mine/adapter.gguf --intents-from train.jsonl
    intentkit data validate|convert|augment ...
    intentkit bench dev.jsonl               latency and accuracy of the configured router

User mistakes (a bad path, bad JSON, an unknown model) print one line and a hint, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .errors import IntentKitError, MissingDependencyError
from .router import Router, RouteResult

app = typer.Typer(help="intentkit: utterance in, validated function call out.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Training data: validate, convert, augment.", no_args_is_help=True)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., Any])

Model = Annotated[Path | None, typer.Option("--model", "-m", help="base GGUF (default: bundled gemma-3-270m)")]
Lora = Annotated[Path | None, typer.Option(help="GGUF LoRA adapter (default: the bundled smart-home adapter)")]
IntentsFrom = Annotated[
    Path | None, typer.Option(help="derive the intents from this data file (default: the demo smart-home intents)")
]
Backend = Annotated[str, typer.Option(help="llamacpp | openai | hf")]
BaseUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (--backend openai)")]
ApiModel = Annotated[str | None, typer.Option(help="model name on the OpenAI-compatible server")]
Threshold = Annotated[float | None, typer.Option(help="confidence threshold (low_confidence below it)")]

_HINTS = {
    "DataError": "fix the record at the place shown, then run again",
    "FileNotFoundError": "check the path",
    "MissingDependencyError": "install the extra named above",
    "JSONDecodeError": "the file is not valid JSON",
    "ValidationError": "check the option values",
}


def _friendly(fn: F) -> F:
    """Turn user mistakes into one line plus a hint (exit code 2)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (IntentKitError, OSError, ValueError) as exc:
            kind = type(exc).__name__
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            bases = {c.__name__ for c in type(exc).__mro__}
            hint = _HINTS.get(kind) or next((h for k, h in _HINTS.items() if k in bases), "see --help for the options")
            if "no such file" in str(exc) or "not found" in str(exc):
                hint = _HINTS["FileNotFoundError"]
            typer.secho(f"hint: {hint}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def build_router(
    *,
    model: Path | None = None,
    lora: Path | None = None,
    intents_from: Path | None = None,
    backend: str = "llamacpp",
    base_url: str | None = None,
    api_key: str | None = None,
    api_model: str | None = None,
    threshold: float | None = None,
    **extra: Any,
) -> Router:
    """The router the CLI options describe (``extra``: more :class:`RouterConfig` fields)."""
    settings: dict[str, Any] = {"confidence_threshold": threshold, **extra}
    if backend == "llamacpp" and model is None and lora is None and intents_from is None:
        return Router.default(**settings)
    factories: dict[str, Callable[[], Any]] = {
        "llamacpp": lambda: _llamacpp(model, lora),
        "openai": lambda: _openai(base_url, api_key, api_model),
        "hf": lambda: _hf(model, lora),
    }
    if backend not in factories:
        raise ValueError(f"unknown backend {backend!r}; backends: {', '.join(factories)}")
    made = factories[backend]()
    router = Router(made, prompt=getattr(made, "prompt", None), **settings)
    if intents_from is not None:
        from trainers.data import build_registry, load_records

        router.registry = build_registry(load_records(intents_from))
    else:
        from .demo import SmartHome

        SmartHome().register(router)
    return router


_ROUTER_OPTIONS = ("model", "lora", "intents_from", "backend", "base_url", "api_model", "threshold")


def router_from(options: dict[str, Any], **extra: Any) -> Router:
    """:func:`build_router` from a command's option values (its ``locals()``)."""
    return build_router(**{k: options[k] for k in _ROUTER_OPTIONS if k in options}, **extra)


def _llamacpp(model: Path | None, lora: Path | None, **kwargs: Any) -> Any:
    """A base (default: the one ``lora``'s directory deploys on) with the adapter merged in, built
    once into the cache. ``--model`` alone: a GGUF that ``intentkit export`` wrote (a full
    fine-tune's ``model.gguf`` or a merged adapter, with ``intentkit.json`` beside it) runs as it
    is; any other GGUF gets the bundled adapter."""
    from .backends.llamacpp import LlamaCppBackend
    from .bundled import META_FILE, bundled_model_dir, deployment_base

    if model is not None and lora is None and (model.parent / META_FILE).is_file():
        return LlamaCppBackend(model, **kwargs)
    lora = lora or bundled_model_dir() / "adapter.gguf"
    if not lora.is_file():
        raise FileNotFoundError(f"LoRA adapter not found: {lora}")
    return LlamaCppBackend(model or deployment_base(lora.parent), lora=lora, merge_lora=True, **kwargs)


def _openai(base_url: str | None, api_key: str | None, api_model: str | None) -> Any:
    from .backends.openai import OpenAIBackend

    if not base_url or not api_model:
        raise ValueError("--backend openai needs --base-url and --api-model")
    return OpenAIBackend(base_url, model=api_model, api_key=api_key or os.environ.get("OPENAI_API_KEY"))


def _hf(model: Path | None, lora: Path | None) -> Any:
    from .backends.transformers import TransformersBackend

    if model is None:
        raise ValueError("--backend hf needs --model (an HF model directory or a .gguf file)")
    return TransformersBackend(model, adapter=lora)


def _show(result: RouteResult) -> None:
    confidence = f"{result.confidence:.2f}" if result.confidence is not None else "—"
    color = typer.colors.GREEN if result.ok else typer.colors.YELLOW
    typer.secho(f"{result.call_text}", fg=color, bold=True, nl=False)
    typer.echo(f"   [{result.status.value}, confidence {confidence}, {result.timings.total_ms:.0f} ms, {result.path.value}]")
    for value in result.results:
        typer.echo(f"  → {value}")
    for error in result.errors:
        typer.secho(f"  ! {type(error).__name__}: {error}", fg=typer.colors.RED)


@app.command()
@_friendly
def route(
    texts: Annotated[list[str], typer.Argument(help="utterances to route")],
    model: Model = None,
    lora: Lora = None,
    intents_from: IntentsFrom = None,
    backend: Backend = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    threshold: Threshold = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the RouteResult as JSON")] = False,
) -> None:
    """Route utterances and run the handlers."""
    with router_from(locals()) as router:
        for text in texts:
            result = router.handle(text)
            if as_json:
                typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
            else:
                typer.echo(f"{text}")
                _show(result)


@app.command()
@_friendly
def chat(
    model: Model = None,
    lora: Lora = None,
    intents_from: IntentsFrom = None,
    backend: Backend = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    turns: Annotated[int, typer.Option(help="earlier turns joined with the new one")] = 2,
) -> None:
    """Interactive multi-turn routing (empty line or Ctrl-D to quit)."""
    with router_from(locals()) as router:
        session = router.session(max_turns=turns)
        typer.echo("say something (empty line to quit)")
        while True:
            try:
                text = input("> ").strip()
            except EOFError:
                break
            if not text:
                break
            _show(router.handle(text, session=session))


@app.command()
@_friendly
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    token: Annotated[str | None, typer.Option(envvar="INTENTKIT_TOKEN", help="bearer token required on /v1")] = None,
    max_body: Annotated[int, typer.Option(help="largest request body in bytes")] = 64 * 1024,
    model_name: Annotated[str, typer.Option(help="the model id /v1/models lists")] = "intentkit",
    model: Model = None,
    lora: Lora = None,
    intents_from: IntentsFrom = None,
    backend: Backend = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    threshold: Threshold = None,
) -> None:
    """Serve the route API and OpenAI-compatible endpoints with uvicorn."""
    try:
        import uvicorn

        from .server import create_app
    except ImportError:
        raise MissingDependencyError("fastapi/uvicorn", "server") from None
    router = router_from(locals())
    with router:
        uvicorn.run(create_app(router, token=token, max_body_bytes=max_body, model_name=model_name), host=host, port=port)


@app.command()
@_friendly
def train(
    data: Annotated[Path, typer.Argument(help="training data (seed or datasets format, JSON or JSONL)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    dev: Annotated[Path | None, typer.Option(help="dev data for early stopping")] = None,
    base: Annotated[str, typer.Option(help="'default', an HF model dir or a .gguf file")] = "default",
    method: Annotated[str, typer.Option(help="lora | qlora | full")] = "lora",
    epochs: float = 2.0,
    learning_rate: float = 3e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    lora_r: int = 16,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA scaling numerator (default: 2 × lora-r)")] = None,
    lora_dropout: float = 0.05,
    warmup_ratio: Annotated[float, typer.Option(help="share of the steps the learning rate warms up over")] = 0.05,
    max_length: Annotated[
        int | None, typer.Option(help="tokens per example (default: next power of two over the longest)")
    ] = None,
    seed: int = 42,
    patience: Annotated[int | None, typer.Option(help="stop after N dev evaluations without improvement")] = None,
    eval_every: Annotated[int | None, typer.Option(help="steps between dev evaluations")] = None,
    save_every: Annotated[
        int | None,
        typer.Option(help="steps between resumable checkpoints (Ctrl-C also saves one; the same command resumes)"),
    ] = None,
    select_on: Annotated[
        str, typer.Option(help="loss | exact: keep the weights with the lowest dev loss or the highest dev exact match")
    ] = "loss",
    share_prefix: Annotated[
        bool, typer.Option(help="evaluate a batch's common prompt prefix once (off: for a base whose cache cannot be batched)")
    ] = True,
    argument_order: Annotated[
        str,
        typer.Option(help="utterance | as_given: train on answers whose keyword arguments follow the utterance's order"),
    ] = "as_given",
    export: Annotated[bool, typer.Option(help="also write adapter.gguf for llama.cpp")] = True,
    scope: Annotated[
        bool | None,
        typer.Option(help="fit the out-of-scope detector after export (default: when the data has no out-of-scope rows)"),
    ] = None,
) -> None:
    """Fine-tune a routing model (LoRA by default) and export it for llama.cpp."""
    from trainers.data import load_records
    from trainers.export import export_full_gguf, export_gguf_lora
    from trainers.train import TrainConfig
    from trainers.train import train as run_train

    config = TrainConfig(
        base=base,
        method=method,  # type: ignore[arg-type]
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lora_r=lora_r,
        lora_alpha=lora_alpha or 2 * lora_r,
        lora_dropout=lora_dropout,
        warmup_ratio=warmup_ratio,
        max_length=max_length,
        seed=seed,
        patience=patience,
        eval_every=eval_every,
        save_every=save_every,
        select_on=select_on,  # type: ignore[arg-type]
        share_prefix=share_prefix,
        argument_order=argument_order,  # type: ignore[arg-type]
    )
    records = load_records(data)
    dev_records = load_records(dev) if dev else []
    try:
        result = run_train(records, out, config, dev=dev_records)
    except KeyboardInterrupt as stopped:
        typer.secho(f"interrupted: {stopped}" if str(stopped) else "interrupted", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
    typer.echo(f"trained {result.steps} steps{resumed}, {result.tokens_per_second:.0f} tokens/s")
    if result.kept:
        typer.echo(
            f"kept the weights of step {result.kept['step']}: dev loss {result.kept['dev_loss']:.4f}, "
            f"exact match {result.kept['dev_exact']:.2%}"
        )
    from_gguf = base == "default" or base.endswith(".gguf")
    if export and method == "full" and not from_gguf:
        typer.echo(
            f"llama.cpp model: not exported (a full fine-tune is written over the GGUF it started from; convert {base} "
            f"to GGUF with llama.cpp's convert_hf_to_gguf.py, then intentkit export {out} --base BASE.gguf)"
        )
    elif export:
        if method == "full":
            typer.echo(f"llama.cpp model: {export_full_gguf(out)}")
        else:
            typer.echo(f"llama.cpp adapter: {export_gguf_lora(out)}")
        if scope if scope is not None else all(r.calls for r in records):
            if from_gguf:
                from .scope import DEFAULT_CONFIDENCE_WEIGHT, DEFAULT_QUANTILE

                base_gguf = None if base == "default" else Path(base)
                _fit_scope(out, base_gguf, records, dev_records, DEFAULT_QUANTILE, DEFAULT_CONFIDENCE_WEIGHT)
            else:
                typer.echo(
                    f"out-of-scope detector: not fitted (it runs on the llama.cpp deployment; convert {base} to GGUF, then "
                    f"intentkit export {out} --base BASE.gguf --scope-from {data})"
                )


def _fit_scope(
    model_dir: Path, base: Path | None, records: list[Any], calibration: list[Any], quantile: float, confidence_weight: float
) -> None:
    """Fit ``model_dir/scope.npz`` through the llama.cpp deployment of ``model_dir``'s adapter."""
    from rich.progress import Progress

    from trainers.card import write_model_card
    from trainers.scope import fit_scope

    from .scope import SCOPE_FILE

    full = model_dir / "model.gguf"
    deployed = (
        _llamacpp(full, None, scope=None) if _is_full(model_dir) else _llamacpp(base, model_dir / "adapter.gguf", scope=None)
    )
    with deployed as backend, Progress(transient=True) as progress:
        task = progress.add_task("out-of-scope detector: hidden states", total=None)
        detector = fit_scope(
            backend,
            records,
            calibration=calibration,
            quantile=quantile,
            confidence_weight=confidence_weight,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    path = detector.save(model_dir / SCOPE_FILE)
    write_model_card(model_dir)
    typer.echo(
        f"out-of-scope detector: {path} ({detector.info['indexed']} utterances, "
        f"threshold {detector.threshold:.4f} from {detector.info['calibrated_on']})"
    )


@app.command()
@_friendly
def export(
    model_dir: Annotated[Path, typer.Argument(help="a trained adapter directory (intentkit train --out)")],
    merged: Annotated[Path | None, typer.Option(help="also write one GGUF with the adapter merged in (8-bit)")] = None,
    base: Annotated[Path | None, typer.Option(help="base GGUF (default: bundled gemma-3-270m Q4_K_M)")] = None,
    vocabulary_from: Annotated[
        Path | None, typer.Option(help="training data: write keep_tokens.npy, the vocabulary the deployment is trimmed to")
    ] = None,
    scope_from: Annotated[
        Path | None, typer.Option(help="training data: fit the out-of-scope detector (scope.npz) on its utterances")
    ] = None,
    scope_calibrate: Annotated[
        Path | None, typer.Option(help="held-out data (dev) whose in-scope rows set the detector's threshold")
    ] = None,
    scope_quantile: Annotated[
        float, typer.Option(min=0.5, max=1.0, help="share of held-out in-scope utterances the threshold keeps in scope")
    ] = 0.975,
    scope_confidence_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="weight of the model's intent confidence beside the distance (needs --scope-calibrate; 0: distance only)",
        ),
    ] = 0.5,
) -> None:
    """Export a trained adapter for llama.cpp: adapter.gguf, and optionally a merged, quantized GGUF,
    a trimmed vocabulary and an out-of-scope detector."""
    from trainers.data import load_records
    from trainers.export import export_full_gguf, export_gguf_lora, export_merged_gguf, write_vocabulary

    if vocabulary_from is not None:
        import numpy as np

        keep = write_vocabulary(model_dir, load_records(vocabulary_from), base=base)
        typer.echo(f"vocabulary: {keep} ({len(np.load(keep)):,} tokens)")
    if _is_full(model_dir):
        typer.echo(f"llama.cpp model: {export_full_gguf(model_dir, base=base)}")
    else:
        typer.echo(f"llama.cpp adapter: {export_gguf_lora(model_dir)}")
    if scope_from is not None:
        calibration = load_records(scope_calibrate) if scope_calibrate else []
        _fit_scope(model_dir, base, load_records(scope_from), calibration, scope_quantile, scope_confidence_weight)
    if merged is not None:
        typer.echo(f"merged model: {export_merged_gguf(model_dir, merged, base=base)}")


def _is_full(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a full fine-tune (deployed as ``model.gguf``, not an adapter)."""
    from .bundled import read_model_meta

    return read_model_meta(model_dir).get("method") == "full"


@app.command("eval")
@_friendly
def evaluate_command(
    data: Annotated[Path, typer.Argument(help="a file in the datasets format")],
    model: Model = None,
    lora: Lora = None,
    intents_from: IntentsFrom = None,
    backend: Backend = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    out: Annotated[Path | None, typer.Option(help="write report.json / report.md / confusion.png here")] = None,
    limit: Annotated[int, typer.Option(min=0, help="first N records only (0: all)")] = 0,
) -> None:
    """Intent / argument / exact-call accuracy, slot F1, OOS, calibration and latency on a data file."""
    from rich.progress import Progress

    from trainers.data import load_records
    from trainers.evaluate import backend_predictor, evaluate

    records = load_records(data)[: limit or None]
    with router_from(locals()) as router:
        assert router.backend is not None
        predict = backend_predictor(router.backend, router.registry, router.prompt)
        with Progress(transient=True) as progress:
            task = progress.add_task("evaluating", total=len(records))
            report = evaluate(records, predict, progress=lambda done, total: progress.update(task, completed=done))
    typer.echo(report.summary())
    if out:
        for path in report.save(out):
            typer.echo(f"wrote {path}")
        from trainers.card import write_model_card

        card = write_model_card(out.parent)  # a report saved into a model directory joins its card
        if card is not None:
            typer.echo(f"updated {card}")


@app.command()
@_friendly
def bench(
    data: Annotated[Path, typer.Argument(help="utterances (datasets format)")],
    model: Model = None,
    lora: Lora = None,
    intents_from: IntentsFrom = None,
    backend: Backend = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    limit: Annotated[int, typer.Option(min=0, help="first N utterances only (0: all)")] = 200,
) -> None:
    """Latency of Router.handle over a data file (model path only; fast path off)."""
    from trainers.data import load_records

    texts = [r.instruction for r in load_records(data)][: limit or None]
    started = time.perf_counter()
    with router_from(locals(), fast_path=False) as router:
        router.handle(texts[0], dispatch=False)
        cold = time.perf_counter() - started
        latencies = []
        for text in texts:
            result = router.handle(text, dispatch=False)
            latencies.append(result.timings.total_ms)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    typer.echo(
        f"{len(latencies)} utterances: p50 {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms, "
        f"mean {statistics.fmean(latencies):.1f} ms, cold start {cold:.2f} s"
    )


@data_app.command("validate")
@_friendly
def data_validate(
    data: Path,
    dev: Annotated[Path | None, typer.Option(help="dev file, checked for leakage")] = None,
    intents_from: IntentsFrom = None,
    min_per_intent: int = 50,
) -> None:
    """Counts per intent, imbalance, duplicates, conflicts, leakage and calls that do not bind."""
    from trainers.data import DataError, build_registry, load_records, validate_records

    problems: list[DataError] = []  # every row that does not load, reported with the rest
    records = load_records(data, problems=problems)
    registry = build_registry(load_records(intents_from)) if intents_from else None
    dev_records = load_records(dev, problems=problems) if dev else []
    report = validate_records(records, registry=registry, dev=dev_records, min_per_intent=min_per_intent, unreadable=problems)
    typer.echo(report.summary())
    if report.errors:
        raise typer.Exit(1)


@data_app.command("convert")
@_friendly
def data_convert(
    source: Path,
    target: Path,
    from_format: Annotated[str, typer.Option("--from", help="itag | alpaca | sharegpt | dialogue | jsonl")] = "jsonl",
    to_format: Annotated[str, typer.Option("--to", help="jsonl | alpaca | sharegpt")] = "jsonl",
) -> None:
    """Convert between intentkit's format and iTAG, LLaMA-Factory alpaca/sharegpt and dialogue records."""
    from trainers.convert import export_rows, import_rows
    from trainers.data import load_records, records_from_rows

    records = load_records(source) if from_format == "jsonl" else records_from_rows(import_rows(source, from_format))
    path = export_rows(records, target, to_format)
    typer.echo(f"wrote {len(records)} records to {path}")


@data_app.command("augment")
@_friendly
def data_augment(
    templates: Path,
    train_out: Annotated[Path, typer.Option("--train", help="where to write the training rows")],
    dev_out: Annotated[Path | None, typer.Option("--dev", help="where to write the held-out-template rows")] = None,
    per_intent: int = 80,
    dev_per_intent: int = 12,
    seed: int = 0,
) -> None:
    """Expand a template file (``帮我查{city}{date}的天气`` + slot values) into training data."""
    from trainers.augment import augment, load_templates

    out = augment(load_templates(templates), per_intent=per_intent, dev_per_intent=dev_per_intent, seed=seed)
    out.write(train_out, dev_out)
    typer.echo(
        f"wrote {len(out.train)} train rows to {train_out}" + (f", {len(out.dev)} dev rows to {dev_out}" if dev_out else "")
    )


@data_app.command("swap")
@_friendly
def data_swap(
    data: Path,
    out: Annotated[Path, typer.Option(help="where to write the rows and their recombined copies (JSONL)")],
    copies: Annotated[int, typer.Option(min=1, help="recombined copies per row")] = 1,
    seed: int = 0,
) -> None:
    """Add copies of each row with its slot values swapped for values the same parameter takes
    elsewhere in the file (``播放安徽卫视高清`` → ``播放长沙经贸台高清``)."""
    from trainers.augment import swap_values
    from trainers.convert import export_rows
    from trainers.data import load_records

    records = load_records(data)
    extra = swap_values(records, copies=copies, seed=seed)
    export_rows([*records, *extra], out, "jsonl")
    typer.echo(f"wrote {len(records)} rows and {len(extra)} recombined copies to {out}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
