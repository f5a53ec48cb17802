"""Intents: handler signatures turned into typed, validated argument models.

``@router.intent`` only records a spec; this module does the work once, at registration:
``inspect.signature`` plus type hints become a list of :class:`ParamSpec` and a pydantic model,
so a bad signature fails at import time, not when the first user speaks.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import pydantic

from .calls import NO_INTENT, Call, Value
from .coerce import match_choice, prepare_numerals, to_bool, to_float, to_int
from .errors import (
    MISSING,
    ArgumentError,
    ArgumentProblem,
    DuplicateIntentError,
    ExampleError,
    UnknownIntentError,
    UnsupportedSignatureError,
)

if TYPE_CHECKING:
    from .drafts import Draft

__all__ = [
    "BoundCall",
    "Example",
    "IntentCatalog",
    "IntentSpec",
    "Param",
    "ParamSpec",
    "Registry",
]

#: Default similarity (0–100) a value needs to be read as one of a parameter's choices.
DEFAULT_CHOICE_CUTOFF = 85.0

_SCALARS: dict[type, str] = {str: "str", int: "int", float: "float", bool: "bool"}
_SUPPORTED = "str, int, float, bool, Literal[...], an Enum, list[...] of those, dict[str, ...], a pydantic model, Optional[...]"


@dataclass(frozen=True, slots=True)
class Param:
    """Extra facts about a parameter, given as ``Annotated[str, Param(...)]``.

    ``choices`` restricts a ``str`` to declared values (near misses are normalised); a mapping
    gives each spoken form the value it stands for (``{"台灯": "床头灯", "床头灯": "床头灯"}``:
    an alias binds as its name);
    ``aliases`` are other argument names the model may use (e.g. ``位置`` for ``room``);
    ``from_utterance`` says the value is text copied from the utterance (a city, a song title),
    which lets constrained decoding restrict it to the utterance's own text — set it to
    ``False`` for values the model must normalise or invent (``"明儿"`` → ``"明天"``);
    ``numbers`` says a text value may also be a bare number (``volume_step="up"`` or
    ``volume_step=-20``), which constrained decoding then writes as one;
    ``ask`` is the question the router asks when a required value is missing
    (``"您想查哪个城市？"``; default: one made from ``description``).
    """

    description: str = ""
    choices: Sequence[str] | Mapping[str, str] = ()
    aliases: Sequence[str] = ()
    from_utterance: bool = True
    numbers: bool = False
    ask: str = ""


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One handler parameter as the router sees it."""

    name: str
    kind: str  # "str" | "int" | "float" | "bool" | "choice" | "list" | "object"
    annotation: Any
    required: bool
    default: Any = None
    optional: bool = False
    choices: tuple[str, ...] = ()
    choice_values: Mapping[str, Any] = field(default_factory=dict)
    item: ParamSpec | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    positional_only: bool = False
    from_utterance: bool = True
    numbers: bool = False
    ask: str = ""

    def json_schema(self) -> dict[str, Any]:
        """This parameter as a JSON-schema property (OpenAI tool format)."""
        schema: dict[str, Any]
        if self.kind == "list" and self.item is not None:
            schema = {"type": "array", "items": self.item.json_schema()}
        elif self.kind == "object":
            inner = _unwrap(self.annotation)
            model = isinstance(inner, type) and issubclass(inner, pydantic.BaseModel)
            schema = inner.model_json_schema() if model else pydantic.TypeAdapter(inner).json_schema()
        elif self.kind == "choice":
            values = list(dict.fromkeys(self.choice_values.values()))  # enum names and values map to one member
            schema = {"enum": [v.value if isinstance(v, enum.Enum) else v for v in values]}
        else:
            schema = {"type": {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}[self.kind]}
        if self.description:
            schema["description"] = self.description
        if not self.required and self.default is not None and not isinstance(self.default, enum.Enum):
            schema["default"] = self.default
        return schema


@dataclass(frozen=True, slots=True)
class Example:
    """An utterance and the arguments of the call it should produce."""

    text: str
    arguments: Mapping[str, Value] = field(default_factory=dict)


ExampleLike = str | Example | tuple[str, Mapping[str, Value]]


