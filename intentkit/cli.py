"""The ``intentkit`` command (``pip install 'intentkit-router[cli]'``).

    intentkit route "我想听音乐"            route one utterance with the embedded default model
    intentkit chat                          interactive, multi-turn
    intentkit serve --port 8000             HTTP service (route API + OpenAI-compatible)
    intentkit train train.jsonl --dev dev.jsonl --out runs/mine
    intentkit eval dev.jsonl --model runs/mine --intents-from train.jsonl
    intentkit data validate|convert|augment|label ...
    intentkit feedback export --log sqlite:///intentkit.db --out corrections.jsonl
    intentkit bench dev.jsonl               latency and accuracy of the configured router

User mistakes (a bad path, bad JSON, an unknown model) print one line and a hint, never a traceback.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
import typer

from trainers.config import DEFAULT_HOLDOUT, DEFAULT_HOLDOUT_SEED, TrainConfig

from .backends.factory import load_backend
from .errors import (
    BackendError,
    ConfigError,
    DataError,
    ExportError,
    IntentKitError,
    MissingDependencyError,
    ModelDirError,
    RegistryError,
    ScopeFileError,
)
from .router import Router, RouteResult

app = typer.Typer(help="intentkit: utterance in, validated function call out.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Training data: validate, convert, augment.", no_args_is_help=True)
app.add_typer(data_app, name="data")
ha_app = typer.Typer(help="Home Assistant: the home file and training data.", no_args_is_help=True)
app.add_typer(ha_app, name="ha")
feedback_app = typer.Typer(help="The request log: corrections and votes back out as training data.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")

F = TypeVar("F", bound=Callable[..., Any])

Model = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="a model directory (intentkit train --out), an exported GGUF, or a base GGUF"),
]
Adapter = Annotated[
    Path | None, typer.Option("--adapter", "--lora", help="an adapter: a model directory or a GGUF LoRA (llama.cpp)")
]
IntentsFrom = Annotated[
    Path | None, typer.Option(help="derive the intents from this data file (default: the demo smart-home intents)")
]
HomeFile = Annotated[
    Path | None, typer.Option("--home", help="a home file (YAML/JSON): route to Home Assistant's intents for its names")
]
BackendName = Annotated[str, typer.Option("--backend", help="llamacpp | transformers (hf) | openai")]
BaseUrl = Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (--backend openai)")]
ApiModel = Annotated[str | None, typer.Option(help="model name on the OpenAI-compatible server")]
ApiKey = Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY", help="API key of the OpenAI-compatible server")]
ApiMode = Annotated[
    str, typer.Option(help="chat (/chat/completions) | completions (/completions with intentkit's own rendered prompt)")
]
Threshold = Annotated[float | None, typer.Option(help="confidence threshold (low_confidence below it)")]

#: What to do about each kind of user mistake; the most specific class that matches wins.
HINTS: dict[type[BaseException], str] = {
    DataError: "fix the record at the place shown, then run again",
    ModelDirError: "check the model directory (intentkit train --out writes one)",
    ScopeFileError: "fit the detector again: intentkit export DIR --scope-from TRAIN.jsonl",
    ExportError: "see the message for what the exporter supports",
    MissingDependencyError: "install the extra named above",
    ConfigError: "check the options (see --help)",
    BackendError: "check that the model or server named is the right one and is reachable",
    RegistryError: "check the intents the data file implies (intentkit data validate)",
    FileNotFoundError: "check the path",
    IsADirectoryError: "give a file, not a directory",
    PermissionError: "check the file's permissions",
    pydantic.ValidationError: "check the option values",
}


def hint_for(exc: BaseException) -> str:
    """The hint for ``exc``: that of the nearest class in its MRO that :data:`HINTS` names."""
    return next((HINTS[c] for c in type(exc).__mro__ if c in HINTS), "see --help for the options")


def _friendly(fn: F) -> F:
    """Turn user mistakes (intentkit's errors, files that cannot be read, option values that do
    not validate) into one line plus a hint (exit code 2). Anything else is a bug and keeps its
    traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (IntentKitError, OSError, pydantic.ValidationError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            typer.secho(f"hint: {hint_for(exc)}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def build_router(
    *,
    model: Path | None = None,
    adapter: Path | None = None,
    intents_from: Path | None = None,
    home: Path | None = None,
    backend: str = "llamacpp",
    base_url: str | None = None,
    api_key: str | None = None,
    api_model: str | None = None,
    api_mode: str = "chat",
    threshold: float | None = None,
    parallel: int | None = None,
    **extra: Any,
) -> Router:
    """The router the CLI options describe (``extra``: more :class:`RouterConfig` fields): the
    backend from :func:`~intentkit.backends.load_backend`, the intents from ``intents_from`` (a
    data file), ``home`` (Home Assistant's intents over a home file) or the demo's handlers;
    ``parallel``: requests the llama.cpp backend evaluates together."""
    registry = None
    if intents_from is not None and home is not None:
        raise ConfigError("give --intents-from or --home, not both")
    if parallel is not None and backend not in ("llamacpp", "llama.cpp"):
        raise ConfigError(f"--parallel is for the llama.cpp backend (the {backend} backend batches on its own server)")
    if home is not None:
        from .homeassistant import Home, registry_for

        the_home = Home.load(home)
        registry = registry_for(the_home)
        if backend == "llamacpp":
            model = _home_assistant_model(model, adapter, the_home.language)
    elif intents_from is not None:
        from trainers.data import build_registry, load_records

        registry = build_registry(load_records(intents_from))
    elif backend != "openai" and (model or adapter) is not None:
        registry = _registry_of_model(Path(model or adapter))  # type: ignore[arg-type]
    options: dict[str, Any] = {"mode": api_mode} if backend == "openai" else {}
    if parallel is not None:
        options["parallel"] = parallel
    made = load_backend(backend, model=model, adapter=adapter, base_url=base_url, api_key=api_key, api_model=api_model, **options)
    try:
        router = Router(made, registry=registry, confidence_threshold=threshold, **extra)
        if registry is None:
            from .demo import SmartHome

            SmartHome().register(router)
    except BaseException:
        made.close()
        raise
    return router


def _registry_of_model(path: Path) -> Any:
    """The intents of a trained model that the demo's handlers do not cover, derived from the
    training rows its directory keeps (``drafts.jsonl``); ``None`` where the demo's handlers do
    (the bundled model, or one trained on the demo's data). A model answering other intents with
    no rows to derive them from is an error: routed through the demo's handlers, every answer
    would be turned away."""
    from trainers.data import build_registry, load_records

    from .backends.fake import FakeBackend
    from .calls import NO_INTENT
    from .demo import SmartHome
    from .drafts import DRAFTS_FILE
    from .model_dir import ModelInfo

    directory = path if path.is_dir() else path.parent
    intents = set(ModelInfo.load(directory).intents) - {NO_INTENT}
    demo = SmartHome().register(Router(FakeBackend([]))).registry
    unknown = sorted(name for name in intents if name not in demo)
    if not unknown:
        return None
    if (directory / DRAFTS_FILE).is_file():
        return build_registry(load_records(directory / DRAFTS_FILE))
    raise ConfigError(
        f"{directory} answers {len(unknown)} intents the demo's handlers do not register ({', '.join(unknown[:4])}"
        f"{' …' if len(unknown) > 4 else ''}): pass --intents-from with its training data"
    )


def _home_assistant_model(model: Path | None, adapter: Path | None, language: str) -> Path | None:
    """``model``, or the bundled Home Assistant model of ``language`` when neither a model nor an
    adapter is given: ``home-assistant`` (zh-CN, zh-TW) or ``home-assistant-en``."""
    if model is not None or adapter is not None:
        return model
    from .backends.llamacpp.bundled import bundled_model_dir
    from .homeassistant.package import bundled_model_name

    name = bundled_model_name(language)
    if name is None:
        typer.echo(
            f"no bundled Home Assistant model for {language}: routing with the Chinese one "
            "(train one: intentkit ha data --language ... ; intentkit train ...)",
            err=True,
        )
    return bundled_model_dir(name or "home-assistant")


#: Requests ``intentkit serve`` evaluates together by default (llama.cpp): 1.3x the throughput of
#: one at a time at concurrency 4 and more on 2 cores, the same latency at concurrency 1.
SERVE_PARALLEL = 4

_ROUTER_OPTIONS = (
    "model",
    "adapter",
    "intents_from",
    "home",
    "backend",
    "base_url",
    "api_key",
    "api_model",
    "api_mode",
    "threshold",
    "parallel",
)


def router_from(options: dict[str, Any], **extra: Any) -> Router:
    """:func:`build_router` from a command's option values (its ``locals()``)."""
    return build_router(**{k: options[k] for k in _ROUTER_OPTIONS if k in options}, **extra)


def _show(result: RouteResult) -> None:
    confidence = f"{result.confidence:.2f}" if result.confidence is not None else "—"
    color = typer.colors.GREEN if result.ok else typer.colors.YELLOW
    typer.secho(f"{result.call_text}", fg=color, bold=True, nl=False)
    typer.echo(f"   [{result.status.value}, confidence {confidence}, {result.timings.total_ms:.0f} ms, {result.path.value}]")
    for value in result.results:
        typer.echo(f"  → {value}")
    if result.prompt:
        missing = f" (missing: {', '.join(result.missing)})" if result.missing else ""
        typer.secho(f"  ? {result.prompt}{missing}", fg=typer.colors.CYAN)
    for error in result.errors:
        typer.secho(f"  ! {type(error).__name__}: {error}", fg=typer.colors.RED)


@app.command()
@_friendly
def route(
    texts: Annotated[list[str], typer.Argument(help="utterances to route")],
    model: Model = None,
    adapter: Adapter = None,
    intents_from: IntentsFrom = None,
    home: HomeFile = None,
    backend: BackendName = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    api_mode: ApiMode = "chat",
    api_key: ApiKey = None,
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
    adapter: Adapter = None,
    intents_from: IntentsFrom = None,
    home: HomeFile = None,
    backend: BackendName = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    api_mode: ApiMode = "chat",
    api_key: ApiKey = None,
    turns: Annotated[int, typer.Option(help="earlier turns joined with the new one")] = 2,
) -> None:
    """Interactive multi-turn routing (empty line or Ctrl-D to quit): a call missing a value asks
    for it, a confirm= intent asks for a yes, 算了 / cancel calls off what is pending."""
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
    adapter: Adapter = None,
    intents_from: IntentsFrom = None,
    home: HomeFile = None,
    backend: BackendName = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    api_mode: ApiMode = "chat",
    api_key: ApiKey = None,
    threshold: Threshold = None,
    log: Annotated[
        str | None,
        typer.Option(help="keep a request log: sqlite:///intentkit.db or postgresql://user@host/db (off by default)"),
    ] = None,
    log_retention_days: Annotated[
        float | None, typer.Option(help="delete logged requests older than this without feedback")
    ] = None,
    review_threshold: Annotated[float, typer.Option(help="answers below this confidence join the review queue")] = 0.6,
    parallel: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"requests the llama.cpp model evaluates together, in one batch (default {SERVE_PARALLEL}; 1: one at a time)",
        ),
    ] = None,
) -> None:
    """Serve the route API and OpenAI-compatible endpoints with uvicorn (with --log: feedback and the review page)."""
    if parallel is None and backend in ("llamacpp", "llama.cpp"):
        parallel = SERVE_PARALLEL
    try:
        import uvicorn

        from .server import create_app
    except ImportError as exc:
        raise MissingDependencyError("uvicorn" if "uvicorn" in str(exc) else "fastapi") from None
    request_log = None
    if log is not None:
        from .feedback import RequestLog

        request_log = RequestLog(log, retention_days=log_retention_days)
    router = router_from(locals())
    try:
        with router:
            service = create_app(
                router,
                token=token,
                max_body_bytes=max_body,
                model_name=model_name,
                log=request_log,
                review_threshold=review_threshold,
            )
            uvicorn.run(service, host=host, port=port)
    finally:
        if request_log is not None:
            request_log.close()  # whatever is still queued is written before the process ends


