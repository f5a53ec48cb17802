"""One request through a local :class:`~intentkit.backends.decoding.TokenModel`: the check of the
prompt against the one the model was trained with, the prompt evaluated over its cached prefix
(with the call a :class:`~intentkit.drafts.DraftIndex` drafts, in the same batch), the
out-of-scope check when a :class:`~intentkit.scope.ScopeDetector` is set, then constrained (or
plain greedy) decoding. :class:`~intentkit.backends.local.LocalBackend` holds one and a lock
around it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..calls import NO_INTENT
from ..errors import BackendError, ConfigError
from ..prompt import check_prompt
from .base import GenerateRequest, Generation
from .decoding import ConstrainedDecoder, DraftedModel, Logits, TokenModel, greedy_decode

if TYPE_CHECKING:
    import numpy as np

    from ..drafts import DraftIndex
    from ..scope import ScopeDetector

__all__ = ["LocalGenerator"]


class LocalGenerator:
    """Runs requests through ``model``. ``trained_prompt`` is the prompt record the model was
    trained with (``ModelInfo.prompt``), checked once per prompt fingerprint; ``source`` names
    the model in messages."""

    def __init__(
        self,
        model: TokenModel,
        *,
        trained_prompt: dict[str, Any] | None,
        source: str,
        constrained: bool,
        n_ctx: int | None = None,
    ) -> None:
        self.model = DraftedModel(model)
        columns = getattr(model, "compute_columns", None)
        if constrained and columns is not None:  # decisions read a few tokens' logits each (see Logits)
            columns()
        self.trained_prompt, self.source = trained_prompt, source
        self.constrained, self.n_ctx = constrained, n_ctx
        self.scope: ScopeDetector | None = None
        #: Drafts the call from the nearest training utterance (``None``: decode step by step).
        self.drafts: DraftIndex | None = None
        #: Draft again where the prompt's draft stops holding: in the call's opening and at later
        #: parameters' openers (False: the prompt's draft only; the answers are the same either way).
        self.redraft = True
        self._hidden_on = False
        self._decoders: dict[str, ConstrainedDecoder] = {}
        self._checked: set[str] = set()

    def set_scope(self, detector: ScopeDetector | None) -> None:
        """Answer ``no_intent()`` without decoding when an utterance is farther from every
        training utterance than ``detector.threshold`` (for a detector that also weighs the
        intent confidence: after decoding the intent, when the combined score passes it);
        ``None`` turns the check off."""
        if detector is not None:
            if detector.width != self.model.hidden_width:
                raise ConfigError(
                    f"the scope detector was fitted on {detector.width}-wide hidden states; "
                    f"this model's are {self.model.hidden_width} wide (fitted for another model?)"
                )
            self._enable_hidden()
        self.scope = detector

    def _enable_hidden(self) -> None:
        if not self._hidden_on:
            self.model.enable_hidden()
            self._hidden_on = True

    def _decoder(self, request: GenerateRequest) -> ConstrainedDecoder:
        decoder = self._decoders.get(request.catalog.fingerprint)
        if decoder is None:
            decoder = self._decoders[request.catalog.fingerprint] = ConstrainedDecoder(self.model, request.catalog)
        return decoder

    def _prefill(self, request: GenerateRequest, *, draft: bool = False) -> tuple[Logits, dict[str, Any]]:
        if request.prompt.fingerprint not in self._checked:
            check_prompt(self.trained_prompt, request.prompt, self.source)
            self._checked.add(request.prompt.fingerprint)
        t0 = time.perf_counter()
        tokens = self.model.tokenize(request.prompt.render(request.text, request.catalog), special=True, bos=True)
        if self.n_ctx is not None and len(tokens) + request.max_tokens > self.n_ctx:
            raise BackendError(f"prompt is {len(tokens)} tokens; with max_tokens it exceeds n_ctx={self.n_ctx}")
        drafted: list[int] = []
        reads: list[int] = []
        if draft and self.constrained:
            guess = request.draft
            if guess is None and self.drafts is not None:
                guess = self.drafts.draft(request.text)
            if guess is not None:
                drafted, reads = self._decoder(request).draft_tokens(guess, request.text)
        logits, reused = self.model.prefill(tokens, draft=drafted, reads=reads)
        info = {"prompt_tokens": len(tokens), "cached_tokens": reused, "prompt_ms": (time.perf_counter() - t0) * 1e3}
        if drafted:
            info["draft_tokens"] = len(drafted)
        return logits, info

    def hidden_state(self, request: GenerateRequest) -> np.ndarray:
        """The feature a :class:`ScopeDetector` measures: the final hidden state at the prompt's
        last token (the prompt is evaluated, nothing is decoded)."""
        self._enable_hidden()
        self._prefill(request)
        return self.model.hidden()

    def run(self, request: GenerateRequest) -> Generation:
        try:
            return self._run(request)
        finally:
            self.model.settle()  # an unused draft leaves the cache: the next prompt's prefix is the real one

    def _run(self, request: GenerateRequest) -> Generation:
        logits, info = self._prefill(request, draft=True)
        prompt_tokens = info["prompt_tokens"]
        verdict = None
        if self.scope is not None:
            verdict = self.scope.check(self.model.hidden())
            if not verdict.in_scope:  # far enough on distance alone: no decoding
                return Generation(f"{NO_INTENT}()", scope=verdict, prompt_tokens=prompt_tokens, completion_tokens=0, info=info)
        t1 = time.perf_counter()
        start = self.model.n_tokens
        evaluations, accepted = self.model.evaluations, self.model.accepted
        if not self.constrained:
            text, generated = greedy_decode(self.model, logits, request.max_tokens)
            info.update(decode_ms=(time.perf_counter() - t1) * 1e3)
            return Generation(text, prompt_tokens=prompt_tokens, completion_tokens=generated, info=info)
        drafts = self.drafts
        redraft = None
        if drafts is not None and self.redraft:
            redraft = lambda intents, fits: drafts.draft(request.text, intents=intents, fits=fits)  # noqa: E731
        decoded = self._decoder(request).decode(logits, request.text, max_tokens=request.max_tokens, redraft=redraft)
        info.update(
            decode_ms=(time.perf_counter() - t1) * 1e3,
            sampled=decoded.sampled,
            forced=decoded.forced,
            evaluations=self.model.evaluations - evaluations,
        )
        if "draft_tokens" in info:
            info["draft_accepted"] = self.model.accepted - accepted
        # Answer tokens: those chosen or forced, whether or not the finished call needed evaluating them.
        completion = max(self.model.n_tokens - start, decoded.sampled + decoded.forced)
        if self.scope is not None and verdict is not None and self.scope.uses_confidence:
            verdict = self.scope.with_confidence(verdict, decoded.confidence)
            if not verdict.in_scope:  # near enough, but the model is unsure which intent it is
                return Generation(
                    f"{NO_INTENT}()", scope=verdict, prompt_tokens=prompt_tokens, completion_tokens=completion, info=info
                )
        return Generation(
            decoded.text,
            confidence=decoded.confidence,
            intent_scores=decoded.intent_scores,
            argument_confidence=decoded.argument_confidence,
            scope=verdict,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            info=info,
        )
