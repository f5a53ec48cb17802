"""TransformersBackend on a tiny randomly initialised Gemma3 built in the test (CPU, no download)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


from intentkit import ModelInfo, PromptFormat, Router
from intentkit.backends.base import GenerateRequest
from intentkit.backends.transformers import TransformersBackend
from trainers.train import TrainConfig, train


def demo_router(backend) -> Router:
    router = Router(backend, fast_path=False)

    @router.intent
    def play_music() -> str:
        return "playing"

    @router.intent
    def volume_down() -> str:
        return "quieter"

    @router.intent
    def weather_search(city: str) -> str:
        return city

    return router


@pytest.fixture(scope="module")
def trained(tiny_records, tiny_model, tmp_path_factory):
    """The tiny model after a short LoRA run on the four seed answers (so it has learned them)."""
    out = tmp_path_factory.mktemp("tiny")
    model, tokenizer = tiny_model()
    config = TrainConfig(
        epochs=40, batch_size=4, learning_rate=3e-3, lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"
    )
    train(tiny_records, out, config, model_and_tokenizer=(model, tokenizer), progress=False)
    from peft import PeftModel

    from intentkit.backends.transformers import quiet_peft

    base, tokenizer = tiny_model()
    with quiet_peft():  # peft's own FutureWarning
        merged = PeftModel.from_pretrained(base, out).merge_and_unload()
    return merged, tokenizer


def test_constrained_routes_to_registered_intents(trained):
    model, tokenizer = trained
    router = demo_router(TransformersBackend.from_model(model, tokenizer))
    assert router.handle("我想听音乐").results == ["playing"]
    assert router.handle("太吵了").results == ["quieter"]
    result = router.handle("查下杭州天气")
    assert result.results == ["杭州"] and 0 < result.confidence <= 1
    assert router.handle("今天吃什么").status.value == "no_intent"


def test_prefix_cache_is_reused(trained):
    model, tokenizer = trained
    backend = TransformersBackend.from_model(model, tokenizer)
    router = demo_router(backend)
    catalog = router.registry.catalog
    first = backend.generate(GenerateRequest("我想听音乐", catalog, PromptFormat()))
    second = backend.generate(GenerateRequest("太吵了", catalog, PromptFormat()))
    assert first.info["cached_tokens"] == 0
    assert second.info["cached_tokens"] > 20  # the system prompt was not evaluated again


def test_unconstrained_and_batched_agree(trained):
    model, tokenizer = trained
    backend = TransformersBackend.from_model(model, tokenizer, constrained=False)
    catalog = demo_router(backend).registry.catalog
    requests = [GenerateRequest(t, catalog, PromptFormat()) for t in ("我想听音乐", "太吵了", "查下杭州天气")]
    one_by_one = [backend.generate(r).text for r in requests]
    assert one_by_one == ["play_music()", "volume_down()", 'weather_search(city="杭州")']
    assert [g.text for g in backend.generate_batch(requests)] == one_by_one


def test_prompt_mismatch_warns(trained):
    from intentkit.prompt import PromptMismatchWarning

    model, tokenizer = trained
    saved = PromptFormat(system_prompt="another prompt").to_dict()
    backend = TransformersBackend.from_model(model, tokenizer, info=ModelInfo(prompt=saved))
    assert demo_router(backend).prompt == backend.prompt  # by default the router renders the trained prompt
    router = demo_router(backend)
    router.prompt = PromptFormat()  # another prompt, on purpose
    with pytest.warns(PromptMismatchWarning, match="trained with prompt"):
        router.handle("我想听音乐")


def test_missing_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        TransformersBackend(tmp_path / "nope")


def test_out_of_scope_detector_on_hidden_states(trained):
    import numpy as np

    from intentkit.scope import ScopeDetector

    model, tokenizer = trained
    backend = TransformersBackend.from_model(model, tokenizer)
    router = demo_router(backend)
    before = [router.handle(t, dispatch=False).call_text for t in ("我想听音乐", "查下杭州天气")]
    features = np.stack([backend.hidden_state(t) for t in ("我想听音乐", "太吵了")])
    assert features.shape == (2, model.config.hidden_size)
    assert np.allclose(backend.hidden_state("我想听音乐"), features[0], atol=1e-5)  # cached prefix, same state

    backend.set_scope(ScopeDetector(features, ["play_music", "volume_down"], threshold=2.0))
    assert [router.handle(t, dispatch=False).call_text for t in ("我想听音乐", "查下杭州天气")] == before
    near = router.handle("我想听音乐", dispatch=False)
    assert near.scope.distance < 1e-4 and near.scope.nearest_intent == "play_music"

    backend.set_scope(ScopeDetector(features, ["play_music", "volume_down"], threshold=-1.0))
    away = router.handle("我想听音乐", dispatch=False)
    assert away.status.value == "no_intent" and away.scope.out_of_scope is True

    with pytest.raises(ValueError, match=r"fitted on 3-wide hidden states; this model's are \d+ wide"):
        backend.set_scope(ScopeDetector(np.ones((2, 3)), ["a", "b"], threshold=0.1))


def test_quiet_peft_silences_two_third_party_messages_only_inside():
    import logging
    import warnings

    from intentkit.backends.transformers import quiet_peft

    bitsandbytes = logging.getLogger("bitsandbytes.backends.cpu.ops")
    before = bitsandbytes.level
    deprecated = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    with quiet_peft():
        assert bitsandbytes.getEffectiveLevel() == logging.ERROR
        warnings.warn(deprecated, FutureWarning, stacklevel=1)  # pytest turns warnings into errors: this would fail
        with pytest.warns(FutureWarning, match="another"):
            warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    assert bitsandbytes.level == before
    with pytest.warns(FutureWarning, match="is_gradient_checkpointing"):
        warnings.warn(deprecated, FutureWarning, stacklevel=1)


def test_every_evaluation_runs_on_the_backends_one_worker_thread(trained):
    """llama.cpp's compute threads belong to the thread that calls it; a model called from two
    threads spins two sets of them (1.9× slower decoding measured on 2 cores). Sync, async and
    other threads' requests all run on the backend's one worker."""
    import asyncio
    import threading

    model, tokenizer = trained
    backend = TransformersBackend.from_model(model, tokenizer)
    router = demo_router(backend)
    seen: list[int] = []
    run = backend._generator.run
    backend._generator.run = lambda request: seen.append(threading.get_ident()) or run(request)  # type: ignore[method-assign]
    router.handle("我想听音乐")
    asyncio.run(router.ahandle("太吵了"))
    other = threading.Thread(target=router.handle, args=("查下杭州天气",))
    other.start()
    other.join()
    backend.hidden_state("我想听音乐")
    assert len(seen) == 3 and len(set(seen)) == 1 and seen[0] != threading.get_ident()
    router.close()
    assert router.handle("我想听音乐").status.value == "backend_error"


def test_a_model_directory_with_keep_tokens_decodes_over_that_vocabulary(tiny_records, tiny_model, tmp_path):
    """keep_tokens.npy is the vocabulary the llama.cpp deployment is trimmed to and the softmax was
    trained over: the transformers backend decodes over it too."""
    import numpy as np

    config = TrainConfig(method="full", epochs=1, batch_size=4, train_embeddings=True)
    train(tiny_records, tmp_path, config, model_and_tokenizer=tiny_model(), progress=False)
    assert TransformersBackend(tmp_path, device="cpu")._hf.blocked is None
    np.save(tmp_path / "keep_tokens.npy", np.arange(0, 60, dtype=np.uint32))
    backend = TransformersBackend(tmp_path, device="cpu")
    logits = backend._hf.feed([2, 5, 7], all_logits=True)
    assert logits.shape[0] == 3
    assert np.isneginf(logits[:, 60:]).all() and np.isfinite(logits[:, :60]).all()
