"""Shared fixtures: a live uvicorn server, the tiny model and records of the training tests, and
the real base model dequantized by transformers once per test session."""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from intentkit import PromptFormat
from trainers.data import records_from_rows


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    """Run an ASGI app on a real uvicorn server on 127.0.0.1; yields its base URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


@pytest.fixture(scope="session")
def live_server() -> Callable[[Any], contextlib.AbstractContextManager[str]]:
    """``with live_server(app) as url:`` — the app on a real server on 127.0.0.1."""
    return _serve


ROWS = [
    {"instruction": "我想听音乐", "output": "play_music()"},
    {"instruction": "太吵了", "output": "volume_down()"},
    {"instruction": "查下杭州天气", "output": 'weather_search(city="杭州")'},
    {"instruction": "今天吃什么", "output": None},
] * 4
TINY_RECORDS = records_from_rows((f"t.jsonl:{i + 1}", r) for i, r in enumerate(ROWS))


def _tiny_model_and_tokenizer(width: int = 32) -> tuple[Any, Any]:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    prompt = PromptFormat()
    specials = ["<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    text = "".join(prompt.render(r.instruction) + r.target for r in TINY_RECORDS)
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
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=width // 2,
        max_position_embeddings=256,
        sliding_window=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config), tokenizer


@pytest.fixture(scope="session")
def tiny_records() -> list[Any]:
    """Sixteen training records over three intents and an out-of-scope row."""
    return list(TINY_RECORDS)


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., tuple[Any, Any]]:
    """``tiny_model(width=32)`` — a new randomly initialised gemma-3 of two layers and a
    character-level tokenizer over the tiny records' text (no download; built in milliseconds)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return _tiny_model_and_tokenizer


@pytest.fixture(scope="session")
def base_model() -> tuple[Any, Any]:
    """The default base (gemma-3-270m Q4_K_M) dequantized by transformers, loaded once per test
    session (about a minute); never modified: tests that train or merge take :func:`fresh_base`."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from trainers.base import load_base

    model, tokenizer = load_base("default")
    model.eval()
    return model, tokenizer


@pytest.fixture
def fresh_base(base_model: tuple[Any, Any]) -> tuple[Any, Any]:
    """A copy of :func:`base_model` a test may train or merge into."""
    model, tokenizer = base_model
    return copy.deepcopy(model), tokenizer