@dataclass(frozen=True, slots=True)
class BoundCall:
    """A call that passed validation: ``arguments`` hold typed values, defaults filled in."""

    name: str
    arguments: dict[str, Any]
    call: Call

    def render(self) -> str:
        """The canonical call text, e.g. ``weather_search(city="杭州", date="今天")``; unset (None) values are left out."""
        plain = {k: _plain(v) for k, v in self.arguments.items() if v is not None}
        return Call(self.name, (), plain).render()


def _plain(value: Any) -> Any:
    """A bound argument as call text writes it: enums as their value, models as their fields."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(eq=False)
class IntentSpec:
    """Everything recorded about one intent. Built by :meth:`Registry.register`."""

    name: str
    handler: Callable[..., Any]
    description: str
    params: tuple[ParamSpec, ...]
    arguments_model: type[pydantic.BaseModel]
    examples: list[Example] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    is_async: bool = False
    confirm: str | bool = False  # ask before running: the question, or True for one made from the description
    # Called with (validated arguments, utterance) before the call runs; returns the arguments
    # to use, validated again (a Home Assistant registry grounds names in the home this way).
    resolve: Callable[[dict[str, Any], str], dict[str, Any]] | None = None

    def param(self, name: str) -> ParamSpec | None:
        for spec in self.params:
            if name == spec.name or name in spec.aliases:
                return spec
        return None

    def bind(self, call: Call, *, cutoff: float = DEFAULT_CHOICE_CUTOFF) -> BoundCall:
        """Bind a parsed call to this intent's parameters and validate it.

        Positional values bind in declaration order. Raises :class:`ArgumentError` listing every
        problem (unknown or missing arguments, values that do not fit their type).
        """
        problems: list[ArgumentProblem] = []
        given: dict[str, Value] = {}
        if len(call.args) > len(self.params):
            extra = call.args[len(self.params) :]
            problems.append(
                ArgumentProblem(None, list(extra), f"{self.name} takes {len(self.params)} arguments, got {len(call.args)}")
            )
        for spec, value in zip(self.params, call.args, strict=False):
            given[spec.name] = value
        for key, value in call.kwargs.items():
            target = self.param(key)
            if target is None:
                valid = ", ".join(p.name for p in self.params) or "(none)"
                problems.append(ArgumentProblem(key, value, f"{self.name} has no parameter {key!r}; parameters: {valid}"))
            elif target.name in given:
                problems.append(ArgumentProblem(target.name, value, "given twice"))
            else:
                given[target.name] = value
        values: dict[str, Any] = {}
        for spec in self.params:
            if spec.name not in given or (given[spec.name] is None and not spec.optional):
                if spec.required:
                    problems.append(ArgumentProblem(spec.name, None, MISSING))
                continue  # pydantic fills the default
            try:
                values[spec.name] = _coerce(spec, given[spec.name], cutoff)
            except _Mismatch as exc:
                problems.append(ArgumentProblem(spec.name, given[spec.name], str(exc)))
        if problems:
            raise ArgumentError(self.name, problems)
        try:
            model = self.arguments_model.model_validate(values)
        except pydantic.ValidationError as exc:
            raise ArgumentError(
                self.name,
                [
                    ArgumentProblem(str(err["loc"][0]) if err["loc"] else None, err.get("input"), err["msg"])
                    for err in exc.errors()
                ],
            ) from None
        arguments = {spec.name: getattr(model, _field_name(i, spec.name)) for i, spec in enumerate(self.params)}
        return BoundCall(self.name, arguments, call)

    def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Call the handler with validated arguments (positional-only ones positionally)."""
        args = [arguments[p.name] for p in self.params if p.positional_only]
        kwargs = {p.name: arguments[p.name] for p in self.params if not p.positional_only}
        return self.handler(*args, **kwargs)

    def openai_tool(self) -> dict[str, Any]:
        """This intent as an OpenAI tool definition (``{"type": "function", ...}``)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {p.name: p.json_schema() for p in self.params},
                    "required": [p.name for p in self.params if p.required],
                },
            },
        }


@dataclass(frozen=True, slots=True)
class IntentCatalog:
    """An immutable snapshot of the registered intents, for prompts and backends.

    ``fingerprint`` changes whenever anything a model or a decoder depends on changes, so
    backends can cache per-catalog structures (prefix caches, decoding constraints) under it.
    """

    intents: tuple[IntentSpec, ...]
    fingerprint: str

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.intents]


class _Mismatch(Exception):
    """Internal: a value that does not fit its parameter."""


class Registry:
    """The intents a router knows, by name and alias.

    ``drafter``, when set, guesses an utterance's call before the model reads it (``text →``
    :class:`~intentkit.drafts.Draft` or ``None``): a local backend verifies the guess in one batch
    with the prompt and keeps the tokens its own decoder chooses, so a good drafter saves
    evaluations and a bad one costs a few batched tokens, never the answer.
    :func:`~intentkit.homeassistant.registry_for` sets Home Assistant's templates as the drafter
    (and, with ``templates="answer"``, as the ``matcher``)."""

    def __init__(self) -> None:
        self._specs: dict[str, IntentSpec] = {}
        self._lookup: dict[str, IntentSpec] = {}
        self._catalog: IntentCatalog | None = None
        self.drafter: Callable[[str], Draft | None] | None = None
        #: Answers before the model when it can (``text →`` a :class:`~intentkit.calls.Call` or
        #: ``None``): Home Assistant's templates with ``registry_for(templates="answer")``. Its
        #: call is validated and resolved as the model's would be.
        self.matcher: Callable[[str], Call | None] | None = None

    def __len__(self) -> int:
        return len(self._specs)

    def __iter__(self) -> typing.Iterator[IntentSpec]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._lookup

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str) -> IntentSpec:
        """The intent called ``name`` (or aliased so); :class:`UnknownIntentError` lists the valid names."""
        try:
            return self._lookup[name]
        except KeyError:
            raise UnknownIntentError(name, self.names) from None

    def register(
        self,
        handler: Callable[..., Any],
        *,
        name: str | None = None,
        description: str = "",
        examples: Iterable[ExampleLike] = (),
        aliases: Iterable[str] = (),
        replace: bool = False,
        confirm: str | bool = False,
        resolve: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
    ) -> IntentSpec:
        """Record ``handler`` as an intent; raises if the name is taken (unless ``replace``, which
        swaps the handler of an intent already registered under ``name``) or the signature is unsupported.
        ``confirm`` (a question, or ``True``) makes the router ask before a complete call runs;
        ``resolve(arguments, utterance)`` returns the arguments a validated call runs with."""
        name = name or handler.__name__
        aliases = tuple(aliases)
        old = self._specs.get(name) if replace else None
        if replace and old is None:
            raise UnknownIntentError(name, self.names)
        for key in (name, *aliases):
            if old is not None and self._lookup.get(key) is old:
                continue
            if not key.isidentifier():
                raise UnsupportedSignatureError(f"intent name {key!r} is not an identifier a model can call")
            if key == NO_INTENT:
                raise DuplicateIntentError(f"{NO_INTENT!r} is reserved for 'no intent applies'")
            if key in self._lookup:
                raise DuplicateIntentError(f"intent name {key!r} is already registered (by {self._lookup[key].name})")
        params = _params_of(handler, name)
        if any((p.item or p).kind in ("int", "float") for p in params):
            prepare_numerals()
        spec = IntentSpec(
            name=name,
            handler=handler,
            description=description or inspect.getdoc(handler) or "",
            params=params,
            arguments_model=_arguments_model(name, params),
            aliases=aliases,
            is_async=inspect.iscoroutinefunction(handler),
            confirm=confirm,
            resolve=resolve,
        )
        for example in examples:
            spec.examples.append(self._checked_example(spec, example))
        if old is not None:
            for key in (old.name, *old.aliases):
                self._lookup.pop(key, None)
        self._specs[name] = spec
        for key in (name, *aliases):
            self._lookup[key] = spec
        self._catalog = None
        return spec

    def add_example(self, name: str, example: ExampleLike) -> Example:
        """Add an example utterance to a registered intent (it joins the fast path)."""
        spec = self.get(name)
        checked = self._checked_example(spec, example)
        spec.examples.append(checked)
        self._catalog = None
        return checked

    def bind(self, call: Call, *, cutoff: float = DEFAULT_CHOICE_CUTOFF) -> BoundCall:
        """Validate a parsed call against the intent it names."""
        return self.get(call.name).bind(call, cutoff=cutoff)

    @property
    def catalog(self) -> IntentCatalog:
        if self._catalog is None:
            intents = tuple(self._specs.values())
            described = [
                [
                    s.name,
                    s.description,
                    list(s.aliases),
                    [[p.name, p.kind, p.required, list(p.choices), list(p.aliases)] for p in s.params],
                ]
                for s in intents
            ]
            digest = hashlib.sha256(json.dumps(described, ensure_ascii=False, default=str).encode()).hexdigest()
            self._catalog = IntentCatalog(intents, digest[:16])
        return self._catalog

    def to_openai_tools(self) -> list[dict[str, Any]]:
        """Every intent as an OpenAI tool / JSON-schema function definition."""
        return [spec.openai_tool() for spec in self._specs.values()]

    @staticmethod
    def _checked_example(spec: IntentSpec, example: ExampleLike) -> Example:
        if isinstance(example, str):
            example = Example(example)
        elif isinstance(example, tuple) and len(example) == 2:
            example = Example(example[0], dict(example[1]))
        elif not isinstance(example, Example):
            raise ExampleError(f"example for {spec.name} must be a string, (text, arguments) or Example, got {example!r}")
        if not example.text.strip():
            raise ExampleError(f"empty example for {spec.name}")
        try:
            spec.bind(Call(spec.name, (), dict(example.arguments)))
        except ArgumentError as exc:
            raise ExampleError(
                f"example {example.text!r} does not fit {spec.name}: {exc}; give its arguments as (text, {{...}})"
            ) from None
        return example


def _field_name(index: int, name: str) -> str:
    # Parameter names may clash with BaseModel's own attributes (json, copy, model_*):
    # such fields get a neutral internal name and keep the parameter name as their alias.
    if name.startswith("model_") or hasattr(pydantic.BaseModel, name):
        return f"arg{index}_"
    return name


def _arguments_model(intent: str, params: Sequence[ParamSpec]) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    for index, spec in enumerate(params):
        default = ... if spec.required else spec.default
        fields[_field_name(index, spec.name)] = (
            spec.annotation,
            pydantic.Field(default, alias=spec.name, description=spec.description or None),
        )
    config = pydantic.ConfigDict(protected_namespaces=(), populate_by_name=True, extra="forbid")
    model_name = f"{intent}_arguments" if intent.isascii() else "IntentArguments"
    return pydantic.create_model(model_name, __config__=config, **fields)


def _params_of(handler: Callable[..., Any], intent: str) -> tuple[ParamSpec, ...]:
    if not callable(handler):
        raise UnsupportedSignatureError(f"intent {intent!r}: handler {handler!r} is not callable")
    try:
        signature = inspect.signature(handler)
        hints = typing.get_type_hints(handler, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise UnsupportedSignatureError(f"intent {intent!r}: cannot read the handler's signature: {exc}") from None
    specs = []
    for parameter in signature.parameters.values():
        where = f"parameter {parameter.name!r} of intent {intent!r}"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise UnsupportedSignatureError(f"{where}: *args/**kwargs cannot be filled from a model's call")
        if parameter.name.startswith("_"):
            raise UnsupportedSignatureError(f"{where}: names starting with '_' are private")
        annotation = hints.get(parameter.name, str)
        has_default = parameter.default is not parameter.empty
        specs.append(
            _param_spec(
                parameter.name,
                annotation,
                where,
                default=parameter.default if has_default else None,
                required=not has_default,
                positional_only=parameter.kind is parameter.POSITIONAL_ONLY,
            )
        )
    return tuple(specs)


def _param_spec(
    name: str, annotation: Any, where: str, *, default: Any, required: bool, positional_only: bool = False
) -> ParamSpec:
    extra = Param()
    inner = annotation
    if typing.get_origin(inner) is Annotated:
        inner, *metadata = typing.get_args(inner)
        extra = next((m for m in metadata if isinstance(m, Param)), extra)
    optional = False
    if typing.get_origin(inner) in (Union, types.UnionType):
        members = [a for a in typing.get_args(inner) if a is not type(None)]
        if len(members) != 1:
            raise UnsupportedSignatureError(f"{where}: union {annotation!r} is not supported; use one of {_SUPPORTED}")
        optional = len(members) < len(typing.get_args(inner))
        inner = members[0]
    kind, choices, item = _kind_of(inner, extra, where, annotation)
    return ParamSpec(
        name=name,
        kind=kind,
        annotation=annotation,
        required=required,
        default=default,
        optional=optional,
        choices=tuple(choices),
        choice_values=choices,
        item=item,
        description=extra.description,
        aliases=tuple(extra.aliases),
        positional_only=positional_only,
        from_utterance=extra.from_utterance,
        numbers=extra.numbers,
        ask=extra.ask,
    )


def _unwrap(annotation: Any) -> Any:
    """``annotation`` without ``Annotated[...]`` and ``Optional[...]``."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = members[0] if len(members) == 1 else annotation
    return annotation


