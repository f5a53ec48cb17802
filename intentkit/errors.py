"""Exceptions raised by intentkit.

Every error the SDK raises derives from :class:`IntentKitError` and carries its context on
attributes (the raw model output, the position in it, the intent and parameter concerned)::

    IntentKitError
    ├── ParseError(ValueError)              model text is not a call: .text, .position
    ├── RegistryError
    │   ├── DuplicateIntentError(ValueError)    an intent name or alias is registered twice
    │   ├── UnsupportedSignatureError(TypeError) a handler signature intentkit cannot bind
    │   └── ExampleError(ValueError)            an example does not fit its intent
    ├── UnknownIntentError(LookupError)     a name no intent answers to: .name, .valid
    ├── ArgumentError(ValueError)           arguments do not fit the handler: .intent, .problems
    ├── HandlerError                        a handler raised: .intent, .exception, .traceback
    └── BackendError                        a backend failed or was misused
        └── MissingDependencyError(ImportError) an optional extra is not installed
"""

from __future__ import annotations

import traceback as _traceback
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ArgumentError",
    "ArgumentProblem",
    "BackendError",
    "DuplicateIntentError",
    "ExampleError",
    "HandlerError",
    "IntentKitError",
    "MissingDependencyError",
    "ParseError",
    "RegistryError",
    "UnknownIntentError",
    "UnsupportedSignatureError",
]


class IntentKitError(Exception):
    """Root of every exception intentkit raises."""


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
    """A backend failed to produce an answer."""


class MissingDependencyError(BackendError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"{package} is not installed: pip install 'intentkit-router[{extra}]'")
