"""intentkit as a Wyoming intent (or handle) service: Home Assistant's local intent engine.

    intentkit wyoming --home home.yaml --uri tcp://127.0.0.1:10700 [--model DIR] [--mode handle]

Home Assistant's ``wyoming`` integration registers a conversation agent for a service whose
``info`` lists an installed intent or handle program, then sends each utterance as a
``transcript`` event on a connection of its own. This service answers:

- ``describe`` → ``info``: an intent program (``--mode intent``, the default) or a handle program
  (``--mode handle``) naming its languages (the intents package's code and Home Assistant's, e.g.
  ``zh-CN`` and ``zh-Hans``);
- ``transcript`` / ``recognize`` → ``intent`` (the routed call's name, its slots as entities, the
  language's response template as text) or ``not-recognized``; in handle mode the app's own
  handlers run and the answer is ``handled`` with their reply, or ``not-handled``;
- a malformed event → ``error`` on that connection; an event it does not know is ignored. A
  client that disconnects mid-request, or sends garbage, never stops the service.

One router (one model) serves every connection; the local backends queue concurrent requests.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Mapping
from functools import partial
from typing import Any, Literal

from ..errors import MissingDependencyError
from ..router import Router, RouteResult, Status
from .intents import ha_language, language_data, package_language, slot_values

try:
    with warnings.catch_warnings():  # wyoming imports audioop (deprecated on 3.11-3.12), for audio this service never touches
        warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
        import wyoming.audio  # noqa: F401
    from wyoming.asr import Transcript
    from wyoming.error import Error
    from wyoming.event import Event
    from wyoming.handle import Handled, NotHandled
    from wyoming.info import Attribution, Describe, HandleModel, HandleProgram, Info, IntentModel, IntentProgram
    from wyoming.intent import Entity, Intent, NotRecognized, Recognize
    from wyoming.server import AsyncEventHandler, AsyncServer
except ImportError:  # this module is the Wyoming service: without the package it cannot be
    raise MissingDependencyError("wyoming") from None

__all__ = ["IntentEventHandler", "response_text", "serve_wyoming", "service_info"]

logger = logging.getLogger("intentkit.wyoming")
Mode = Literal["intent", "handle"]


def service_info(language: str, mode: Mode = "intent", *, name: str = "intentkit") -> Any:
    """The ``info`` event this service answers ``describe`` with."""
    from .. import __version__

    attribution = Attribution(name="intentkit", url="https://pypi.org/project/intentkit-router/")
    languages = list(dict.fromkeys([package_language(language), ha_language(package_language(language))]))
    description = "intentkit: a small fine-tuned model routes utterances to Home Assistant's intents"
    if mode == "handle":
        model = HandleModel(name, attribution, True, description, __version__, languages)
        program = HandleProgram(name, attribution, True, description, __version__, [model], supports_home_control=False)
        return Info(handle=[program])
    intent_model = IntentModel(name, attribution, True, description, __version__, languages)
    return Info(intent=[IntentProgram(name, attribution, True, description, __version__, [intent_model])])


def response_text(language: str, intent: str, slots: Mapping[str, Any]) -> str | None:
    """The language's response template for ``intent`` (its ``default`` response), rendered with
    the slots where the template needs nothing but them; ``None`` when there is none."""
    _, data, _ = language_data(package_language(language))
    responses = (data.get("responses") or {}).get("intents", {}).get(intent, {})
    template = responses.get("default") or next(iter(responses.values()), None)
    if not template:
        return None
    try:
        from jinja2.sandbox import SandboxedEnvironment

        return SandboxedEnvironment().from_string(template).render(slots=dict(slots), **dict(slots)).strip()
    except Exception:  # a template that needs Home Assistant's state: Home Assistant renders it
        return template


class IntentEventHandler(AsyncEventHandler):  # type: ignore[misc]
    """One Wyoming connection; :func:`serve_wyoming` makes one per connection."""

    def __init__(self, info: Info, router: Router, language: str, mode: Mode, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.info, self.router, self.language, self.mode = info, router, language, mode

    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._answer(event)
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        except Exception as exc:  # one bad event costs an error reply, not the service
            logger.warning("wyoming: %s on %r: %s", type(exc).__name__, event.type, exc)
            await self.write_event(Error(text=f"{type(exc).__name__}: {exc}", code="intentkit-bad-event").event())
            return True

    async def _answer(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.info.event())
            return True
        if Transcript.is_type(event.type):
            request: Any = Transcript.from_event(event)
        elif Recognize.is_type(event.type):
            request = Recognize.from_event(event)
        else:
            return True  # not ours (audio, pings): ignored, as Wyoming services do
        text, context = request.text, request.context
        if not isinstance(text, str):
            raise ValueError(f"{event.type} needs a text, got {type(text).__name__}")
        result = await self.router.ahandle(text, dispatch=self.mode == "handle")
        await self.write_event(self._reply(result, context).event())
        return True

    def _reply(self, result: RouteResult, context: Any) -> Any:
        if self.mode == "handle":
            if result.status is Status.OK:
                reply = "；".join(str(r) for r in result.results if r is not None)
                return Handled(text=reply or None, context=context)
            return NotHandled(text=_failure(result), context=context)
        if result.status is not Status.OK or not result.calls:
            return NotRecognized(text=_failure(result), context=context)
        call = result.calls[0]
        slots = slot_values(self.router.registry.get(call.name), call.arguments)
        entities = [Entity(name=k, value=v) for k, v in slots.items()]
        return Intent(name=call.name, entities=entities, text=response_text(self.language, call.name, slots), context=context)


def _failure(result: RouteResult) -> str:
    if result.prompt:  # needs_input / needs_confirmation: the question is what to say
        return result.prompt
    if result.status is Status.NO_INTENT:
        return "no_intent"
    return f"{result.status.value}: {result.error}" if result.error else result.status.value


async def serve_wyoming(
    router: Router, uri: str, *, language: str, mode: Mode = "intent", name: str = "intentkit", started: Any = None
) -> None:
    """Serve ``router`` on ``uri`` (``tcp://HOST:PORT`` or ``unix://PATH``) until cancelled.
    ``started`` (an :class:`asyncio.Event`) is set once the service listens."""
    info = service_info(language, mode, name=name)
    server = AsyncServer.from_uri(uri)
    handler = partial(IntentEventHandler, info, router, package_language(language), mode)
    await server.start(handler)
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