def _default(name: str) -> Any:
    """``TrainConfig``'s default for a field: the one source of the training defaults."""
    return TrainConfig.model_fields[name].default


def _help(name: str) -> str:
    return TrainConfig.model_fields[name].description or ""


@app.command()
@_friendly
def train(
    data: Annotated[
        list[Path], typer.Argument(help="training data (seed or datasets format, JSON or JSONL); several files are joined")
    ],
    out: Annotated[Path, typer.Option(help="output directory")],
    dev: Annotated[
        Path | None,
        typer.Option(help="dev data, evaluated at the end: an estimate nothing was chosen on (with --holdout 0: chosen on)"),
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.5,
            help="share of the training rows held back to choose on (early stopping, the weights kept, the "
            "out-of-scope threshold); 0: choose on --dev",
        ),
    ] = DEFAULT_HOLDOUT,
    holdout_seed: Annotated[
        int,
        typer.Option(
            help="seed of the draw of held-back rows, apart from --seed: runs that differ only in --seed choose on the same rows"
        ),
    ] = DEFAULT_HOLDOUT_SEED,
    base: Annotated[str, typer.Option(help=_help("base"))] = _default("base"),
    method: Annotated[str, typer.Option(help="lora | qlora | full")] = _default("method"),
    epochs: float = _default("epochs"),
    learning_rate: float = _default("learning_rate"),
    batch_size: Annotated[int, typer.Option(help=_help("batch_size"))] = _default("batch_size"),
    grad_accum: Annotated[int, typer.Option(help=_help("grad_accum"))] = _default("grad_accum"),
    lora_r: Annotated[int, typer.Option(help=_help("lora_r"))] = _default("lora_r"),
    lora_alpha: Annotated[int | None, typer.Option(help=_help("lora_alpha"))] = _default("lora_alpha"),
    lora_dropout: float = _default("lora_dropout"),
    warmup_ratio: Annotated[float, typer.Option(help="share of the steps the learning rate warms up over")] = _default(
        "warmup_ratio"
    ),
    max_length: Annotated[int | None, typer.Option(help=_help("max_length"))] = _default("max_length"),
    seed: int = _default("seed"),
    patience: Annotated[int | None, typer.Option(help=_help("patience"))] = _default("patience"),
    eval_every: Annotated[int | None, typer.Option(help=_help("eval_every"))] = _default("eval_every"),
    save_every: Annotated[
        int | None,
        typer.Option(help="steps between resumable checkpoints (Ctrl-C also saves one; the same command resumes)"),
    ] = _default("save_every"),
    select_on: Annotated[
        str, typer.Option(help="loss | exact: keep the weights with the lowest dev loss or the highest dev exact match")
    ] = _default("select_on"),
    average_decay: Annotated[
        list[float] | None,
        typer.Option(help=_help("average_decays") + "; repeat the option for several"),
    ] = None,
    share_prefix: Annotated[bool, typer.Option(help=_help("share_prefix"))] = _default("share_prefix"),
    precision: Annotated[str, typer.Option(help=_help("precision"))] = _default("precision"),
    trimmed_head: Annotated[bool, typer.Option(help=_help("trimmed_head"))] = _default("trimmed_head"),
    argument_order: Annotated[
        str,
        typer.Option(help="utterance | as_given: train on answers whose keyword arguments follow the utterance's order"),
    ] = _default("argument_order"),
    init_from: Annotated[str | None, typer.Option(help=_help("init_from"))] = _default("init_from"),
    export: Annotated[bool, typer.Option(help="also write adapter.gguf for llama.cpp")] = True,
    trim_vocabulary: Annotated[
        bool, typer.Option(help="write keep_tokens.npy: the deployment runs on the data's vocabulary (GGUF bases)")
    ] = True,
    scope: Annotated[
        bool | None,
        typer.Option(help="fit the out-of-scope detector after export (default: when the data has no out-of-scope rows)"),
    ] = None,
) -> None:
    """Fine-tune a routing model (LoRA by default) and export it for llama.cpp."""
    from trainers.data import load_records
    from trainers.pipeline import build_model

    options = {name: value for name, value in locals().items() if name in TrainConfig.model_fields}
    if average_decay is not None:
        options["average_decays"] = average_decay
    config = TrainConfig.model_validate(options)
    records = [record for path in data for record in load_records(path)]
    dev_records = load_records(dev) if dev else []
    try:
        built = build_model(
            records,
            out,
            config,
            dev=dev_records,
            holdout=holdout,
            holdout_seed=holdout_seed,
            export=export,
            trim_vocabulary=trim_vocabulary,
            scope=scope,
            say=typer.echo,
        )
    except KeyboardInterrupt as stopped:
        typer.secho(f"interrupted: {stopped}" if str(stopped) else "interrupted", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    result = built.train
    resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
    typer.echo(f"trained {result.steps} steps{resumed}, {result.tokens_per_second:.0f} tokens/s")
    chosen_on = "held-back" if holdout and dev_records is not built.train_dev else "dev"
    if result.kept:
        typer.echo(
            f"kept the weights of step {result.kept['step']}"
            + (f" ({result.kept['weights']})" if "weights" in result.kept else "")
            + f": {chosen_on} loss {result.kept['dev_loss']:.4f}, "
            f"exact match {result.kept['dev_exact']:.2%}"
        )
    for note in built.notes:
        typer.echo(note)
    on_llama_cpp = config.base == "default" or config.base.endswith(".gguf")
    if dev_records and on_llama_cpp and built.exported is not None and built.train_dev is not dev_records:
        _report_dev(out, dev, dev_records, records)


def _report_dev(out: Path, dev: Path | None, dev_records: list[Any], records: list[Any]) -> None:
    """Evaluate the trained deployment on the dev file nothing was chosen on; the report joins
    the model card."""
    from intentkit.backends.llamacpp import LlamaCppBackend
    from trainers.card import write_model_card
    from trainers.data import build_registry

    typer.echo(f"evaluating on {dev} (nothing was chosen on it) …")
    with LlamaCppBackend.from_model_dir(out) as backend:
        registry = build_registry(records)
        report = _evaluate_with(backend, registry, dev_records)
    typer.echo(report.summary())
    report.save(out / f"eval-{Path(str(dev)).stem}")
    write_model_card(out)


@app.command()
@_friendly
def export(
    model_dir: Annotated[Path, typer.Argument(help="a trained model directory (intentkit train --out)")],
    merged: Annotated[Path | None, typer.Option(help="also write one GGUF with the adapter merged in (8-bit)")] = None,
    hf_merged: Annotated[
        Path | None, typer.Option(help="also write a merged Hugging Face checkpoint here (vLLM, TGI: safetensors, chat template)")
    ] = None,
    ollama: Annotated[Path | None, typer.Option(help="also write model.gguf and a Modelfile for Ollama here")] = None,
    base: Annotated[Path | None, typer.Option(help="base GGUF (default: the one the model was trained from)")] = None,
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
    """Export a trained model for llama.cpp: adapter.gguf (or model.gguf), and optionally a merged,
    quantized GGUF, a merged Hugging Face checkpoint, an Ollama model, a trimmed vocabulary and an
    out-of-scope detector. Every file describes the trained prompt (chat template, end of turn)."""
    from trainers.data import load_records
    from trainers.export import export_full_gguf, export_gguf_lora, export_merged_gguf, write_vocabulary
    from trainers.llamafactory import is_llamafactory_project, sync_trained_project
    from trainers.pipeline import fit_model_scope

    from .model_dir import ModelInfo

    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    if is_llamafactory_project(model_dir):
        sync_trained_project(model_dir)
    if vocabulary_from is not None:
        import numpy as np

        keep = write_vocabulary(model_dir, load_records(vocabulary_from), base=base)
        typer.echo(f"vocabulary: {keep} ({len(np.load(keep)):,} tokens)")
    if ModelInfo.load(model_dir).is_full:
        typer.echo(f"llama.cpp model: {export_full_gguf(model_dir, base=base)}")
    else:
        typer.echo(f"llama.cpp adapter: {export_gguf_lora(model_dir)}")
    if scope_from is not None:
        calibration = load_records(scope_calibrate) if scope_calibrate else []
        fit_model_scope(
            model_dir,
            load_records(scope_from),
            calibration,
            base=base,
            quantile=scope_quantile,
            confidence_weight=scope_confidence_weight,
            say=typer.echo,
        )
    if merged is not None:
        typer.echo(f"merged model: {export_merged_gguf(model_dir, merged, base=base)}")
    if hf_merged is not None:
        from trainers.export import export_hf_merged

        typer.echo(f"Hugging Face checkpoint: {export_hf_merged(model_dir, hf_merged, base=base)}")
    if ollama is not None:
        from trainers.export import write_ollama_modelfile

        modelfile = write_ollama_modelfile(model_dir, ollama, base=base)
        typer.echo(f"Ollama: {modelfile} (ollama create NAME -f {modelfile})")


@app.command("eval")
@_friendly
def evaluate_command(
    data: Annotated[Path, typer.Argument(help="a file in the datasets format")],
    model: Model = None,
    adapter: Adapter = None,
    intents_from: IntentsFrom = None,
    home: HomeFile = None,
    backend: BackendName = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    api_mode: ApiMode = "chat",
    api_key: ApiKey = None,
    out: Annotated[Path | None, typer.Option(help="write report.json / report.md / confusion.png here")] = None,
    limit: Annotated[int, typer.Option(min=0, help="first N records only (0: all)")] = 0,
    compare: Annotated[
        Path | None,
        typer.Option(help="a second model (directory or GGUF) evaluated on the same records: figures side by side"),
    ] = None,
) -> None:
    """Intent / argument / exact-call accuracy, slot F1, OOS, calibration and latency on a data file."""
    from trainers.data import load_records
    from trainers.evaluate import compare_reports

    records = load_records(data)[: limit or None]
    options = locals()
    report = _evaluate_model(records, options)
    if compare is not None:
        other = _evaluate_model(records, {**options, "model": compare, "adapter": None})
        typer.echo(compare_reports(report, other, str(model or "default"), str(compare)))
    else:
        typer.echo(report.summary())
    if out:
        for path in report.save(out):
            typer.echo(f"wrote {path}")
        from trainers.card import write_model_card

        card = write_model_card(out.parent)  # a report saved into a model directory joins its card
        if card is not None:
            typer.echo(f"updated {card}")


def _evaluate_model(records: list[Any], options: dict[str, Any]) -> Any:
    with router_from(options) as router:
        assert router.backend is not None
        return _evaluate_with(router.backend, router.registry, records, router.prompt)


def _evaluate_with(backend: Any, registry: Any, records: list[Any], prompt: Any = None) -> Any:
    from trainers.evaluate import backend_predictor, evaluate
    from trainers.progress import progress_bar

    predict = backend_predictor(backend, registry, prompt or getattr(backend, "prompt", None))
    bar = progress_bar(len(records), "evaluating", "utterance")
    try:
        return evaluate(records, predict, progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()


@feedback_app.command("export")
@_friendly
def feedback_export(
    log: Annotated[str, typer.Option(help="the request log: sqlite:///intentkit.db or postgresql://…")],
    out: Annotated[Path, typer.Option(help="write the labelled rows here (JSON Lines, the datasets format)")],
    since: Annotated[
        str | None, typer.Option(help="only feedback given since then: an ISO date/time or a Unix timestamp")
    ] = None,
) -> None:
    """Corrected and confirmed requests as training rows (validated like any data file)."""
    from trainers.data import records_from_rows

    from .feedback import RequestLog, export_corrections

    with RequestLog(log) as request_log:
        rows = export_corrections(request_log, since=_timestamp(since) if since else None)
    records_from_rows([(f"{log} request {row['request_id']}", row) for row in rows])  # raises naming the row
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    corrected = sum(row["labelled_by"] == "correction" for row in rows)
    typer.echo(f"wrote {len(rows)} rows to {out} ({corrected} corrected, {len(rows) - corrected} confirmed by an up vote)")


def _timestamp(text: str) -> float:
    from datetime import datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"--since {text!r}: expected an ISO date/time (2026-12-01T08:00) or a Unix timestamp") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@app.command()
@_friendly
def bench(
    data: Annotated[Path, typer.Argument(help="utterances (datasets format)")],
    model: Model = None,
    adapter: Adapter = None,
    intents_from: IntentsFrom = None,
    home: HomeFile = None,
    backend: BackendName = "llamacpp",
    base_url: BaseUrl = None,
    api_model: ApiModel = None,
    api_mode: ApiMode = "chat",
    api_key: ApiKey = None,
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
    from trainers.data import build_registry, load_records, validate_records

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
    to_format: Annotated[
        str, typer.Option("--to", help="jsonl | alpaca | sharegpt | llamafactory (a project directory to train in LLaMA-Factory)")
    ] = "jsonl",
    dev: Annotated[Path | None, typer.Option(help="--to llamafactory: dev data, whose loss LLaMA-Factory reports")] = None,
    base: Annotated[
        str, typer.Option(help="--to llamafactory: 'default' (the bundled gemma-3-270m), an HF dir, a .gguf")
    ] = "default",
    method: Annotated[str, typer.Option(help="--to llamafactory: lora | qlora | full")] = "lora",
) -> None:
    """Convert between intentkit's format and iTAG, LLaMA-Factory alpaca/sharegpt and dialogue
    records; ``--to llamafactory`` writes a LLaMA-Factory project (data, config with intentkit's
    recipe, training record) that is an intentkit model directory once trained."""
    from trainers.config import TrainConfig
    from trainers.convert import export_rows, import_rows
    from trainers.data import load_records, records_from_rows
    from trainers.llamafactory import write_llamafactory_project

    records = load_records(source) if from_format == "jsonl" else records_from_rows(import_rows(source, from_format))
    if to_format != "llamafactory":
        path = export_rows(records, target, to_format)
        typer.echo(f"wrote {len(records)} records to {path}")
        return
    config = TrainConfig.model_validate({"base": base, "method": method})
    project = write_llamafactory_project(
        records, target, config, dev=load_records(dev) if dev else (), files=[str(source), *([str(dev)] if dev else [])]
    )
    typer.echo(f"wrote a LLaMA-Factory project to {project.directory} ({project.train_rows} rows, cutoff {project.cutoff_len})")
    typer.echo(f"train it: {project.command}")
    train = source if from_format == "jsonl" else "TRAIN.jsonl"  # export reads intentkit's format
    typer.echo(f"then:     intentkit export {target} --vocabulary-from {train} --scope-from {train}")


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


@data_app.command("label")
@_friendly
def data_label(
    utterances: Annotated[Path, typer.Argument(help="raw utterances, one per line (or a JSONL file of records)")],
    teacher_url: Annotated[str, typer.Option(help="the teacher's OpenAI-compatible server, e.g. http://gpu-box:8000/v1")],
    teacher_model: Annotated[str, typer.Option(help="the teacher's model name on that server")],
    intents_from: Annotated[Path, typer.Option(help="the intents to label with: derived from this data file")],
    out: Annotated[Path, typer.Option(help="labelled rows (JSON Lines, the datasets format)")],
    teacher_api_key: Annotated[str | None, typer.Option(envvar="TEACHER_API_KEY", help="the teacher server's API key")] = None,
    teacher_structured: Annotated[
        str | None, typer.Option(help="constrain the teacher: grammar (llama.cpp servers) | guided_regex (vLLM)")
    ] = None,
    teacher_mode: Annotated[
        str, typer.Option(help="chat | completions (the teacher's confidence needs logprobs, which some servers give only here)")
    ] = "chat",
    model: Model = None,
    adapter: Adapter = None,
    log: Annotated[
        str | None, typer.Option(help="a request log: where the teacher and --model disagree goes to its review queue")
    ] = None,
) -> None:
    """Label raw utterances with a larger teacher model (zero-shot, validated by the registry)."""
    from trainers.data import build_registry, load_records
    from trainers.label import label_utterances, read_utterances
    from trainers.progress import progress_bar

    from .backends.openai import OpenAIBackend

    texts = read_utterances(utterances)
    registry = build_registry(load_records(intents_from))
    structured: Any = teacher_structured
    teacher = Router(
        OpenAIBackend(
            teacher_url,
            model=teacher_model,
            api_key=teacher_api_key,
            zero_shot=True,
            mode=teacher_mode,  # type: ignore[arg-type]
            structured=structured,
            timeout=60.0,
        ),
        registry=registry,
    )
    current = (
        build_router(model=model, adapter=adapter, intents_from=intents_from)
        if model is not None or adapter is not None
        else None
    )
    bar = progress_bar(len(texts), "labelling", "utterance")
    try:
        labelled = label_utterances(texts, teacher, current=current, progress=lambda done: bar.update(done - bar.n))
    finally:
        bar.close()
        teacher.close()
        if current is not None:
            current.close()
    rows = [item.to_row() for item in labelled if item.teacher is not None]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    rejected = [item for item in labelled if item.teacher is None]
    typer.echo(f"wrote {len(rows)} labelled rows to {out}; the teacher gave no valid call for {len(rejected)}")
    for item in rejected[:10]:
        typer.secho(f"  ! {item.utterance!r}: {item.teacher_error}", fg=typer.colors.YELLOW)
    disputed = [item.request for item in labelled if item.request is not None]
    if current is not None:
        typer.echo(f"the teacher and {model or adapter} disagree on {len(disputed)} of {len(labelled)}")
    if log is not None and disputed:
        from .feedback import RequestLog

        with RequestLog(log) as request_log:
            request_log.record_now(disputed)
        typer.echo(f"sent {len(disputed)} disagreements to the review queue of {log}")


@data_app.command("dialogues")
@_friendly
def data_dialogues(
    data: Path,
    out: Annotated[Path, typer.Option(help="where to write the rows and the derived dialogue rows (JSONL)")],
    share: Annotated[float, typer.Option(min=0.0, max=2.0, help="dialogue rows as a share of the single-turn rows")] = 0.25,
    seed: int = 0,
) -> None:
    """Add dialogue rows: requests with a needed value left out (answered by the call without it)
    and the two-turn dialogues that give it (``["打电话", "张三"]`` → ``call_contact(contact="张三")``)."""
    from trainers.data import load_records
    from trainers.dialogues import dialogue_rows, write_dialogue_rows

    records = load_records(data)
    derived = dialogue_rows(records, share=share, seed=seed)
    write_dialogue_rows(records, derived, out)
    intents = sorted({str(r["output"]).split("(")[0] for r in derived.dialogues})
    single = len(records) + len(derived.incomplete)
    typer.echo(
        f"wrote {len(records)} rows, {len(derived.incomplete)} incomplete requests and {len(derived.dialogues)} dialogues "
        f"({len(derived.dialogues) / max(1, single):.0%} of the single-turn rows) to {out}; "
        f"intents: {', '.join(intents) or 'none'}"
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


@ha_app.command("home")
@_friendly
def ha_home(
    url: Annotated[str, typer.Option(help="Home Assistant's URL, e.g. http://homeassistant.local:8123")],
    token: Annotated[str, typer.Option(envvar="HA_TOKEN", help="a long-lived access token")],
    out: Annotated[Path, typer.Option(help="the home file to write (.yaml or .json)")] = Path("home.yaml"),
    language: Annotated[str, typer.Option(help="the language of the home's sentences")] = "zh-CN",
) -> None:
    """Write a home file from a running Home Assistant (its area, floor and entity registries)."""
    from .homeassistant.client import HomeAssistant

    with HomeAssistant(url, token) as ha:
        home = ha.fetch_home(language)
    home.save(out)
    typer.echo(f"wrote {out}: {len(home.areas)} areas, {len(home.floors)} floors, {len(home.entities)} entities")


@ha_app.command("data")
@_friendly
def ha_data(
    out: Annotated[Path, typer.Option(help="where to write the training rows (JSONL)")],
    language: Annotated[str, typer.Option(help="a language of home-assistant-intents")] = "zh-CN",
    per_intent: Annotated[int, typer.Option(min=1, help="rows per intent")] = 40,
    per_sentence: Annotated[
        float, typer.Option(min=0, help="more rows per template sentence of an intent (at most 4 x --per-intent)")
    ] = 1.5,
    dev: Annotated[Path | None, typer.Option(help="also write dev rows (other random walks) here")] = None,
    dev_per_intent: Annotated[int, typer.Option(min=1)] = 10,
    seed: int = 0,
) -> None:
    """Training data for Home Assistant's intents from its own templates (random walks, varied names)."""
    from trainers.homeassistant import ha_rows, write_rows

    rows = ha_rows(language, per_intent=per_intent, per_sentence=per_sentence, seed=seed)
    write_rows(rows, out)
    typer.echo(f"wrote {len(rows)} rows to {out}")
    if dev is not None:
        seen = {r.text for r in rows}
        held = [r for r in ha_rows(language, per_intent=dev_per_intent, seed=seed + 1) if r.text not in seen]
        write_rows(held, dev)
        typer.echo(f"wrote {len(held)} dev rows to {dev}")


@app.command()
@_friendly
def wyoming(
    home: Annotated[Path, typer.Option("--home", help="the home file (intentkit ha home writes one)")],
    uri: Annotated[str, typer.Option(help="where to listen: tcp://HOST:PORT or unix://PATH")] = "tcp://127.0.0.1:10700",
    mode: Annotated[
        str, typer.Option(help="intent: answer with the intent for Home Assistant to run | handle: run it here")
    ] = "intent",
    language: Annotated[str | None, typer.Option(help="default: the home file's")] = None,
    model: Model = None,
    adapter: Adapter = None,
    ha_url: Annotated[str | None, typer.Option(help="handle mode: the Home Assistant that runs the intents")] = None,
    ha_token: Annotated[str | None, typer.Option(envvar="HA_TOKEN", help="handle mode: its access token")] = None,
    templates: Annotated[
        str,
        typer.Option(
            help="Home Assistant's templates: answer what they match, draft the rest for the model (answer) | "
            "only draft each call for the model (draft) | off"
        ),
    ] = "answer",
) -> None:
    """Serve a Wyoming intent (or handle) service for Home Assistant's wyoming integration."""
    import asyncio
    import contextlib

    from .homeassistant import Home, registry_for
    from .homeassistant.wyoming import serve_wyoming

    if mode not in ("intent", "handle"):
        raise ConfigError(f"--mode is intent or handle, not {mode!r}")
    the_home = Home.load(home)
    with contextlib.ExitStack() as stack:
        handler = None
        if mode == "handle":
            if not ha_url or not ha_token:
                raise ConfigError("--mode handle runs the intents in Home Assistant: give --ha-url and --ha-token")
            from .homeassistant.client import HomeAssistant

            handler = stack.enter_context(HomeAssistant(ha_url, ha_token)).handle_intent
        chosen = _home_assistant_model(model, adapter, language or the_home.language)
        backend = load_backend("llamacpp", model=chosen, adapter=adapter)
        router = stack.enter_context(
            Router(
                backend,
                registry=registry_for(the_home, language=language, handler=handler, templates=templates),
                fast_path=False,
            )
        )
        typer.echo(f"wyoming {mode} service on {uri} ({len(router.registry)} intents, {len(the_home.entities)} entities)")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_wyoming(router, uri, language=language or the_home.language, mode=mode))  # type: ignore[arg-type]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
