"""Any OpenAI-compatible chat server: vLLM, llama.cpp server, a cloud endpoint, ``intentkit serve``.

``OpenAIBackend("http://gpu-box:8000/v1", model="my-router")`` sends the prompt module's messages
and reads back the call text. Around the request:

- **retries** with exponential backoff on timeouts, connection errors, 429 and 5xx
  (``retries`` is a count or a ``tenacity.Retrying``);
- a **circuit breaker**: after ``breaker_failures`` failed requests in a row, requests fail fast
  with :class:`~intentkit.errors.BackendError` for ``breaker_reset_s`` seconds, then one trial
  request decides whether to close it again;
- **zero-shot**: ``zero_shot=True`` lists the registered intents with their signatures in the
  system prompt, so a large instruct model routes without fine-tuning;
- **structured output**: ``structured="guided_regex"`` sends vLLM's ``guided_regex`` of the
  registered calls; ``extra_body`` passes anything else the server accepts.

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

__all__ = ["OpenAIBackend"]

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
        structured: Literal["guided_regex"] | None = None,
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
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": prompt.messages(request.text, request.catalog),
            "temperature": 0,
            "max_tokens": request.max_tokens,
            **self.extra_body,
        }
        if self.structured == "guided_regex":
            payload["guided_regex"] = call_regex(request.catalog)
        return payload

    def _answer(self, response: Any, attempt: int) -> Generation:
        url = f"{self.base_url}/chat/completions"
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
            text = body["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                f"unexpected response from {url}: {exc!r}: {response.text[:300]}",
                url=url,
                status_code=response.status_code,
                attempts=attempt,
            ) from None
        extra = body.get("intentkit") or {}
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return Generation(
            text.strip(),
            confidence=extra.get("confidence"),
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
                    generation = self._answer(self._client.post("/chat/completions", json=self._payload(request)), attempts)
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
                    response = await self._aclient.post("/chat/completions", json=self._payload(request))
                    generation = self._answer(response, attempts)
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
        url = f"{self.base_url}/chat/completions"
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
