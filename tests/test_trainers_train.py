"""The training loop on a tiny randomly initialised model built here (no download, CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from intentkit import PromptFormat  # noqa: E402
from trainers.data import records_from_rows  # noqa: E402
from trainers.train import TrainConfig, _rank, answer_loss, encode_records, evaluate_dev, shared_prefix, train  # noqa: E402

ROWS = [
    {"instruction": "我想听音乐", "output": "play_music()"},
    {"instruction": "太吵了", "output": "volume_down()"},
    {"instruction": "查下杭州天气", "output": 'weather_search(city="杭州")'},
    {"instruction": "今天吃什么", "output": None},
] * 4
RECORDS = records_from_rows((f"t.jsonl:{i + 1}", r) for i, r in enumerate(ROWS))


def tiny_model_and_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    prompt = PromptFormat()
    specials = ["<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    text = "".join(prompt.render(r.instruction) + r.target for r in RECORDS)
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(text)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        additional_special_tokens=specials[4:],
    )
    config = Gemma3TextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config), tokenizer


def test_labels_cover_only_the_answer() -> None:
    _, tokenizer = tiny_model_and_tokenizer()
    encoded, length = encode_records(RECORDS[:3], tokenizer, PromptFormat())
    first = encoded[0]
    answer = tokenizer.decode(first.input_ids[first.answer_start :])
    assert answer.replace(" ", "") == "play_music()<end_of_turn>"
    assert length & (length - 1) == 0 and length >= max(len(e.input_ids) for e in encoded)


def test_answer_only_loss_matches_full_head_loss() -> None:
    model, tokenizer = tiny_model_and_tokenizer()
    encoded, _ = encode_records(RECORDS[:4], tokenizer, PromptFormat())
    from trainers.train import _collate

    ids, mask, labels = _collate(encoded, tokenizer.pad_token_id, torch.device("cpu"))
    fast, n = answer_loss(model, ids, mask, labels)
    reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert n == sum(len(e.input_ids) - e.answer_start for e in encoded)
    assert fast.item() == pytest.approx(reference.item(), rel=1e-4)


def test_shared_prefix_gives_the_same_loss_and_gradients() -> None:
    from trainers.train import _collate, _wrap

    model, tokenizer = tiny_model_and_tokenizer()
    model = _wrap(model, TrainConfig(lora_r=4, lora_dropout=0.0))
    encoded, _ = encode_records(RECORDS[:6], tokenizer, PromptFormat())  # answers of different lengths: padding
    prefix = shared_prefix(encoded, model.config)
    # The chat markers and the system prompt; not the utterance, nor the position before the answer.
    system = tokenizer(PromptFormat().render("X"), add_special_tokens=True)["input_ids"]
    assert 0 < prefix < min(e.answer_start for e in encoded)
    assert encoded[0].input_ids[:prefix] == system[:prefix]
    batch = _collate(encoded, tokenizer.pad_token_id, torch.device("cpu"))
    results = []
    for p in (0, prefix):
        model.zero_grad()
        loss, n = answer_loss(model, *batch, prefix=p)
        loss.backward()
        grads = {name: w.grad.clone() for name, w in model.named_parameters() if w.grad is not None}
        results.append((loss.item(), n, grads))
    (plain, n_plain, g_plain), (shared, n_shared, g_shared) = results
    assert n_plain == n_shared and shared == pytest.approx(plain, rel=1e-5)
    assert g_plain.keys() == g_shared.keys() and g_plain
    for name in g_plain:
        torch.testing.assert_close(g_shared[name], g_plain[name], rtol=1e-4, atol=1e-6)


def test_no_prefix_is_shared_where_it_would_not_help_or_be_safe() -> None:
    model, tokenizer = tiny_model_and_tokenizer()
    encoded, _ = encode_records(RECORDS[:6], tokenizer, PromptFormat())
    assert shared_prefix(encoded[:1], model.config) == 0  # one example
    model.config.sliding_window = 16  # longer than a sliding window: its cache would be cut
    assert shared_prefix(encoded, model.config) == 0


def test_training_lowers_dev_loss(tmp_path: Path) -> None:
    config = TrainConfig(method="full", epochs=10, learning_rate=1e-2, batch_size=4, train_embeddings=True)
    result = train(RECORDS, tmp_path, config, dev=RECORDS[:4], model_and_tokenizer=tiny_model_and_tokenizer(), progress=False)
    losses = [h["dev_loss"] for h in result.history if "dev_loss" in h]
    assert len(losses) == 10 and losses[-1] < losses[0] * 0.8
    assert result.best_dev_loss == min(losses)
    assert (tmp_path / "config.json").exists() and (tmp_path / "tokenizer.json").exists()
    meta = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    assert [e["dev_loss"] for e in meta["dev_evaluations"]] == losses  # the curve is kept with the model
    assert meta["best"]["dev_loss"] == min(losses)  # and the weights saved are the best evaluation's


def test_dev_exact_match_is_what_greedy_decoding_writes(tmp_path: Path) -> None:
    model, tokenizer = tiny_model_and_tokenizer()
    config = TrainConfig(method="full", epochs=50, learning_rate=1e-2, batch_size=4, train_embeddings=True)
    train(RECORDS, tmp_path, config, model_and_tokenizer=(model, tokenizer), progress=False)
    encoded, _ = encode_records(RECORDS[:4], tokenizer, PromptFormat())
    shared = evaluate_dev(model, encoded, 4, tokenizer.pad_token_id, torch.device("cpu"))
    plain = evaluate_dev(model, encoded, 4, tokenizer.pad_token_id, torch.device("cpu"), share=False)
    greedy = []
    for e in encoded:
        answer = e.input_ids[e.answer_start :]
        out = model.generate(torch.tensor([e.input_ids[: e.answer_start]]), max_new_tokens=len(answer), do_sample=False)
        greedy.append(out[0, e.answer_start :].tolist() == answer)
    assert shared.exact == plain.exact == greedy
    assert 0 < sum(greedy) < len(greedy)  # half-trained: the comparison sees both outcomes
    assert shared.loss == pytest.approx(plain.loss, rel=1e-4)


def test_select_on_exact_keeps_the_evaluation_with_the_most_exact_matches(tmp_path: Path) -> None:
    lower_loss = {"step": 10, "dev_loss": 0.5, "dev_exact": 0.25}
    more_exact = {"step": 20, "dev_loss": 0.7, "dev_exact": 0.75}
    assert _rank(lower_loss, TrainConfig()) < _rank(more_exact, TrainConfig())
    assert _rank(more_exact, TrainConfig(select_on="exact")) < _rank(lower_loss, TrainConfig(select_on="exact"))
    config = TrainConfig(method="full", epochs=50, learning_rate=1e-2, batch_size=4, eval_every=25, select_on="exact")
    result = train(RECORDS, tmp_path, config, dev=RECORDS[:4], model_and_tokenizer=tiny_model_and_tokenizer(), progress=False)
    evaluations = [h for h in result.history if "dev_loss" in h]
    best = max(evaluations, key=lambda h: (h["dev_exact"], -h["dev_loss"]))
    assert result.kept == best and result.best_dev_loss == best["dev_loss"]
    meta = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    assert meta["best"]["step"] == best["step"] and len(meta["dev_evaluations"]) == len(evaluations) == 8


def test_lora_saves_adapter_and_metadata(tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, learning_rate=5e-2, batch_size=4, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    result = train(RECORDS, tmp_path, config, dev=RECORDS[:4], model_and_tokenizer=tiny_model_and_tokenizer(), progress=False)
    losses = [h["dev_loss"] for h in result.history if "dev_loss" in h]
    assert losses[-1] < losses[0]
    assert result.steps == 8 and result.tokens_per_second > 0
    meta = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    assert meta["prompt"]["fingerprint"] == PromptFormat().fingerprint
    assert meta["intents"] == ["no_intent", "play_music", "volume_down", "weather_search"]
    assert meta["steps"] == 8 and meta["tokens_per_second"] > 0
    assert (tmp_path / "adapter_config.json").exists() and (tmp_path / "adapter_model.safetensors").exists()


def test_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, batch_size=4, lora_r=4, save_every=4, lora_dropout=0.0)
    first = train(RECORDS, tmp_path, config, model_and_tokenizer=tiny_model_and_tokenizer(), progress=False)
    assert first.steps == 8 and (tmp_path / "checkpoint-last" / "state.pt").exists()
    longer = config.model_copy(update={"epochs": 3})
    resumed = train(RECORDS, tmp_path, longer, model_and_tokenizer=tiny_model_and_tokenizer(), progress=False)
    assert resumed.steps == 12 and len(resumed.history) == 12


def test_qlora_needs_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="QLoRA needs a CUDA GPU"):
        train(RECORDS, tmp_path, TrainConfig(method="qlora"), model_and_tokenizer=tiny_model_and_tokenizer(), progress=False)


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(method="full", epochs=1.5, target_modules=["q_proj", "v_proj"])
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(epoch=2)  # type: ignore[call-arg]


def test_cli_train_on_an_hf_directory(tmp_path):
    """`intentkit train` end to end on a saved model directory: adapter, GGUF export, and the
    out-of-scope detector declined with a clear next step (it needs a GGUF base for llama.cpp)."""
    from typer.testing import CliRunner

    from intentkit.cli import app

    model, tokenizer = tiny_model_and_tokenizer()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    in_scope = [r for r in ROWS if r["output"]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in in_scope), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "train.jsonl"), "--out", str(out), "--base", str(tmp_path / "base"), "--epochs", "1"]
    done = CliRunner().invoke(app, [*args, "--batch-size", "4", "--lora-r", "4"])
    assert done.exit_code == 0, done.output
    assert "trained 3 steps" in done.output
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter.gguf").is_file()
    assert "out-of-scope detector: not fitted" in done.output and "--scope-from" in done.output
    assert not (out / "scope.npz").exists()

    done = CliRunner().invoke(app, [*args, "--batch-size", "4", "--lora-r", "4", "--no-scope"])
    assert done.exit_code == 0, done.output
    assert "out-of-scope detector" not in done.output

    done = CliRunner().invoke(app, [*args, "--batch-size", "4", "--method", "full", "--out", str(tmp_path / "full")])
    assert done.exit_code == 0, done.output  # trained and saved; the export needs the base as GGUF
    assert "not exported" in done.output and "convert_hf_to_gguf.py" in done.output
    assert (tmp_path / "full" / "model.safetensors").is_file() and not (tmp_path / "full" / "model.gguf").exists()