def _kind_of(inner: Any, extra: Param, where: str, annotation: Any) -> tuple[str, dict[str, Any], ParamSpec | None]:
    # A mapping value (a JSON object or Python dict literal in the call): pydantic validates it
    # against the annotation, so dict[str, int] gets ints and a model gets its fields checked.
    if inner is dict or typing.get_origin(inner) is dict:
        key_type = (typing.get_args(inner) or (str,))[0]
        if key_type is not str:
            raise UnsupportedSignatureError(f"{where}: dict keys must be str (call text writes them as strings)")
        return "object", {}, None
    if isinstance(inner, type) and issubclass(inner, pydantic.BaseModel):
        return "object", {}, None
    if typing.get_origin(inner) is Literal:
        values = typing.get_args(inner)
        return "choice", {str(v): v for v in values}, None
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        choices = {str(member.value): member for member in inner}
        choices.update({member.name: member for member in inner if member.name not in choices})
        return "choice", choices, None
    if typing.get_origin(inner) is list:
        (item_type,) = typing.get_args(inner) or (str,)
        item = _param_spec("item", item_type, where, default=None, required=True)
        if item.kind == "list":
            raise UnsupportedSignatureError(f"{where}: nested lists are not supported")
        return "list", {}, item
    if inner in _SCALARS:
        if extra.choices:
            if inner is not str:
                raise UnsupportedSignatureError(f"{where}: Param(choices=...) needs a str parameter")
            if isinstance(extra.choices, Mapping):
                return "choice", dict(extra.choices), None
            return "choice", {c: c for c in extra.choices}, None
        return _SCALARS[inner], {}, None
    raise UnsupportedSignatureError(f"{where}: type {annotation!r} is not supported; use one of {_SUPPORTED}")


