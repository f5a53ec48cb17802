"""benchmarks/train_speed.py on the tiny model: both runs train the same tokens and report a speed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_speed.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_trainers_run_the_same_steps_over_the_same_tokens(tiny_records, tiny_model) -> None:
    bench = _script()
    model, tokenizer = tiny_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    figures = bench.measure(tiny_records, model, tokenizer, steps=3, batch_size=4, lora_r=4)
    ours, plain = figures["intentkit"], figures["plain_trainer"]
    assert ours["steps"] == plain["steps"] == 3
    assert ours["tokens"] == plain["tokens"] > 0
    assert ours["tokens_per_s"] > 0 and plain["tokens_per_s"] > 0
    assert figures["speed_up"] == pytest.approx(ours["tokens_per_s"] / plain["tokens_per_s"])
    # each run trained its own copy: the model passed in is untouched
    assert all(p.equal(before[name]) for name, p in model.named_parameters())


def test_the_sample_repeats_a_short_file_in_one_fixed_order(tiny_records) -> None:
    bench = _script()
    chosen = bench.sample(tiny_records[:3], steps=2, batch_size=4)
    assert len(chosen) == 8
    assert chosen == bench.sample(tiny_records[:3], steps=2, batch_size=4)
    assert chosen[:3] == chosen[3:6]


def test_the_variants_train_the_same_tokens_with_one_speed_up_off(tiny_records, tiny_model) -> None:
    bench = _script()
    model, tokenizer = tiny_model()
    vocabulary = list(range(0, 60))
    figures = bench.measure(tiny_records, model, tokenizer, steps=2, batch_size=4, lora_r=4, vocabulary=vocabulary, variants=True)
    ours, variants = figures["intentkit"], figures["variants"]
    assert set(variants) == set(bench.VARIANTS)
    assert ours["softmax_vocabulary"] is not None and ours["softmax_vocabulary"] >= 60
    assert variants["fp32, whole head"] | {"seconds": 0, "tokens_per_s": 0, "final_loss": 0} == {
        "steps": 2,
        "tokens": ours["tokens"],
        "seconds": 0,
        "tokens_per_s": 0,
        "precision": "fp32",
        "softmax_vocabulary": None,
        "final_loss": 0,
    }
    assert variants["fp32, trimmed head"]["softmax_vocabulary"] == ours["softmax_vocabulary"]
    assert variants["bf16, whole head"]["precision"] == "bf16"
