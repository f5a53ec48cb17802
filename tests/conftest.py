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


def _required(variable: str) -> bool:
    import os

    return os.environ.get(variable, "") not in ("", "0")


def _postgres_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 for the session: ``$INTENTKIT_TEST_POSTGRES_URL``
    where set, else a throwaway cluster this fixture creates with Debian's ``initdb`` and
    ``pg_ctl`` (as the ``postgres`` user when the tests run as root, which initdb refuses).
    Skipped with the reason when there is no server to start, unless
    ``INTENTKIT_REQUIRE_POSTGRES=1`` (CI), where that fails instead."""
    import os
    import shutil
    import subprocess
    import tempfile

    given = os.environ.get("INTENTKIT_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        reason = "no PostgreSQL server here: apt-get install postgresql (or set INTENTKIT_TEST_POSTGRES_URL)"
        if _required("INTENTKIT_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    root = tempfile.mkdtemp(prefix="intentkit-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(
        [*as_user, initdb, "-D", data, "-A", "trust", "-U", "intentkit", "-E", "UTF8"], check=True, capture_output=True
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=on"
    subprocess.run(
        [*as_user, pg_ctl, "-D", data, "-o", options, "-l", os.path.join(root, "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://intentkit@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver: ``(browser, driver)`` paths. Skipped with the reason
    when missing, unless ``INTENTKIT_REQUIRE_BROWSER=1`` (CI)."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        reason = "no browser here: apt-get install chromium chromium-driver"
        if _required("INTENTKIT_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    return browser, driver