def _coerce(spec: ParamSpec, value: Value, cutoff: float) -> Any:
    if value is None:
        return None
    if spec.kind == "list":
        assert spec.item is not None
        items = value if isinstance(value, list) else [value]
        return [_coerce(spec.item, v, cutoff) for v in items]
    if isinstance(value, list):
        if len(value) != 1:
            raise _Mismatch(f"expected one value, got a list of {len(value)}")
        value = value[0]
    kind = spec.kind
    if kind == "object":
        if not isinstance(value, dict):
            raise _Mismatch("expected a mapping ({...})")
        return value  # the arguments model validates its contents
    if isinstance(value, dict):
        raise _Mismatch("expected a single value, got a mapping")
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Mismatch("expected text")
        return value if isinstance(value, str) else str(value)
    if kind == "int":
        number = to_int(value)
        if number is None:
            raise _Mismatch("expected a whole number")
        return number
    if kind == "float":
        real = to_float(value)
        if real is None:
            raise _Mismatch("expected a number")
        return real
    if kind == "bool":
        flag = to_bool(value)
        if flag is None:
            raise _Mismatch("expected true or false")
        return flag
    # kind == "choice"
    match = match_choice(str(value), spec.choices, cutoff)
    if match.choice is None:
        hint = f" (closest: {match.runner_up!r}, score {match.score:.0f} < {cutoff:.0f})" if match.runner_up else ""
        raise _Mismatch(f"not one of {', '.join(spec.choices)}{hint}")
    return spec.choice_values[match.choice]
