"""intentkit: route utterances to typed function calls with a small fine-tuned model.

``import intentkit`` loads no backend, torch, transformers, llama_cpp, fastapi or typer.
"""

from .backends.base import Backend, GenerateRequest, Generation
from .calls import NO_INTENT, Call, render_call
from .errors import (
    ArgumentError,
    ArgumentProblem,
    BackendError,
    DuplicateIntentError,
    ExampleError,
    HandlerError,
    IntentKitError,
    MissingDependencyError,
    ParseError,
    RegistryError,
    UnknownIntentError,
    UnsupportedSignatureError,
)
from .parser import ParseOutcome, parse_calls, parse_calls_lenient
from .prompt import DEFAULT_SYSTEM_PROMPT, PromptFormat
from .registry import BoundCall, Example, IntentCatalog, IntentSpec, Param, Registry
from .router import InputError, Path, Router, RouterConfig, RouteResult, Session, Status, Timings

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "NO_INTENT",
    "ArgumentError",
    "ArgumentProblem",
    "Backend",
    "BackendError",
    "BoundCall",
    "Call",
    "DuplicateIntentError",
    "Example",
    "ExampleError",
    "GenerateRequest",
    "Generation",
    "HandlerError",
    "InputError",
    "IntentCatalog",
    "IntentKitError",
    "IntentSpec",
    "MissingDependencyError",
    "Param",
    "ParseError",
    "ParseOutcome",
    "Path",
    "PromptFormat",
    "Registry",
    "RegistryError",
    "RouteResult",
    "Router",
    "RouterConfig",
    "Session",
    "Status",
    "Timings",
    "UnknownIntentError",
    "UnsupportedSignatureError",
    "__version__",
    "parse_calls",
    "parse_calls_lenient",
    "render_call",
]
