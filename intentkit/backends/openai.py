"""Any OpenAI-compatible server: vLLM, llama.cpp's server, llama-cpp-python's, Ollama, a cloud
endpoint, ``intentkit serve``.

``OpenAIBackend("http://gpu-box:8000/v1", model="my-router")`` sends the prompt module's messages
to ``/chat/completions`` and reads back the call text; ``mode="completions"`` sends intentkit's own
rendered prompt to ``/completions`` instead (vLLM, llama.cpp and llama-cpp-python serve it), with
the end-of-turn text as the stop sequence, so that the model sees exactly the text it was trained
on whatever the server's chat template. Around the request:

- **retries** with exponential backoff on timeouts, connection errors, 429 and 5xx
  (``retries`` is a count or a ``tenacity.Retrying``);
- a **circuit breaker**: after ``breaker_failures`` failed requests in a row, requests fail fast
  with :class:`~intentkit.errors.BackendError` for ``breaker_reset_s`` seconds, then one trial
  request decides whether to close it again;
- **zero-shot**: ``zero_shot=True`` lists the registered intents with their signatures in the
  system prompt, so a large instruct model routes without fine-tuning;
- **structured output**: ``structured="guided_regex"`` sends vLLM's ``guided_regex`` of the
  registered calls, ``structured="grammar"`` llama.cpp's GBNF ``grammar`` of them;
  ``extra_body`` passes anything else the server accepts;
- **confidence** from the server's logprobs where it offers them (the probability of the tokens
  that name the intent, as the local backends report it); ``None`` where not (``logprobs=False``
  for a server that rejects the field).

``pip install 'intentkit-router[http]'``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Any, Literal

from ..calls import NO_INTENT
from ..errors import BackendError, MissingDependencyError
from ..registry import IntentCatalog
from .base import Backend, GenerateRequest, Generation

__all__ = ["OpenAIBackend", "call_gbnf", "call_regex", "intent_probability"]

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        self.status_code = status_code
        super().__init__(message)


class _Breaker:
    """Closed → open after ``limit`` consecutive failures → half-open after ``reset_s``."""

    def __init__(self, limit: int, reset_s: float) -> None:
        self.limit, self.reset_s = limit, reset_s
        self.failures = 0
        self.opened_at: float | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            if self.opened_at is None:
                return
            waited = time.monotonic() - self.opened_at
            if waited < self.reset_s:
                raise BackendError(
                    f"circuit open after {self.failures} failed requests; retrying in {self.reset_s - waited:.0f} s", attempts=0
                )
            self.opened_at = None  # half-open: let one request through
            self.failures = self.limit - 1

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.failures, self.opened_at = 0, None
                return
            self.failures += 1
            if self.failures >= self.limit:
                self.opened_at = time.monotonic()


class OpenAIBackend(Backend):
    """Chat completions against ``base_url`` (ending in ``/v1``)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int | Any = 3,
        zero_shot: bool = False,
        mode: Literal["chat", "completions"] = "chat",
        structured: Literal["guided_regex", "grammar"] | None = None,
        logprobs: bool = True,
        extra_body: dict[str, Any] | None = None,
        breaker_failures: int = 5,
        breaker_reset_s: float = 30.0,
    ) -> None:
        try:
            import httpx
            import tenacity
        except ImportError:
            raise MissingDependencyError("httpx") from None
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.zero_shot = zero_shot
        if mode not in ("chat", "completions"):
            raise ValueError(f"mode must be 'chat' or 'completions', not {mode!r}")
        if structured not in (None, "guided_regex", "grammar"):
            raise ValueError(f"structured must be None, 'guided_regex' or 'grammar', not {structured!r}")
        self.mode = mode
        self.path = "/chat/completions" if mode == "chat" else "/completions"
        self.logprobs = logprobs
        self.structured = structured
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._aclient = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)
        retryable = tenacity.retry_if_exception_type((_Retryable, httpx.TimeoutException, httpx.TransportError))
        if isinstance(retries, int):
            wait = tenacity.wait_exponential(multiplier=0.2, max=5)
            self._retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(retries + 1), wait=wait, retry=retryable, reraise=True
            )
            self._aretrying = tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(retries + 1), wait=wait, retry=retryable, reraise=True
            )
        else:
            self._retrying = retries
            self._aretrying = tenacity.AsyncRetrying(**{k: getattr(retries, k) for k in ("stop", "wait", "retry", "reraise")})
        self._breaker = _Breaker(breaker_failures, breaker_reset_s)
        self._closed = False

    # ------------------------------------------------------------------ request
    def _payload(self, request: GenerateRequest) -> dict[str, Any]:
        prompt = dataclasses.replace(request.prompt, list_intents=True) if self.zero_shot else request.prompt
        payload: dict[str, Any] = {"model": self.model, "temperature": 0, "max_tokens": request.max_tokens}
        if self.mode == "completions":
            payload["prompt"] = prompt.render(request.text, request.catalog)
            payload["stop"] = [prompt.answer_end]
            if self.logprobs:
                payload["logprobs"] = 1
        else:
            payload["messages"] = prompt.messages(request.text, request.catalog)
            if self.logprobs:
                payload["logprobs"] = True
        if self.structured == "guided_regex":
            payload["guided_regex"] = call_regex(request.catalog)
        elif self.structured == "grammar":
            payload["grammar"] = call_gbnf(request.catalog)
        payload.update(self.extra_body)
        return payload

    def _answer(self, response: Any, attempt: int, request: GenerateRequest) -> Generation:
        url = f"{self.base_url}{self.path}"
        if response.status_code in _RETRY_STATUS:
            raise _Retryable(f"{response.status_code} from {url}: {response.text[:200]}", response.status_code)
        if response.status_code >= 400:
            raise BackendError(
                f"{response.status_code} from {url}: {response.text[:300]}",
                url=url,
                status_code=response.status_code,
                attempts=attempt,
            )
        try:
            body = response.json()
            choice = body["choices"][0]
            text = (choice["text"] if self.mode == "completions" else choice["message"]["content"]) or ""
            if not isinstance(text, str):
                raise TypeError(f"the answer is {type(text).__name__}, not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                f"unexpected response from {url}: {exc!r}: {response.text[:300]}",
                url=url,
                status_code=response.status_code,
                attempts=attempt,
            ) from None
        end = request.prompt.answer_end
        text = text.split(end, 1)[0]  # a server that returns the stop text, or goes on past it
        extra = body.get("intentkit") or {}
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        confidence = extra.get("confidence")
        if confidence is None:
            confidence = intent_probability(_token_logprobs(choice.get("logprobs")))
        return Generation(
            text.strip(),
            confidence=confidence,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            info={"usage": usage or None},
        )

    def generate(self, request: GenerateRequest) -> Generation:
        self._check_open()
        self._breaker.check()
        attempts = 0
        try:
            for attempt in self._retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    generation = self._answer(self._client.post(self.path, json=self._payload(request)), attempts, request)
        except Exception as exc:
            self._breaker.record(False)
            raise self._failure(exc, attempts) from exc
        self._breaker.record(True)
        return generation

    async def agenerate(self, request: GenerateRequest) -> Generation:
        self._check_open()
        self._breaker.check()
        attempts = 0
        try:
            async for attempt in self._aretrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    response = await self._aclient.post(self.path, json=self._payload(request))
                    generation = self._answer(response, attempts, request)
        except Exception as exc:
            self._breaker.record(False)
            raise self._failure(exc, attempts) from exc
        self._breaker.record(True)
        return generation

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the OpenAIBackend is closed", url=self.base_url, attempts=0)

    def _failure(self, exc: Exception, attempts: int) -> BackendError:
        if isinstance(exc, BackendError):
            return exc
        url = f"{self.base_url}{self.path}"
        status = exc.status_code if isinstance(exc, _Retryable) else None
        return BackendError(f"{url}: {type(exc).__name__}: {exc}", url=url, status_code=status, attempts=attempts)

    def close(self) -> None:
        """Close both connection pools; later requests raise BackendError. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._client.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:  # called from async code: close the async pool on this loop
            self._closing = loop.create_task(self._aclient.aclose())
            return
        try:
            asyncio.run(self._aclient.aclose())
        except RuntimeError:
            # Its connections belonged to an event loop that has ended (asyncio.run(...ahandle)
            # without aclose): they cannot be closed gracefully any more. Use aclose() or
            # `async with` inside the loop to close them there.
            pass

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()
        await self._aclient.aclose()


def call_regex(catalog: IntentCatalog) -> str:
    """A regular expression of every registered call (keyword arguments, JSON-quoted values)."""
    value = r'"(?:[^"\\]|\\.)*"'
    mapping = r"\{[^{}]*\}"  # one level of a JSON object: a regex cannot count nesting
    alternatives = [rf"{NO_INTENT}\(\)"]
    for spec in catalog.intents:
        if spec.params:
            names = "|".join(p.name for p in spec.params)
            argument = rf"(?:{names})=(?:{value}|\[{value}(?:, {value})*\]|{mapping}|true|false|-?\d+(?:\.\d+)?)"
            alternatives.append(rf"{spec.name}\((?:{argument}(?:, {argument})*)?\)")
        else:
            alternatives.append(rf"{spec.name}\(\)")
    return "|".join(alternatives)


def _token_logprobs(logprobs: Any) -> list[tuple[str, float]] | None:
    """(token text, log probability) of each generated token, from a chat answer's
    ``logprobs.content`` or a completion's ``logprobs.tokens`` / ``token_logprobs``; ``None`` when
    the server gave none (or gave something else)."""
    if not isinstance(logprobs, dict):
        return None
    try:
        if isinstance(logprobs.get("content"), list):
            return [(str(t["token"]), float(t["logprob"])) for t in logprobs["content"]]
        tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
        if isinstance(tokens, list) and isinstance(values, list):
            return [(str(t), float(v)) for t, v in zip(tokens, values, strict=False) if v is not None]
    except (KeyError, TypeError, ValueError):
        return None
    return None


def intent_probability(tokens: list[tuple[str, float]] | None) -> float | None:
    """The probability the model gave the intent it chose: the product of the probabilities of
    the tokens up to the call's opening parenthesis (``weather_search(``), as the local backends'
    constrained decoding reports its intent confidence; ``None`` without token log probabilities."""
    if not tokens:
        return None
    import math

    total, said = 0.0, ""
    for token, logprob in tokens:
        said += token
        total += logprob
        if "(" in said:
            break
    return math.exp(total) if said.strip() else None


def call_gbnf(catalog: IntentCatalog) -> str:
    """A GBNF grammar (llama.cpp's ``grammar``) of every registered call: keyword arguments, each
    value as its parameter takes it (a declared choice, a bare number, a boolean, quoted text, a
    list of quoted text), or ``no_intent()``."""
    import json as _json

    text = r'"\"" ( [^"\\] | "\\" . )* "\""'
    rules = [f"text ::= {text}", 'number ::= "-"? [0-9]+ ("." [0-9]+)?', 'boolean ::= "true" | "false"']
    alternatives = ['"no_intent()"']

    def literal(value: str) -> str:
        return _json.dumps(value, ensure_ascii=False)

    for i, spec in enumerate(catalog.intents):
        if not spec.params:
            alternatives.append(literal(f"{spec.name}()"))
            continue
        values = []
        for j, param in enumerate(spec.params):
            if param.kind == "choice" and param.choices:
                rule = " | ".join(literal(_json.dumps(c, ensure_ascii=False)) for c in param.choices)
            elif param.kind in ("int", "float"):
                rule = f"number | {'text'}"
            elif param.kind == "bool":
                rule = "boolean"
            elif param.kind == "list":
                rule = 'text | "[" text (", " text)* "]"'
            elif param.kind == "object":
                rule = r'"{" [^{}]* "}"'
            else:
                rule = "text | number" if param.numbers else "text"
            rules.append(f"v{i}x{j} ::= {rule}")
            values.append(f"{literal(param.name + '=')} v{i}x{j}")
        rules.append(f"a{i} ::= {' | '.join(values)}")
        alternatives.append(f'{literal(spec.name + "(")} (a{i} (", " a{i})*)? ")"')
    return "\n".join([f"root ::= {' | '.join(alternatives)}", *rules])
