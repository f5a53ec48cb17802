"""Train → export → fit the out-of-scope detector: what ``intentkit train`` runs, and what
``benchmarks/accuracy.py`` runs before it evaluates. One function, so that the two can never
drift apart."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentkit.drafts import DRAFTS_FILE, DraftIndex
from intentkit.scope import DEFAULT_CONFIDENCE_WEIGHT, DEFAULT_QUANTILE, SCOPE_FILE, ScopeDetector
from intentkit.tagger import TAGGER_FILE

from .card import write_model_card
from .config import DEFAULT_BASE, DEFAULT_HOLDOUT, DEFAULT_HOLDOUT_SEED, TrainConfig
from .data import Record
from .progress import progress_bar
from .train import TrainResult, train

__all__ = [
    "DEFAULT_HOLDOUT",
    "DEFAULT_HOLDOUT_SEED",
    "HOLDOUT_FILE",
    "BuildResult",
    "build_model",
    "fit_model_scope",
    "split_holdout",
    "write_drafts",
]

HOLDOUT_FILE = "holdout.jsonl"
#: Intents with fewer rows than this keep them all for training.
_HOLDOUT_MIN_ROWS = 5


def split_holdout(
    records: Sequence[Record], fraction: float, *, seed: int = DEFAULT_HOLDOUT_SEED
) -> tuple[list[Record], list[Record]]:
    """``(train, held back)``: ``fraction`` of each intent's rows (out-of-scope rows as one
    more intent), drawn at random with ``seed``; an intent with fewer than five rows keeps them
    all. The split is a function of the rows and the seed alone, so a resumed run gets the same."""
    import random

    if not 0 <= fraction < 1:
        raise ValueError(f"holdout must be in [0, 1), got {fraction}")
    by_intent: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_intent.setdefault(record.intent, []).append(index)
    rng = random.Random(seed)
    held: set[int] = set()
    for name in sorted(by_intent):
        indices = by_intent[name]
        if fraction and len(indices) >= _HOLDOUT_MIN_ROWS:
            held.update(rng.sample(indices, max(1, round(fraction * len(indices)))))
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


@dataclass(slots=True)
class BuildResult:
    """What :func:`build_model` did: the training run, the file llama.cpp runs (``None`` when not
    exported), the detector fitted, and a line for each step left out and why."""

    train: TrainResult
    #: The rows training chose on: the held-back slice, or ``dev``.
    train_dev: Sequence[Record] = ()
    exported: Path | None = None
    detector: ScopeDetector | None = None
    notes: list[str] = field(default_factory=list)


def build_model(
    records: Sequence[Record],
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    dev: Sequence[Record] = (),
    holdout: float = 0.0,
    holdout_seed: int = DEFAULT_HOLDOUT_SEED,
    export: bool = True,
    trim_vocabulary: bool = True,
    scope: bool | None = None,
    calibration: Sequence[Record] | None = None,
    scope_quantile: float = DEFAULT_QUANTILE,
    confidence_weight: float = DEFAULT_CONFIDENCE_WEIGHT,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> BuildResult:
    """Fine-tune on ``records`` into ``out``; export it for llama.cpp (``adapter.gguf``, or
    ``model.gguf`` for a full fine-tune of a GGUF base); fit the out-of-scope detector
    (``scope.npz``; ``scope=None``: when the data has no out-of-scope rows) on the training
    utterances, calibrated on ``calibration`` (default: ``dev``). Every run writes ``drafts.jsonl``
    (the rows the backends draft answers from, held-back ones included); an adapter over a GGUF base also gets
    ``keep_tokens.npy`` (``trim_vocabulary``: the deployment runs on the vocabulary of the
    prompt and the training rows, as the bundled model does). ``say`` reports each step as it ends.

    ``holdout``: hold back that share of ``records`` (:func:`split_holdout`, written to
    ``holdout.jsonl``) and choose on it, not on ``dev``: early stopping, the weights kept and the
    detector's threshold (unless ``calibration`` is given). ``dev`` is then left for the report
    alone, an estimate no choice was made on. The held-back rows also join the drafts and the
    detector's index, where each still calibrates the threshold as an utterance the index has not
    seen (measured against the other rows). The rows held back are drawn with ``holdout_seed``,
    not the training seed, so runs that differ only in ``config.seed`` choose on the same rows and
    can be compared on them."""
    from .export import deployment_vocabulary, export_full_gguf, export_gguf_lora, save_vocabulary

    config = config or TrainConfig()
    out = Path(out)
    records, held = split_holdout(records, holdout, seed=holdout_seed) if holdout else (list(records), [])
    if held:
        _write_rows(out / HOLDOUT_FILE, held)
        say(f"held back {len(held)} of {len(records) + len(held)} training rows to choose on ({out / HOLDOUT_FILE})")
        dev = held
        if calibration is None:
            calibration = held
    from_gguf = config.base == DEFAULT_BASE or config.base.endswith(".gguf")
    trim = export and trim_vocabulary and from_gguf and config.method != "full"
    base_gguf = None if config.base == DEFAULT_BASE else config.base
    # The vocabulary comes first: with config.trimmed_head the softmax is trained over it.
    vocabulary = deployment_vocabulary(records, base=base_gguf).tolist() if trim else None
    trained = train(
        records, out, config, dev=dev, progress=progress, dev_name="held-back" if held else "dev", vocabulary=vocabulary
    )
    result = BuildResult(trained, dev)
    # What the deployment looks up (drafts, the slot tagger, the detector's index) holds every row
    # given, the held-back ones too: they chose the weights but are the user's data all the same.
    everything = [*records, *held]
    write_drafts(out, everything)
    if not export:
        return result
    if vocabulary is not None:
        keep = save_vocabulary(out, trained.vocabulary if trained.vocabulary is not None else vocabulary)
        say(f"vocabulary: {keep} (the deployment's base is trimmed to the tokens of the prompt and the data)")
    if config.method == "full" and not from_gguf:
        result.notes.append(
            f"llama.cpp model: not exported (a full fine-tune is written over the GGUF it started from; convert "
            f"{config.base} to GGUF with llama.cpp's convert_hf_to_gguf.py, then intentkit export {out} --base BASE.gguf)"
        )
        return result
    if config.method == "full":
        say("exporting the fine-tune as one GGUF (8-bit) …")
        result.exported = export_full_gguf(out)
        say(f"llama.cpp model: {result.exported}")
    else:
        result.exported = export_gguf_lora(out)
        say(f"llama.cpp adapter: {result.exported}")
    if not (scope if scope is not None else all(r.calls for r in records)):
        return result
    if not from_gguf:
        result.notes.append(
            f"out-of-scope detector: not fitted (it runs on the llama.cpp deployment; convert {config.base} to GGUF, "
            f"then intentkit export {out} --base BASE.gguf --scope-from TRAIN.jsonl)"
        )
        return result
    base = None if config.base == DEFAULT_BASE else Path(config.base)
    result.detector = fit_model_scope(
        out,
        everything,
        dev if calibration is None else calibration,
        base=base,
        quantile=scope_quantile,
        confidence_weight=confidence_weight,
        progress=progress,
        say=say,
    )
    return result


def fit_model_scope(
    model_dir: str | Path,
    records: Sequence[Record],
    calibration: Sequence[Record] = (),
    *,
    base: Path | None = None,
    quantile: float = DEFAULT_QUANTILE,
    confidence_weight: float = DEFAULT_CONFIDENCE_WEIGHT,
    progress: bool = True,
    say: Callable[[str], None] = print,
    **backend_options: Any,
) -> ScopeDetector:
    """Fit ``model_dir/scope.npz`` through the model's llama.cpp deployment (the one
    :meth:`LlamaCppBackend.from_model_dir` loads, its own detector off), save it, update the card."""
    from intentkit.backends.llamacpp import LlamaCppBackend

    from .scope import fit_scope

    model_dir = Path(model_dir)
    say("out-of-scope detector: loading the deployment (built once into the cache) …")
    with LlamaCppBackend.from_model_dir(model_dir, base=base, scope=None, **backend_options) as backend:
        bar = progress_bar(None, "out-of-scope detector", "utterance") if progress else None
        try:

            def update(done: int, total: int) -> None:
                if bar is not None:
                    bar.total = total
                    bar.update(done - bar.n)

            detector = fit_scope(
                backend,
                records,
                calibration=calibration,
                quantile=quantile,
                confidence_weight=confidence_weight,
                progress=update,
            )
        finally:
            if bar is not None:
                bar.close()
    path = detector.save(model_dir / SCOPE_FILE)
    write_model_card(model_dir)
    say(
        f"out-of-scope detector: {path} ({detector.info['indexed']} utterances, "
        f"threshold {detector.threshold:.4f} from {detector.info['calibrated_on']})"
    )
    return detector


def _write_rows(path: Path, records: Sequence[Record]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": r.instruction, "output": r.output, "source": r.source} for r in records]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def write_drafts(model_dir: str | Path, records: Sequence[Record]) -> Path:
    """Write ``model_dir/drafts.jsonl``: the training rows answers are drafted from
    (:mod:`intentkit.drafts`), and the slot tagger trained on them, ``drafts.crf``
    (:mod:`intentkit.tagger`; none where no intent has values said verbatim)."""
    index = DraftIndex.from_outputs((r.instruction, r.output) for r in records)
    index.fit_tagger(Path(model_dir) / TAGGER_FILE)
    return index.save(Path(model_dir) / DRAFTS_FILE)
