"""The model card written into a trained model directory (from intentkit.json, no model involved)."""

import json
from pathlib import Path

import pytest

from trainers.card import model_card, write_model_card

META = {
    "base": "default",
    "method": "lora",
    "intents": ["play_music", "volume_down", "weather_search"],
    "prompt": {"template": "gemma", "fingerprint": "08fbc996657fefe7"},
    "config": {"method": "lora", "epochs": 4.0, "learning_rate": 3e-4, "batch_size": 8, "grad_accum": 2, "lora_r": 64,
               "lora_alpha": 128, "target_modules": "all-linear", "warmup_ratio": 0.05, "seed": 7},
    "best": {"step": 1528, "dev_loss": 0.1111, "dev_exact": 0.8014},
    "train_seconds": 3465.0, "train_tokens": 676068, "tokens_per_second": 195.1, "steps": 1528, "sequence_length": 256,
    "data": {"training_rows": 3051, "out_of_scope_rows": 0, "dev_rows": 428, "files": ["smp2020/train.jsonl"]},
    "dev_evaluations": [
        {"step": 764, "dev_loss": 0.1383, "dev_exact": 0.7056}, {"step": 1528, "dev_loss": 0.1111, "dev_exact": 0.8014}
    ],
}  # fmt: skip

REPORT = {
    "n": 652, "intent_accuracy": 0.8604, "exact_call_accuracy": 0.7607, "argument_accuracy": 0.8551, "slot_f1": 0.8429,
    "out_of_scope": {"precision": 0.97, "recall": 0.67, "f1": 0.7916, "support": 224}, "latency_p50_ms": 213.2,
    "latency_p95_ms": 410.4,
}  # fmt: skip


def model_dir(tmp_path: Path, meta: dict = META, files: tuple[str, ...] = ("adapter.gguf", "scope.npz")) -> Path:
    (tmp_path / "intentkit.json").write_text(json.dumps(meta), encoding="utf-8")
    for name in files:
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_the_card_states_the_run_its_reports_and_how_to_load_it(tmp_path: Path) -> None:
    directory = model_dir(tmp_path)
    (directory / "eval-all").mkdir()
    (directory / "eval-all" / "report.json").write_text(json.dumps(REPORT), encoding="utf-8")
    (directory / "eval-dev_oos").mkdir()
    (directory / "eval-dev_oos" / "report.json").write_text(
        json.dumps({**REPORT, "n": 224, "argument_accuracy": None, "slot_f1": None, "latency_p95_ms": None}), encoding="utf-8"
    )
    card = model_card(directory)
    assert "LoRA adapter (r=64, α=128, on all linear layers) of **gemma-3-270m" in card
    assert "one of 3 intents (`play_music`, `volume_down`, `weather_search`), or `no_intent()`" in card
    assert "| data | 3,051 training rows (0 out of scope), 428 dev rows |" in card
    assert "| epochs, batch | 4, 8 × 2 accumulation |" in card
    assert "| run | 1,528 steps in 57.8 min, 676,068 tokens, 195 tokens/s |" in card
    assert "| kept | step 1528: dev loss 0.1111, dev exact match 80.14% |" in card
    assert "| 764 | 0.1383 | 70.56% |" in card
    assert "| `eval-all` | 652 | 86.04% | 76.07% | 85.51% | 84.29% | 0.792 | 213 ms | 410 ms |" in card
    assert "| `eval-dev_oos` | 224 | 86.04% | 76.07% | n/a | n/a | 0.792 | 213 ms | n/a |" in card
    assert f"--model {directory.as_posix()} --intents-from smp2020/train.jsonl" in card
    assert "| `scope.npz` |" in card and "| `adapter.gguf` |" in card and "model.gguf" not in card


def test_a_full_fine_tune_is_loaded_from_its_gguf_and_many_intents_are_cut_short(tmp_path: Path) -> None:
    meta = {**META, "method": "full", "intents": [f"intent_{i:02d}" for i in range(40)], "config": {"method": "full"}}
    card = model_card(model_dir(tmp_path, meta, files=("model.gguf",)))
    assert "A full fine-tune of" in card and "library_name: transformers" in card
    assert "`intent_11` and 28 more" in card and "intent_12" not in card
    assert f"--model {tmp_path.as_posix()} --intents-from" in card
    assert "None saved here yet" in card


def test_an_unreadable_report_is_named_not_skipped(tmp_path: Path) -> None:
    directory = model_dir(tmp_path)
    (directory / "eval-dev").mkdir()
    (directory / "eval-dev" / "report.json").write_text("{not json", encoding="utf-8")
    assert "`eval-dev/report.json` could not be read" in model_card(directory)


@pytest.mark.parametrize(
    ("existing", "replaced"),
    [
        (None, True),
        ("# Model Card for Model ID\n\n[More Information Needed]\n", True),  # peft's template
        ("# my model\n\nNotes I wrote.\n", False),
    ],
)
def test_write_model_card_replaces_templates_not_cards_someone_wrote(tmp_path: Path, existing: str | None, replaced: bool):
    directory = model_dir(tmp_path)
    if existing is not None:
        (directory / "README.md").write_text(existing, encoding="utf-8")
    written = write_model_card(directory)
    assert (written is not None) == replaced
    text = (directory / "README.md").read_text(encoding="utf-8")
    assert (text == existing) != replaced
    if replaced:  # and a card it wrote is its own to write again
        assert write_model_card(directory) == directory / "README.md"


def test_no_card_without_a_training_record(tmp_path: Path) -> None:
    assert write_model_card(tmp_path) is None and not (tmp_path / "README.md").exists()


def test_a_record_edited_out_of_shape_warns_instead_of_failing_the_run(tmp_path: Path) -> None:
    directory = model_dir(tmp_path, {**META, "steps": "many"})
    with pytest.warns(UserWarning, match="model card not written"):
        assert write_model_card(directory) is None
