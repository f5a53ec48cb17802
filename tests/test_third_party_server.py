"""The bundled model in llama-cpp-python's own OpenAI-compatible server (a real third-party
server, started on 127.0.0.1): OpenAIBackend gets the in-process answers in chat mode (the server
renders the GGUF's chat template) and in completions mode (intentkit renders the prompt)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server] (the dev extra)")
pytest.importorskip("httpx")

from intentkit import Router
from intentkit.backends.llamacpp import LlamaCppBackend
from intentkit.backends.openai import OpenAIBackend
from intentkit.demo import SmartHome
from intentkit.testing import llama_cpp_server
from trainers.data import load_records
from trainers.evaluate import backend_predictor, evaluate

DEV = Path(__file__).resolve().parent.parent / "examples" / "demo" / "dev.jsonl"
ROWS = 60

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local():
    backend = LlamaCppBackend.default()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def server(local):
    with llama_cpp_server(local.loaded_path) as url:
        yield url


@pytest.fixture(scope="module")
def reference(local):
    registry = SmartHome().register(Router()).registry
    records = load_records(DEV)[:ROWS]
    return records, registry, evaluate(records, backend_predictor(local, registry, local.prompt))


def test_the_deployed_gguf_describes_the_trained_prompt(local) -> None:
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(local.loaded_path))
    assert reader.fields["tokenizer.chat_template"].contents() == local.prompt.chat_template()
    eot = reader.fields["tokenizer.ggml.eot_token_id"].contents()
    assert local._model.piece(eot) == b"<end_of_turn>"  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_the_server_routes_as_the_in_process_backend(server, reference, local, mode: str) -> None:
    records, registry, in_process = reference
    with OpenAIBackend(server, model="intentkit", mode=mode, timeout=60) as remote:  # type: ignore[arg-type]
        report = evaluate(records, backend_predictor(remote, registry, local.prompt))
    assert report.parse_failure_rate == 0.0
    assert report.intent_accuracy >= in_process.intent_accuracy - 0.01 - 1e-9
    assert report.exact_call_accuracy >= in_process.exact_call_accuracy - 0.01 - 1e-9
    with OpenAIBackend(server, model="intentkit", mode=mode, timeout=60) as remote:  # type: ignore[arg-type]
        generation = remote.generate(_request(registry, local, "帮我查一下杭州明天的天气"))
    assert generation.text.startswith('weather_search(city="杭州"')  # unconstrained on the server
    if mode == "completions":  # llama-cpp-python gives token logprobs for completions, not for chat
        assert generation.confidence is not None and generation.confidence > 0.5


def _request(registry, local, text: str):
    from intentkit.backends.base import GenerateRequest

    return GenerateRequest(text, registry.catalog, local.prompt, 64)
