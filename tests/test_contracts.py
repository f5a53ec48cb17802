"""The contracts issue #22 made explicit: one error tree, the model-directory record, the backend
contract (prompt, typed scope, token counts, close), and input the router must not send on."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import intentkit
import trainers
from intentkit import BackendError, IntentKitError, MissingDependencyError, ModelDirError, ModelInfo, Router
from intentkit.backends import FakeBackend, Generation, load_backend
from intentkit.errors import EXTRAS, ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _public_exceptions() -> list[type[BaseException]]:
    found = {}
    for package in (intentkit, trainers):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith(".cli") or ".server" in info.name:
                continue  # they need optional extras and define no exception classes
            try:
                module = importlib.import_module(info.name)
            except ImportError:
                continue
            for name, value in vars(module).items():
                if inspect.isclass(value) and issubclass(value, Exception) and not issubclass(value, Warning):
                    if name.startswith("_"):
                        continue
                    if value.__module__.startswith(("intentkit", "trainers")):
                        found[f"{value.__module__}.{name}"] = value
    return list(found.values())


def test_every_public_exception_derives_from_intentkit_error() -> None:
    classes = _public_exceptions()
    assert len(classes) >= 15
    assert [c.__name__ for c in classes if not issubclass(c, IntentKitError)] == []


def test_missing_dependency_is_not_a_backend_error_and_names_one_extra() -> None:
    assert not issubclass(MissingDependencyError, BackendError) and issubclass(MissingDependencyError, ImportError)
    error = MissingDependencyError("transformers")
    assert error.extra == EXTRAS["transformers"] == "hf" and "pip install 'intentkit-router[hf]'" in str(error)
    with pytest.raises(KeyError, match="no extra is known"):
        MissingDependencyError("leftpad")


def test_backend_error_keeps_what_happened_on_attributes() -> None:
    import pickle

    error = BackendError("503 from x", url="http://x/v1/chat/completions", status_code=503, attempts=4)
    again = pickle.loads(pickle.dumps(error))
    assert (again.url, again.status_code, again.attempts, str(again)) == (error.url, 503, 4, "503 from x")


def test_model_info_round_trip_and_versions(tmp_path: Path) -> None:
    info = ModelInfo(method="full", intents=["a"], prompt=intentkit.PromptFormat().to_dict())
    info.save(tmp_path)
    loaded = ModelInfo.load(tmp_path)
    assert loaded == info and loaded.deployed_file == "model.gguf" and loaded.prompt_format == intentkit.PromptFormat()
    assert ModelInfo().deployed_file == "adapter.gguf" and ModelInfo.load(tmp_path / "none") == ModelInfo()
    record = json.loads((tmp_path / "intentkit.json").read_text(encoding="utf-8"))
    (tmp_path / "intentkit.json").write_text(json.dumps({**record, "schema_version": 9}), encoding="utf-8")
    with pytest.raises(ModelDirError, match="schema_version 9; this intentkit reads version 1"):
        ModelInfo.load(tmp_path)
    (tmp_path / "intentkit.json").write_text(json.dumps({**record, "method": "dora"}), encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"intentkit\.json: not a valid model record: method"):
        ModelInfo.load(tmp_path)
    (tmp_path / "intentkit.json").write_text("{", encoding="utf-8")
    with pytest.raises(ModelDirError, match="unreadable model record"):
        ModelInfo.load(tmp_path)


def test_the_bundled_record_reads_as_a_model_info() -> None:
    info = ModelInfo.load(ROOT / "models" / "smart-home")
    assert info.method == "lora" and len(info.intents) == 20 and info.prompt_format is not None


def test_load_backend_names() -> None:
    assert isinstance(load_backend.__doc__, str)
    with pytest.raises(ConfigError, match="unknown backend 'nope'; backends: llamacpp"):
        load_backend("nope")
    with pytest.raises(ConfigError, match="needs a base URL"):
        load_backend("openai")
    with pytest.raises(ConfigError, match="needs a model"):
        load_backend("hf")


def test_router_takes_the_backends_prompt_and_a_registry() -> None:
    from intentkit import PromptFormat, Registry

    trained = PromptFormat(system_prompt="trained")

    class Trained(FakeBackend):
        @property
        def prompt(self) -> PromptFormat:
            return trained

    registry = Registry()
    registry.register(lambda: "ok", name="ping", examples=["ping"])
    router = Router(Trained("ping()"), registry=registry)
    assert router.prompt == trained and router.registry is registry
    assert router.handle("ping").path.value == "fast_exact"  # the given registry's examples are indexed
    assert Router(FakeBackend("x()")).prompt == PromptFormat()


def test_generation_fields_reach_the_result() -> None:
    router = Router(FakeBackend(lambda r: Generation("ping()", prompt_tokens=31, completion_tokens=4)))
    router.intent(lambda: "pong", name="ping")
    result = router.handle("ping please")
    assert (result.prompt_tokens, result.completion_tokens) == (31, 4)
    assert result.to_dict()["usage"] == {"prompt_tokens": 31, "completion_tokens": 4}


def test_closed_backends_refuse_requests_and_routers_close_async() -> None:
    backend = FakeBackend("ping()")
    router = Router(backend)
    router.intent(lambda: "pong", name="ping")

    async def run() -> None:
        async with router:
            assert (await router.ahandle("ping it")).ok
        assert backend.closed

    asyncio.run(run())
    assert router.handle("ping it").status.value == "backend_error"
    router.close()  # twice is harmless


@pytest.mark.parametrize("text", ["\ud800", "灯\udfff开"])
def test_text_that_is_not_unicode_is_invalid_not_a_crash(text: str) -> None:
    router = Router(FakeBackend("ping()"))
    result = router.handle(text)
    assert result.status.value == "invalid" and "not valid Unicode text" in str(result.error)
    assert result.error is not None and type(result.error).__name__ == "InputError"


def test_data_validate_needs_no_numpy(tmp_path: Path) -> None:
    """`intentkit data validate` with only the cli extra: numpy (and torch, llama_cpp) absent."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"instruction": "我想听音乐", "output": "play_music()"}\n', encoding="utf-8")
    script = (
        "import sys\n"
        "for name in ('numpy', 'torch', 'llama_cpp', 'transformers'):\n"
        "    sys.modules[name] = None\n"
        "from intentkit.cli import app\n"
        f"app(['data', 'validate', {str(data)!r}, '--min-per-intent', '1'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert "play_music" in done.stdout
