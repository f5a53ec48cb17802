"""intentkit: route utterances to typed function calls with a small fine-tuned model.

``import intentkit`` loads no backend, torch, transformers, llama_cpp, fastapi or typer.
"""

from .backends.base import Backend, GenerateRequest, Generation
from .calls import NO_INTENT, Call, render_call
from .errors import (
    ArgumentError,
    ArgumentProblem,
    BackendError,
    ConfigError,
    DataError,
    DuplicateIntentError,
    ExampleError,
    ExportError,
    HandlerError,
    InputError,
    IntentKitError,
    MissingDependencyError,
    ModelDirError,
    ParseError,
    RegistryError,
    ScopeFileError,
    UnknownIntentError,
    UnsupportedSignatureError,
)
from .model_dir import ModelInfo
from .parser import ParseOutcome, parse_calls, parse_calls_lenient
from .prompt import DEFAULT_SYSTEM_PROMPT, PromptFormat
from .registry import BoundCall, Example, IntentCatalog, IntentSpec, Param, Registry
from .router import RoutePath, Router, RouterConfig, RouteResult, Session, Status, Timings

#: The one version string (pyproject.toml reads it from here).
__version__ = "0.2.0"

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "NO_INTENT",
    "ArgumentError",
    "ArgumentProblem",
    "Backend",
    "BackendError",
    "BoundCall",
    "Call",
    "ConfigError",
    "DataError",
    "DuplicateIntentError",
    "Example",
    "ExampleError",
    "ExportError",
    "GenerateRequest",
    "Generation",
    "HandlerError",
    "InputError",
    "IntentCatalog",
    "IntentKitError",
    "IntentSpec",
    "MissingDependencyError",
    "ModelDirError",
    "ModelInfo",
    "Param",
    "ParseError",
    "ParseOutcome",
    "PromptFormat",
    "Registry",
    "RegistryError",
    "RoutePath",
    "RouteResult",
    "Router",
    "RouterConfig",
    "ScopeFileError",
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
