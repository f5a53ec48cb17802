"""The training loop on a tiny randomly initialised model built here (no download, CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from intentkit import PromptFormat  # noqa: E402
from intentkit.drafts import DraftIndex  # noqa: E402
from intentkit.errors import ConfigError  # noqa: E402
from trainers.data import records_from_rows  # noqa: E402
from trainers.train import TrainConfig, _rank, answer_loss, encode_records, evaluate_dev, shared_prefix, train  # noqa: E402


def test_labels_cover_only_the_answer(tiny_records, tiny_model) -> None:
    _, tokenizer = tiny_model()
    encoded, length = encode_records(tiny_records[:3], tokenizer, PromptFormat())
    first = encoded[0]
    answer = tokenizer.decode(first.input_ids[first.answer_start :])
    assert answer.replace(" ", "") == "play_music()<end_of_turn>"
    assert length & (length - 1) == 0 and length >= max(len(e.input_ids) for e in encoded)


def test_answer_only_loss_matches_full_head_loss(tiny_records, tiny_model) -> None:
    model, tokenizer = tiny_model()
    encoded, _ = encode_records(tiny_records[:4], tokenizer, PromptFormat())
    from trainers.train import _collate

    ids, mask, labels = _collate(encoded, tokenizer.pad_token_id, torch.device("cpu"))
    fast, n = answer_loss(model, ids, mask, labels)
    reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert n == sum(len(e.input_ids) - e.answer_start for e in encoded)
    assert fast.item() == pytest.approx(reference.item(), rel=1e-4)


def test_shared_prefix_gives_the_same_loss_and_gradients(tiny_records, tiny_model) -> None:
    from trainers.train import _collate, _wrap

    model, tokenizer = tiny_model()
    model = _wrap(model, TrainConfig(lora_r=4, lora_dropout=0.0))
    encoded, _ = encode_records(tiny_records[:6], tokenizer, PromptFormat())  # answers of different lengths: padding
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


def test_no_prefix_is_shared_where_it_would_not_help_or_be_safe(tiny_records, tiny_model) -> None:
    model, tokenizer = tiny_model()
    encoded, _ = encode_records(tiny_records[:6], tokenizer, PromptFormat())
    assert shared_prefix(encoded[:1], model.config) == 0  # one example
    model.config.sliding_window = 16  # longer than a sliding window: its cache would be cut
    assert shared_prefix(encoded, model.config) == 0


def test_training_lowers_dev_loss(tiny_records, tiny_model, tmp_path: Path) -> None:
    config = TrainConfig(method="full", epochs=10, learning_rate=1e-2, batch_size=4, train_embeddings=True, select_on="loss")
    result = train(tiny_records, tmp_path, config, dev=tiny_records[:4], model_and_tokenizer=tiny_model(), progress=False)
    losses = [h["dev_loss"] for h in result.history if "dev_loss" in h]
    assert len(losses) == 10 and losses[-1] < losses[0] * 0.8
    assert result.best_dev_loss == min(losses)
    assert (tmp_path / "config.json").exists() and (tmp_path / "tokenizer.json").exists()
    meta = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    assert [e["dev_loss"] for e in meta["dev_evaluations"]] == losses  # the curve is kept with the model
    assert meta["best"]["dev_loss"] == min(losses)  # and the weights saved are the best evaluation's


def test_dev_exact_match_is_what_greedy_decoding_writes(tiny_records, tiny_model, tmp_path: Path) -> None:
    model, tokenizer = tiny_model()
    config = TrainConfig(method="full", epochs=50, learning_rate=1e-2, batch_size=4, train_embeddings=True)
    train(tiny_records, tmp_path, config, model_and_tokenizer=(model, tokenizer), progress=False)
    encoded, _ = encode_records(tiny_records[:4], tokenizer, PromptFormat())
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


def test_select_on_exact_keeps_the_evaluation_with_the_most_exact_matches(tiny_records, tiny_model, tmp_path: Path) -> None:
    lower_loss = {"step": 10, "dev_loss": 0.5, "dev_exact": 0.25}
    more_exact = {"step": 20, "dev_loss": 0.7, "dev_exact": 0.75}
    assert _rank(lower_loss, TrainConfig(select_on="loss")) < _rank(more_exact, TrainConfig(select_on="loss"))
    assert TrainConfig().select_on == "exact"  # the default: what routing is judged on
    assert _rank(more_exact, TrainConfig(select_on="exact")) < _rank(lower_loss, TrainConfig(select_on="exact"))
    config = TrainConfig(method="full", epochs=50, learning_rate=1e-2, batch_size=4, eval_every=25, select_on="exact")
    result = train(tiny_records, tmp_path, config, dev=tiny_records[:4], model_and_tokenizer=tiny_model(), progress=False)
    evaluations = [h for h in result.history if "dev_loss" in h]
    best = max(evaluations, key=lambda h: (h["dev_exact"], -h["dev_loss"]))
    assert result.kept == best and result.best_dev_loss == best["dev_loss"]
    meta = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    assert meta["best"]["step"] == best["step"] and len(meta["dev_evaluations"]) == len(evaluations) == 8


@pytest.mark.parametrize("order", ["utterance", "as_given"])
def test_argument_order_applies_to_training_and_dev_answers(tiny_model, tmp_path: Path, monkeypatch, order: str) -> None:
    row = {"instruction": "辽宁大连在哪里", "output": 'map_position(city="大连", province="辽宁")'}
    records = records_from_rows([("t.jsonl:1", row)])
    seen: list[list[str]] = []

    def capture(records, *args, **kwargs):
        seen.append([r.target for r in records])
        if len(seen) == 2:  # training and dev answers: all this test needs
            raise StopIteration
        return encode_records(records, *args, **kwargs)

    monkeypatch.setattr("trainers.train.encode_records", capture)
    with pytest.raises(StopIteration):
        train(records, tmp_path, TrainConfig(argument_order=order), dev=records, model_and_tokenizer=tiny_model())
    expected = 'map_position(province="辽宁", city="大连")' if order == "utterance" else row["output"]
    assert seen == [[expected], [expected]]


def test_lora_saves_adapter_and_metadata(tiny_records, tiny_model, tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, learning_rate=5e-2, batch_size=4, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    result = train(tiny_records, tmp_path, config, dev=tiny_records[:4], model_and_tokenizer=tiny_model(), progress=False)
    losses = [h["dev_loss"] for h in result.history if "dev_loss" in h]
    assert losses[-1] < losses[0]
    assert result.steps == 8 and result.tokens_per_second > 0
    meta = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    assert meta["prompt"]["fingerprint"] == PromptFormat().fingerprint
    assert meta["intents"] == ["no_intent", "play_music", "volume_down", "weather_search"]
    assert meta["steps"] == 8 and meta["tokens_per_second"] > 0
    assert (tmp_path / "adapter_config.json").exists() and (tmp_path / "adapter_model.safetensors").exists()
    assert meta["data"] == {
        "training_rows": len(tiny_records),
        "out_of_scope_rows": 4,
        "dev_rows": 4,
        "chosen_on": "dev",
        "files": ["t.jsonl"],
    }
    card = (tmp_path / "README.md").read_text(encoding="utf-8")  # ours, not peft's empty template
    assert "More Information Needed" not in card and "LoRA adapter (r=8, α=16" in card
    assert "| run | 8 steps in" in card and f"`{PromptFormat().fingerprint}`" in card
    assert "--intents-from t.jsonl" in card


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")  # peft, on gemma's tied head
@pytest.mark.parametrize(("targets", "adapts"), [("all-linear", False), (["embed_tokens", "q_proj"], True)])
def test_the_adapter_carries_the_embedding_only_when_a_lora_sits_on_it(
    tiny_records, tiny_model, tmp_path: Path, targets, adapts: bool
) -> None:
    from trainers.train import _adapts_embeddings, _wrap

    config = TrainConfig(epochs=1, batch_size=4, lora_r=4, lora_alpha=8, target_modules=targets)
    assert _adapts_embeddings(_wrap(tiny_model()[0], config)) is adapts
    train(tiny_records, tmp_path, config, model_and_tokenizer=tiny_model(), progress=False)
    assert any("embed_tokens" in name for name in _adapter(tmp_path)) is adapts


def _adapter(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / "adapter_model.safetensors")


def test_resume_continues_from_the_checkpoint(tiny_records, tiny_model, tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, batch_size=4, lora_r=4, save_every=4, lora_dropout=0.0)
    first = train(tiny_records, tmp_path, config, model_and_tokenizer=tiny_model(), progress=False)
    assert first.steps == 8 and (tmp_path / "checkpoint-last" / "state.pt").exists()
    longer = config.model_copy(update={"epochs": 3})
    resumed = train(tiny_records, tmp_path, longer, model_and_tokenizer=tiny_model(), progress=False)
    assert resumed.steps == 12 and len(resumed.history) == 12 and resumed.resumed_from == 8


@pytest.mark.parametrize(("grad_accum", "averages"), [(1, []), (2, []), (1, [0.8])])
def test_ctrl_c_saves_a_checkpoint_and_the_resumed_run_ends_where_an_uninterrupted_one_does(
    tiny_records, tiny_model, tmp_path: Path, grad_accum: int, averages: list[float]
) -> None:
    """Ctrl-C (SIGINT) mid-epoch: the step finishes, a checkpoint is written and KeyboardInterrupt
    raised; the same call resumes it with the batches, weights, optimizer, averaged weights and
    best evaluation an uninterrupted run has at that point, and ends with the same adapter."""
    import os
    import signal

    config = TrainConfig(
        epochs=3,
        batch_size=2,
        grad_accum=grad_accum,
        learning_rate=5e-2,
        lora_r=4,
        eval_every=3,
        average_decays=averages,
    )
    whole = train(
        tiny_records, tmp_path / "whole", config, dev=tiny_records[:4], model_and_tokenizer=tiny_model(), progress=False
    )
    assert whole.steps == 24 // grad_accum

    def interrupt(record: dict[str, float]) -> None:
        if record["step"] == 5:  # mid-epoch, between dev evaluations
            os.kill(os.getpid(), signal.SIGINT)

    stopped, handler = tmp_path / "stopped", signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match=r"stopped at step 5 .* the same call resumes"):
        train(
            tiny_records,
            stopped,
            config,
            dev=tiny_records[:4],
            model_and_tokenizer=tiny_model(),
            progress=False,
            on_step=interrupt,
        )
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C means Ctrl-C again
    resumed = train(tiny_records, stopped, config, dev=tiny_records[:4], model_and_tokenizer=tiny_model(), progress=False)
    assert resumed.resumed_from == 5 and resumed.steps == whole.steps
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in whole.history], rel=1e-5)
    for after, before in zip(resumed.history, whole.history, strict=True):
        assert (
            after.get("averages", {}).keys()
            == before.get("averages", {}).keys()
            == ({"average 0.8"} if averages and "dev_loss" in before else set())
        )
        for name, score in before.get("averages", {}).items():
            assert after["averages"][name]["dev_loss"] == pytest.approx(score["dev_loss"], rel=1e-5)
    assert resumed.kept is not None and whole.kept is not None and resumed.kept["step"] == whole.kept["step"]
    final, expected = _adapter(stopped), _adapter(tmp_path / "whole")
    assert final.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], rtol=1e-5, atol=1e-6)


def test_averaged_weights_are_evaluated_beside_the_trained_ones_and_kept_when_better(
    tiny_records, tiny_model, tmp_path: Path
) -> None:
    """Each evaluation scores the trained weights and every average; the weights saved are the
    best of them (here an average: a high rate makes the trained weights jump around), and they
    are the exponentially weighted, bias-corrected mean of every step's weights, computed here
    from the weights seen after each step."""
    model, tokenizer = tiny_model()
    decay = 0.7
    config = TrainConfig(
        epochs=6,
        learning_rate=3.0,
        batch_size=4,
        lora_r=4,
        lora_dropout=0.0,
        eval_every=4,
        select_on="loss",
        average_decays=[decay],
    )
    seen: list[dict[str, torch.Tensor]] = []

    def lora_weights() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    result = train(
        tiny_records,
        tmp_path,
        config,
        dev=tiny_records[:4],
        model_and_tokenizer=(model, tokenizer),
        progress=False,
        on_step=lambda record: seen.append(lora_weights()),
    )
    evaluations = [h for h in result.history if "dev_loss" in h]
    assert len(evaluations) == 6 and all(h["averages"].keys() == {"average 0.7"} for h in evaluations)
    candidates = [({"step": h["step"], "dev_loss": h["dev_loss"], "dev_exact": h["dev_exact"]}, None) for h in evaluations] + [
        ({"step": h["step"], **h["averages"]["average 0.7"], "weights": "average 0.7"}, h["step"]) for h in evaluations
    ]
    kept, averaged_at = min(candidates, key=lambda c: (c[0]["dev_loss"], c[1] is not None))
    assert result.kept == kept
    assert averaged_at is not None, "the case this test is for: an average kept"
    steps = seen[:averaged_at]
    weights = [(1 - decay) * decay ** (len(steps) - 1 - i) for i in range(len(steps))]
    expected = {n: sum(w * s[n] for w, s in zip(weights, steps, strict=True)) / sum(weights) for n in steps[0]}
    saved = _adapter(tmp_path)  # peft's names: the wrapper's prefix, no adapter name
    assert saved.keys() == {"base_model.model." + name.replace(".default", "") for name in expected}
    for name, value in expected.items():
        torch.testing.assert_close(saved["base_model.model." + name.replace(".default", "")], value, rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(seen[-1][name], value) for name, value in expected.items())  # not the last weights
    meta = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    assert meta["best"]["weights"] == "average 0.7" and meta["dev_evaluations"][0]["averages"]["average 0.7"]["dev_loss"] > 0
    assert "(average 0.7)" in (tmp_path / "README.md").read_text(encoding="utf-8")


def test_averages_need_data_to_choose_on(tiny_records, tiny_model, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"average_decays.*dev or held-back data"):
        train(tiny_records, tmp_path, TrainConfig(average_decays=[0.9]), model_and_tokenizer=tiny_model(), progress=False)


@pytest.mark.parametrize("decays", [[1.0], [0.0], [0.9, 0.9]])
def test_an_average_decay_must_lie_in_0_1_and_appear_once(decays: list[float]) -> None:
    with pytest.raises(ValueError, match="average"):
        TrainConfig(average_decays=decays)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"learning_rate": 1e-3}, "learning_rate"),
        ({"lora_r": 8}, "lora_r"),
        ({"records": 8}, "training examples"),  # the first 8 of the tiny records
    ],
)
def test_a_checkpoint_from_a_different_run_is_not_resumed(
    tiny_records, tiny_model, tmp_path: Path, change: dict, named: str
) -> None:
    config = TrainConfig(epochs=1, batch_size=4, lora_r=4, save_every=2)
    train(tiny_records, tmp_path, config, model_and_tokenizer=tiny_model(), progress=False)
    change = dict(change)
    records = tiny_records[: change.pop("records")] if "records" in change else tiny_records
    other = config.model_copy(update=change)
    with pytest.raises(ValueError, match=f"different training run \\(changed: {named}\\).*new output directory"):
        train(records, tmp_path, other, model_and_tokenizer=tiny_model(), progress=False)


@pytest.mark.parametrize(
    ("cuda", "bitsandbytes", "expected"),
    [
        (False, True, "QLoRA needs a CUDA GPU and bitsandbytes; use method='lora'"),
        (True, False, "bitsandbytes is not installed: pip install 'intentkit-router\\[qlora\\]'"),
        (True, True, None),
    ],
)
def test_qlora_needs_cuda_and_bitsandbytes(monkeypatch, cuda: bool, bitsandbytes: bool, expected: str | None) -> None:
    import sys

    from trainers.base import qlora_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setitem(sys.modules, "bitsandbytes", sys.modules.get("bitsandbytes", object()) if bitsandbytes else None)
    if expected is None:
        assert qlora_device() == "cuda"
    else:
        with pytest.raises((ValueError, ImportError), match=expected):
            qlora_device()


def test_qlora_fails_before_loading_the_base_without_cuda(tiny_records, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    config = TrainConfig(method="qlora", base=str(tmp_path / "not-loaded"))  # would be FileNotFoundError if loaded first
    with pytest.raises(ValueError, match="QLoRA needs a CUDA GPU"):
        train(tiny_records, tmp_path, config, progress=False)


def test_qlora_trains_an_adapter_over_four_bit_weights(tiny_records, tiny_model, tmp_path: Path, monkeypatch) -> None:
    """The QLoRA path end to end on the tiny model: linear weights loaded in 4-bit NF4, left
    untouched by training, a LoRA adapter learnt over them and exported for llama.cpp.
    bitsandbytes also runs NF4 on a CPU, which lets this run here; the product asks for CUDA
    (:func:`trainers.base.qlora_device`), so the device check is replaced for the test."""
    bnb = pytest.importorskip("bitsandbytes")
    from trainers.base import load_base
    from trainers.export import export_gguf_lora

    model, tokenizer = tiny_model(width=64)  # bitsandbytes' CPU kernels quantize blocks of 64
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    monkeypatch.setattr("trainers.train.qlora_device", lambda: "cpu")
    plain = TrainConfig(base=str(tmp_path / "base"), method="qlora", lora_r=4)
    with pytest.raises(ValueError, match="loaded in 4 bits"):
        train(tiny_records, tmp_path / "plain", plain, model_and_tokenizer=(model, tokenizer), progress=False)

    base, tokenizer = load_base(str(tmp_path / "base"), four_bit_on="cpu")
    linear = base.model.layers[0].self_attn.q_proj
    assert isinstance(linear, bnb.nn.Linear4bit) and linear.weight.quant_type == "nf4"
    packed = linear.weight.data.clone()
    update = {"epochs": 10, "learning_rate": 2e-2, "batch_size": 4, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0}
    config = plain.model_copy(update=update)
    # No dev evaluation mid-run: on a CPU, bitsandbytes repacks 4-bit weights for inference once the
    # model is in eval mode, and its repacked kernel has no backward (one more reason QLoRA asks for CUDA).
    result = train(tiny_records, tmp_path / "run", config, model_and_tokenizer=(base, tokenizer), progress=False)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-8:]) / 8 < sum(losses[:4]) / 4 - 0.1  # a random tiny model: it learns, slowly
    assert all(w.abs().sum() > 0 for name, w in _adapter(tmp_path / "run").items() if "lora_B" in name)
    assert torch.equal(base.model.layers[0].self_attn.q_proj.base_layer.weight.data, packed)  # the 4-bit base stays frozen
    meta = json.loads((tmp_path / "run" / "intentkit.json").read_text(encoding="utf-8"))
    assert meta["method"] == "qlora" and meta["config"]["method"] == "qlora"
    assert export_gguf_lora(tmp_path / "run").stat().st_size > 0


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(method="full", epochs=1.5, target_modules=["q_proj", "v_proj"])
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(epoch=2)  # type: ignore[call-arg]


def test_cli_train_on_an_hf_directory(tiny_records, tiny_model, tmp_path):
    """`intentkit train` end to end on a saved model directory: adapter, GGUF export, and the
    out-of-scope detector declined with a clear next step (it needs a GGUF base for llama.cpp)."""
    from typer.testing import CliRunner

    from intentkit.cli import app

    model, tokenizer = tiny_model()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    in_scope = [{"instruction": r.instruction, "output": r.target} for r in tiny_records if r.calls]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in in_scope), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "train.jsonl"), "--out", str(out), "--base", str(tmp_path / "base"), "--epochs", "1"]
    done = CliRunner().invoke(app, [*args, "--batch-size", "4", "--lora-r", "4"])
    assert done.exit_code == 0, done.output
    assert "trained 3 steps" in done.output
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter.gguf").is_file()
    drafts = DraftIndex.load(out / "drafts.jsonl")  # the rows answers are drafted from
    assert sorted(drafts.utterances) == sorted({r["instruction"] for r in in_scope})
    assert drafts.tagger is not None and drafts.tagger.path == out / "drafts.crf"  # and the slot tagger beside them
    assert drafts.tagger.tag("查下杭州天气", "weather_search") == {"city": "杭州"}
    assert "out-of-scope detector: not fitted" in done.output and "--scope-from" in done.output
    assert not (out / "scope.npz").exists()
    assert "| `adapter.gguf` |" in (out / "README.md").read_text(encoding="utf-8")  # the card lists the export

    averaged = ["--average-decay", "0.9", "--average-decay", "0.99", "--dev", str(tmp_path / "train.jsonl"), "--holdout", "0"]
    done = CliRunner().invoke(app, [*args, "--batch-size", "4", "--lora-r", "4", "--no-scope", *averaged])
    assert done.exit_code == 0, done.output
    assert "out-of-scope detector" not in done.output
    assert json.loads((out / "intentkit.json").read_text(encoding="utf-8"))["config"]["average_decays"] == [0.9, 0.99]
    done = CliRunner().invoke(app, [*args, "--average-decay", "1.5"])
    assert done.exit_code != 0 and "strictly between 0 and 1" in done.output

    done = CliRunner().invoke(app, [*args, "--batch-size", "4", "--method", "full", "--out", str(tmp_path / "full")])
    assert done.exit_code == 0, done.output  # trained and saved; the export needs the base as GGUF
    assert "not exported" in done.output and "convert_hf_to_gguf.py" in done.output
    assert (tmp_path / "full" / "model.safetensors").is_file() and not (tmp_path / "full" / "model.gguf").exists()


def test_cli_train_resumes_from_its_checkpoint(tiny_records, tiny_model, tmp_path):
    from typer.testing import CliRunner

    from intentkit.cli import app

    model, tokenizer = tiny_model()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    in_scope = [{"instruction": r.instruction, "output": r.target} for r in tiny_records if r.calls]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in in_scope), encoding="utf-8")
    args = ["train", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "run"), "--base", str(tmp_path / "base")]
    args += ["--batch-size", "4", "--lora-r", "4", "--lora-alpha", "4", "--seed", "7", "--save-every", "1", "--no-export"]
    done = CliRunner().invoke(app, [*args, "--epochs", "1"])
    assert done.exit_code == 0, done.output
    assert "trained 3 steps," in done.output and (tmp_path / "run" / "checkpoint-last" / "state.pt").is_file()
    meta = json.loads((tmp_path / "run" / "intentkit.json").read_text(encoding="utf-8"))
    assert (meta["config"]["lora_alpha"], meta["config"]["seed"], meta["config"]["save_every"]) == (4, 7, 1)

    done = CliRunner().invoke(app, [*args, "--epochs", "2"])
    assert done.exit_code == 0, done.output
    assert "trained 6 steps (resumed from step 3)" in done.output

    done = CliRunner().invoke(app, [*args, "--epochs", "3", "--learning-rate", "1e-3"])
    assert done.exit_code == 2
    assert "different training run (changed: learning_rate)" in done.output


def test_the_held_back_slice_is_stratified_reproducible_and_spares_small_intents() -> None:
    from trainers.pipeline import split_holdout

    rows = [{"instruction": f"放歌{i}", "output": "play_music()"} for i in range(20)]
    rows += [{"instruction": f"天气{i}", "output": f'weather_search(city="城{i}")'} for i in range(10)]
    rows += [{"instruction": f"闲聊{i}", "output": None} for i in range(10)]
    rows += [{"instruction": f"小声{i}", "output": "volume_down()"} for i in range(4)]  # too few to spare any
    records = records_from_rows((f"t.jsonl:{i}", r) for i, r in enumerate(rows))
    kept, held = split_holdout(records, 0.1, seed=1)
    assert sorted(r.intent for r in held) == ["no_intent", "play_music", "play_music", "weather_search"]
    assert len(kept) + len(held) == len(records) and not {r.source for r in kept} & {r.source for r in held}
    assert [r.source for r in split_holdout(records, 0.1, seed=1)[1]] == [r.source for r in held]
    assert split_holdout(records, 0.0) == (list(records), [])
    with pytest.raises(ValueError, match="holdout"):
        split_holdout(records, 1.0)


def test_a_trimmed_head_is_the_softmax_over_its_vocabulary(tiny_records, tiny_model) -> None:
    """The loss over a trimmed head is the full model's cross-entropy with the normaliser taken
    over the kept tokens alone: what a deployment trimmed to them decodes from."""
    import torch.nn.functional as F

    from trainers.train import TrimmedHead, _collate

    model, tokenizer = tiny_model()
    model.get_output_embeddings().weight.requires_grad_(False)  # tied to the embeddings, frozen as LoRA leaves them
    encoded, _ = encode_records(tiny_records[:4], tokenizer, PromptFormat())
    ids, mask, labels = _collate(encoded, tokenizer.pad_token_id, torch.device("cpu"))
    answers = {t for e in encoded for t in e.input_ids[e.answer_start :]}
    size = model.get_output_embeddings().weight.shape[0]
    head = TrimmedHead(model, sorted(answers | set(range(0, size, 3))))
    assert len(head) == len(answers | set(range(0, size, 3))) < size
    trimmed, n = answer_loss(model, ids, mask, labels, head=head)
    full, _ = answer_loss(model, ids, mask, labels)
    targets = labels[:, 1:]
    where = targets != -100
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1][where][:, head.ids]
    reference = F.cross_entropy(logits, head.index[targets[where]])
    assert n == int(where.sum()) and trimmed.item() == pytest.approx(reference.item(), rel=1e-4)
    assert trimmed.item() < full.item()  # a smaller normaliser

    outside = TrimmedHead(model, sorted(set(range(size)) - {max(answers)}))
    with pytest.raises(ConfigError, match=rf"answer tokens \[{max(answers)}\] are not in the trimmed vocabulary"):
        answer_loss(model, ids, mask, labels, head=outside)
    with pytest.raises(ConfigError, match="must lie in"):
        TrimmedHead(model, [size])


def test_a_trimmed_head_needs_frozen_output_embeddings(tiny_model) -> None:
    from trainers.train import TrimmedHead

    model, _ = tiny_model()
    with pytest.raises(ConfigError, match="frozen output embeddings"):
        TrimmedHead(model, [1, 2, 3])  # a fresh model trains every weight


def test_training_over_a_vocabulary_keeps_every_answer_token_and_says_so(tiny_records, tiny_model, tmp_path: Path) -> None:
    model, tokenizer = tiny_model()
    config = TrainConfig(epochs=2, learning_rate=5e-2, batch_size=4, lora_r=4, lora_dropout=0.0)
    given = list(range(0, 40))
    result = train(
        tiny_records,
        tmp_path,
        config,
        dev=tiny_records[:4],
        model_and_tokenizer=(model, tokenizer),
        progress=False,
        vocabulary=given,
    )
    encoded, _ = encode_records(tiny_records, tokenizer, PromptFormat())
    answers = {t for e in encoded for t in e.input_ids[e.answer_start :]}
    assert result.vocabulary == sorted(set(given) | answers)
    meta = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    assert meta["softmax_vocabulary"] == len(result.vocabulary)
    losses = [h["dev_loss"] for h in result.history if "dev_loss" in h]
    assert losses[-1] < losses[0]

    plain = train(
        tiny_records,
        tmp_path / "plain",
        config.model_copy(update={"trimmed_head": False}),
        model_and_tokenizer=tiny_model(),
        progress=False,
        vocabulary=given,
    )
    assert plain.vocabulary is None
    assert json.loads((tmp_path / "plain" / "intentkit.json").read_text(encoding="utf-8")).get("softmax_vocabulary") is None


@pytest.mark.parametrize(
    ("precision", "device", "bf16_cpu", "expected"),
    [
        ("fp32", "cpu", True, None),
        ("bf16", "cpu", False, "bfloat16"),
        ("auto", "cpu", True, "bfloat16"),
        ("auto", "cpu", False, None),
        ("auto", "meta", True, None),
    ],
)
def test_precision_auto_takes_bf16_only_where_the_hardware_has_it(monkeypatch, precision, device, bf16_cpu, expected) -> None:
    from trainers.train import autocast_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_cpu, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    dtype = autocast_dtype(precision, torch.device(device))
    assert (dtype and str(dtype).removeprefix("torch.")) == expected


def test_bf16_training_follows_fp32_closely(tiny_records, tiny_model, tmp_path: Path) -> None:
    """bf16 autocast changes the arithmetic, not the run: the same steps, losses within a few per cent."""
    curves = {}
    for precision in ("fp32", "bf16"):
        config = TrainConfig(epochs=3, learning_rate=2e-2, batch_size=4, lora_r=4, lora_dropout=0.0, precision=precision)
        result = train(tiny_records, tmp_path / precision, config, model_and_tokenizer=tiny_model(), progress=False)
        curves[precision] = [h["loss"] for h in result.history]
        meta = json.loads((tmp_path / precision / "intentkit.json").read_text(encoding="utf-8"))
        assert meta["precision"] == precision
    assert len(curves["fp32"]) == len(curves["bf16"]) and curves["bf16"][-1] < curves["bf16"][0]
    for a, b in zip(curves["fp32"], curves["bf16"], strict=True):
        assert b == pytest.approx(a, rel=0.05, abs=0.02)
