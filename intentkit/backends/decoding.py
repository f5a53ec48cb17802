"""Constrained decoding of one call over a :class:`TokenModel`, shared by the local backends
(llama.cpp, transformers); :mod:`intentkit.backends.generator` runs it for a request.

The answer is built from a small set of pieces instead of being sampled token by token:

1. **intent** — every registered intent (and ``no_intent``) opens with ``name()`` or
   ``name(param="``; these texts are tokenized once into a trie. Only where the trie branches is
   the model consulted, and only over the branch tokens (softmax renormalised over them, which
   gives the intent's probability). Tokens the trie forces are appended without sampling;
   tokens after the last decision are not even evaluated.
2. **values** — a parameter with declared choices is another trie (a mapping parameter,
   ``dict`` or a pydantic model, is not written by constrained decoding: an intent that
   requires one is left to unconstrained models); a value copied from the
   utterance (``Param(from_utterance=True)``, the default) may only use tokens whose text keeps it
   a substring of the utterance that starts at a word boundary, and it may only end at one (see
   :func:`intentkit.text.word_boundaries`: never inside a word of a script written with spaces, never on a space).
   The rest of the utterance is drafted and verified in one batch. Other values take the model's
   best token that does not contain a quote.
3. **closers** — ``")`` ends the call (decoding stops there); ``", other="`` opens the next
   unused parameter.

The output is keyword arguments with JSON-quoted values, the format of the datasets and of the
trainer. Greedy choices are the model's own top token whenever that token is allowed, so on a
model trained on this format the result equals unconstrained greedy decoding except where that
would have produced something the registry rejects.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import regex

from ..calls import NO_INTENT, Call, Value
from ..registry import IntentCatalog, IntentSpec, ParamSpec
from ..text import can_copy, occurrences, word_boundaries

if TYPE_CHECKING:
    from ..drafts import Draft

__all__ = [
    "ConstrainedDecoder",
    "Decoded",
    "DraftedModel",
    "Logits",
    "Rows",
    "TokenModel",
    "greedy_decode",
    "reusable_prefix",
]

_MAX_VALUE_TOKENS = 24
_DRAFT_TOKENS = 4
_MAX_CALL_DRAFT = 32  # tokens of a drafted call evaluated with the prompt
# A bare number being written, and a finished one.
_NUMBER_PREFIX = {
    "int": regex.compile(r"-?\d*"),
    "float": regex.compile(r"-?\d*\.?\d*"),
    "-int": regex.compile(r"\d*"),  # after an opener that wrote the minus ("=-")
    "-float": regex.compile(r"\d*\.?\d*"),
}
_NUMBER = {
    "int": regex.compile(r"-?\d+"),
    "float": regex.compile(r"-?\d+(?:\.\d+)?"),
    "-int": regex.compile(r"\d+"),
    "-float": regex.compile(r"\d+(?:\.\d+)?"),
}


class Logits(Protocol):
    """One logits row: ``row[tokens]`` gives the scores of those token ids. A numpy row, or one
    that computes the columns read (llama.cpp's :class:`~intentkit.backends.llamacpp.head.HeadRow`),
    since a decision reads a handful of the vocabulary's tokens; a model that returns such rows
    offers ``full_row()`` for the decisions that need all of them."""

    def __getitem__(self, tokens: Any, /) -> Any: ...


#: Logits rows: an array (one row each), or a sequence of :class:`Logits`.
Rows = np.ndarray | Sequence[Logits]


class TokenModel(Protocol):
    """What the decoder needs from a backend: tokens in, logits out, a rewindable cache."""

    @property
    def n_tokens(self) -> int:
        """Tokens currently in the cache."""
        ...

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]: ...

    def piece(self, token: int) -> bytes: ...

    def is_end(self, token: int) -> bool: ...

    def feed(self, tokens: Sequence[int], *, all_logits: bool = False) -> Rows:
        """Append ``tokens``; return logits rows (one per token if ``all_logits``, else the last)."""
        ...

    def rewind(self, n_tokens: int) -> None:
        """Forget everything after the first ``n_tokens`` tokens."""
        ...

    def prefill(self, tokens: list[int]) -> tuple[Logits, int]:
        """Evaluate a prompt reusing the cached common prefix; returns (last logits, tokens reused)."""
        ...

    def enable_hidden(self) -> None:
        """From now on keep the final hidden state of the last token each evaluation outputs."""
        ...

    def hidden(self) -> np.ndarray:
        """The final hidden state (after the last norm) of the last token evaluated."""
        ...

    @property
    def hidden_width(self) -> int:
        """The size of :meth:`hidden`'s vector."""
        ...


@dataclass(slots=True)
class Decoded:
    text: str
    intent: str
    confidence: float
    intent_scores: dict[str, float]
    argument_confidence: dict[str, float] = field(default_factory=dict)
    sampled: int = 0  # decisions that consulted the model
    forced: int = 0  # tokens appended without a decision
    evaluations: int = 0  # model calls after the prompt


@dataclass(frozen=True, slots=True)
class _Option:
    tokens: tuple[int, ...]
    text: str
    intent: str
    param: ParamSpec | None = None  # the parameter whose value follows
    end: bool = False  # the call is complete after this text
    item: bool = False  # the next value is another item of the same list
    listed: bool = False  # the next value is inside [...] (a list parameter also takes a single value)
    bare: bool = False  # the next value is a bare number (minutes=10), not quoted text


class _Cursor:
    """Tokens chosen but not yet evaluated, and the logits after the last evaluated one."""

    def __init__(self, model: TokenModel, logits: Logits, decoded: Decoded) -> None:
        self.model = model
        self.logits = logits
        self.pending: list[int] = []
        self.decoded = decoded

    def push(self, token: int, *, forced: bool) -> None:
        self.pending.append(token)
        if forced:
            self.decoded.forced += 1

    def row(self) -> Logits:
        if self.pending:
            self.logits = self.model.feed(self.pending)[-1]
            self.pending = []
            self.decoded.evaluations += 1
        return self.logits


@dataclass(frozen=True, slots=True)
class _Source:
    """An utterance values are copied from: the tokens they can be written with, and where they may
    start and end (:func:`~intentkit.text.word_boundaries`)."""

    text: bytes
    tokens: list[tuple[int, bytes]]
    starts: frozenset[int]
    ends: frozenset[int]
    first: list[int]  # the tokens a value can open with

    def at(self, value: bytes) -> list[int]:
        """The offsets where ``value`` occurs starting at a word boundary."""
        return occurrences(self.text, value, self.starts)


class DraftedModel:
    """A :class:`TokenModel` over another whose cache may run ahead of the decoder: a drafted call,
    evaluated in one batch with the prompt (:meth:`prefill` with ``draft``). Each :meth:`feed` of
    tokens that continue the draft is answered from the logits already computed; at the first
    token that differs, the rest of the draft leaves the cache and decoding goes on for real. So
    the decoder's choices stay its own; a right draft only saves the evaluations.

    ``evaluations`` counts the calls into the model after prompts, ``accepted`` the drafted tokens
    the decoder went on to choose."""

    def __init__(self, model: TokenModel) -> None:
        self.base = model
        #: Whether the model's feed computes only the rows asked for (``outputs=``, llama.cpp).
        self._rows_asked = "outputs" in inspect.signature(model.feed).parameters
        self._draft: list[int] = []
        self._rows: list[Logits | None] = []
        self.evaluations = 0
        self.accepted = 0

    @property
    def n_tokens(self) -> int:
        return self.base.n_tokens - len(self._draft)

    @property
    def ahead(self) -> int:
        """Drafted tokens in the cache that the decoder has not reached yet."""
        return len(self._draft)

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        return self.base.tokenize(text, special=special, bos=bos)

    def piece(self, token: int) -> bytes:
        return self.base.piece(token)

    def is_end(self, token: int) -> bool:
        return self.base.is_end(token)

    def enable_hidden(self) -> None:
        self.base.enable_hidden()

    def hidden(self) -> np.ndarray:
        return self.base.hidden()

    @property
    def hidden_width(self) -> int:
        return self.base.hidden_width

    def prefill(self, tokens: list[int], *, draft: Sequence[int] = (), reads: Sequence[int] | None = None) -> tuple[Logits, int]:
        """The prompt's logits (and tokens reused), as :meth:`TokenModel.prefill`; ``draft`` is
        evaluated with it (in the same batch where the model offers ``prefill_draft``), with
        logits kept after the drafted tokens ``reads`` indexes (default: all). A whole output
        row costs the output head over the vocabulary, as much as a token's pass through the
        layers on a small model: rows no decision reads are not asked for."""
        self.settle()
        if not draft:
            return self.base.prefill(tokens)
        wanted = sorted(set(range(len(draft)) if reads is None else reads))
        together = getattr(self.base, "prefill_draft", None)
        if together is not None:
            rows, reused = together(tokens, list(draft), wanted)
            logits, kept = rows[0], rows[1:]
        else:
            logits, reused = self.base.prefill(tokens)
            fed = self.base.feed(list(draft), all_logits=True)
            kept = [fed[i] for i in wanted]
            self.evaluations += 1
        self._rows = [None] * len(draft)
        for index, row in zip(wanted, kept, strict=True):
            self._rows[index] = row
        self._draft = list(draft)
        return logits, reused

    def holds(self, tokens: Sequence[int]) -> bool:
        """Whether a draft is ahead and ``tokens`` (chosen, not yet evaluated) go along it."""
        return bool(self._draft) and all(a == b for a, b in zip(tokens, self._draft, strict=False))

    def extend(self, tokens: Sequence[int], draft: Sequence[int], reads: Sequence[int]) -> Logits | None:
        """Evaluate ``tokens`` (chosen, not yet evaluated) and a new ``draft`` after them in one
        batch; returns the logits after the last of ``tokens`` (``None`` when there are none).
        The draft is then taken as :meth:`prefill`'s is, with logits kept after the drafted
        tokens ``reads`` indexes."""
        self.settle()
        wanted = sorted(set(reads))
        outputs = [*([len(tokens) - 1] if tokens else []), *(len(tokens) + i for i in wanted)]
        together = [*tokens, *draft]
        if self._rows_asked:  # llama.cpp: only the rows read
            rows = self.base.feed(together, outputs=outputs)  # type: ignore[call-arg]
        else:
            fed = self.base.feed(together, all_logits=True)
            rows = [fed[i] for i in outputs]
        self.evaluations += 1
        last = rows[0] if tokens else None
        self._rows = [None] * len(draft)
        for index, row in zip(wanted, rows[1:] if tokens else rows, strict=True):
            self._rows[index] = row
        self._draft = list(draft)
        return last

    def feed(self, tokens: Sequence[int], *, all_logits: bool = False) -> Rows:
        rows: list[Logits | None] = []
        taken = 0
        while taken < len(tokens) and self._draft and tokens[taken] == self._draft[0]:
            self._draft.pop(0)
            rows.append(self._rows.pop(0))
            taken += 1
        # The rows asked for: every one, or the last when every token was drafted.
        asked = range(taken) if all_logits else ([taken - 1] if taken == len(tokens) else [])
        gap = next((i for i in asked if rows[i] is None), None)
        if gap is not None:  # a row that was not kept: those tokens are evaluated again from there
            self.settle()
            self.base.rewind(self.base.n_tokens - (taken - gap))
            rows, taken = rows[:gap], gap
        self.accepted += taken
        if taken < len(tokens):
            self.settle()
            fed = self.base.feed(tokens[taken:], all_logits=all_logits)
            self.evaluations += 1
            rows.extend(fed if all_logits else fed[-1:])
        out = [row for row in rows if row is not None] if all_logits else [rows[-1]]
        if all(isinstance(row, np.ndarray) for row in out):
            return np.stack(out)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]  # no None is left where rows are asked for

    def full_row(self) -> np.ndarray:
        """The whole logits row after the last token the decoder has reached (see :class:`Logits`)."""
        self.settle()
        full = getattr(self.base, "full_row", None)
        if full is None:
            raise TypeError(f"{type(self.base).__name__} returns no rows to complete")
        self.evaluations += 1
        return full()  # type: ignore[no-any-return]

    def rewind(self, n_tokens: int) -> None:
        self.settle()
        self.base.rewind(n_tokens)

    def settle(self) -> None:
        """Drop what is left of the draft from the cache."""
        if self._draft:
            self.base.rewind(self.base.n_tokens - len(self._draft))
            self._draft, self._rows = [], []


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


class ConstrainedDecoder:
    """Decodes one call for a catalog; build once per (model, catalog) and reuse."""

    def __init__(self, model: TokenModel, catalog: IntentCatalog) -> None:
        self.model = model
        self.catalog = catalog
        self._token_cache: dict[str, tuple[int, ...]] = {}
        self._source: _Source | None = None  # the last utterance's
        self._number_tokens: list[tuple[int, bytes]] | None = None
        self._specs: dict[str, IntentSpec] = {spec.name: spec for spec in catalog.intents}
        self.openers = self._options(self._opening_texts())

    # ------------------------------------------------------------------ building
    def _tok(self, text: str) -> tuple[int, ...]:
        if text not in self._token_cache:
            self._token_cache[text] = tuple(self.model.tokenize(text))
        return self._token_cache[text]

    def _options(self, texts: list[tuple[str, dict[str, Any]]]) -> list[_Option]:
        return [_Option(self._tok(text), text, **payload) for text, payload in texts]

    def _opening_texts(self) -> list[tuple[str, dict[str, Any]]]:
        texts: list[tuple[str, dict[str, Any]]] = [(f"{NO_INTENT}()", {"intent": NO_INTENT, "end": True})]
        for spec in self.catalog.intents:
            if any(p.required and not _decodable(p) for p in spec.params):
                continue  # a mapping argument is written by unconstrained models only
            # An empty call even where values are required: a model trained on dialogue data
            # answers a request without them so (call_contact()), and the router asks for them.
            texts.append((f"{spec.name}()", {"intent": spec.name, "end": True}))
            for param in filter(_decodable, spec.params):
                for opener, listed, bare in _openers(param):
                    payload = {"intent": spec.name, "param": param, "listed": listed, "bare": bare}
                    texts.append((f"{spec.name}({opener}", payload))
        return texts

    def _closers(self, intent: str, param: ParamSpec, used: set[str], listed: bool, bare: bool = False) -> list[_Option]:
        quote = "" if param.kind == "bool" or bare else '"'
        texts: list[tuple[str, dict[str, Any]]] = []
        close_list = "]" if listed else ""
        if listed:
            texts.append((f'{quote}, "', {"intent": intent, "param": param, "item": True, "listed": True}))
        texts.append((f"{quote}{close_list})", {"intent": intent, "end": True}))
        for other in filter(_decodable, self._specs[intent].params):
            if other.name not in used:
                for opener, other_listed, other_bare in _openers(other):
                    payload = {"intent": intent, "param": other, "listed": other_listed, "bare": other_bare}
                    texts.append((f"{quote}{close_list}, {opener}", payload))
        return self._options(texts)

    # ------------------------------------------------------------------ drafting
    def draft_tokens(
        self, draft: Draft, utterance: str, *, opened: tuple[str, frozenset[str]] | None = None
    ) -> tuple[list[int], list[int]]:
        """The tokens this decoder writes for ``draft``, in its own segmentation (openers,
        values, closers as they are walked), and the indices of those whose logits a decision
        reads. The tokens go as far as the last decision they answer: tokens after it are forced
        and never evaluated, so drafting them would only cost. The draft also ends at the first
        item it cannot vouch for (an unknown parameter or value, a choice not declared, a copied
        value ``utterance`` does not hold, a list). Empty when the intent is not in the catalog
        or no decision after the first needs the draft.

        ``opened=(opener, written)``: the call is written up to the ``opener`` of one of
        ``draft``'s parameters (``date="``), after the parameters ``written``; the tokens are
        then the rest of the call from that parameter's value on (the draft's items from it,
        up to one already written)."""
        tokens: list[int] = []
        decisions: set[int] = set()  # a decision at position q reads the logits after token q - 1

        def walk(options: list[_Option], chosen: tuple[int, ...], *, decided: bool = False) -> None:
            alive = [o.tokens for o in options]
            for pos, token in enumerate(chosen):
                if len(alive) <= 1:
                    break
                alive = [o for o in alive if len(o) > pos] or alive[:1]
                if len({o[pos] for o in alive}) > 1 and not (decided and pos == 0):
                    decisions.add(len(tokens) + pos)
                alive = [o for o in alive if o[pos] == token]
            tokens.extend(chosen)

        def drafted() -> tuple[list[int], list[int]]:
            end = min(max(decisions, default=0), _MAX_CALL_DRAFT)
            return tokens[:end], sorted(q - 1 for q in decisions if 0 < q <= end)

        spec = self._specs.get(draft.intent)
        if opened is None and (draft.intent == NO_INTENT or (spec is not None and not draft.items)):
            walk(self.openers, self._tok(f"{draft.intent}()"))
            return drafted()
        if spec is None:
            return [], []
        params = {p.name: p for p in spec.params}
        items = draft.items
        if opened is not None:  # from the opened parameter on
            start = next((i for i, (key, _) in enumerate(items) if opened[0].startswith(f"{key}=")), None)
            if start is None:
                return [], []
            items = items[start:]
        steps: list[tuple[ParamSpec, str, str | None, bool]] = []  # (param, opener, value text, quoted)
        for key, value in items:
            param = params.get(key)
            if param is None or not _decodable(param) or key in {s[0].name for s in steps}:
                break
            if opened is not None and key in opened[1]:
                break
            step = _draft_step(param, value, utterance)
            if step is None:
                break
            steps.append((param, *step))
            if step[1] is None:
                break
        if not steps:
            return [], []
        if opened is None:
            walk(self.openers, self._tok(f"{draft.intent}({steps[0][1]}"))
            used: set[str] = set()
        elif steps[0][1] != opened[0]:
            return [], []  # the value is written otherwise (a bare number's sign, say)
        else:
            used = set(opened[1])
        for index, (param, _, text, quoted) in enumerate(steps):
            used.add(param.name)
            if text is None:
                decisions.add(len(tokens))  # the value's first token is decided after the opener
                break
            following = steps[index + 1] if index + 1 < len(steps) else None
            quote = '"' if quoted else ""
            closer = f"{quote}, {following[1]}" if following is not None else f"{quote})"
            closers = self._closers(draft.intent, param, used, False, not quoted and param.kind != "bool")
            if param.kind in ("choice", "bool"):
                walk(self._choice_options(param, closers), self._tok(text + closer))
            else:
                written = self.model.tokenize(text)
                decisions.update(range(len(tokens), len(tokens) + len(written) + 1))  # each value token, and the stop
                tokens.extend(written)
                walk(closers, self._tok(closer), decided=True)
        return drafted()

    def _choice_options(self, param: ParamSpec, closers: list[_Option]) -> list[_Option]:
        """A choice (or bool) value and its closer, as one option each: the trie it is walked by."""
        values = [json.dumps(v, ensure_ascii=False)[1:-1] for v in param.choices] if param.kind == "choice" else ["true", "false"]
        return [replace(c, tokens=self._tok(v + c.text), text=v + c.text) for v in values for c in closers]

    # ------------------------------------------------------------------ decoding
    def decode(
        self,
        logits: Logits,
        utterance: str,
        *,
        max_tokens: int = 64,
        redraft: Callable[[list[str], Callable[[Call], bool]], Draft | None] | None = None,
    ) -> Decoded:
        """Decode one call given the logits after the prompt; ``utterance`` bounds copied values.

        ``redraft(intents, fits)`` drafts the call again (one of ``intents``, a call that ``fits``
        what is chosen) where the prompt's draft no longer holds (it guessed another intent,
        parameter or value, or there was none): at each decision of the call's opening, and at
        each later parameter's opener. The rest is then verified in the evaluation the next
        decision needs anyway, not decided step by step."""
        decoded = Decoded("", NO_INTENT, 0.0, {})
        start = self.model.n_tokens  # the prompt; max_tokens bounds what is added after it
        cursor = _Cursor(self.model, logits, decoded)
        if getattr(self.model, "holds", None) is None:  # a model that cannot take another draft
            redraft = None
        again = None if redraft is None else functools.partial(self._redraft, cursor, redraft=redraft, utterance=utterance)
        option, _, intent_prob = self._walk(cursor, self.openers, scores=decoded.intent_scores, redraft=again)
        decoded.intent, decoded.confidence = option.intent, intent_prob
        decoded.intent_scores[option.intent] = intent_prob
        parts = [option.text]
        used: set[str] = set()

        def spent() -> int:  # answer tokens so far: in the cache or queued
            return self.model.n_tokens + len(cursor.pending) - start

        while not option.end and spent() < max_tokens:
            param = option.param
            assert param is not None
            if redraft is not None and not (option.listed or option.item):
                self._redraft_rest(cursor, option, frozenset(used), redraft, utterance)
            used.add(param.name)
            closers = self._closers(option.intent, param, used, option.listed, option.bare)
            if param.kind in ("choice", "bool"):
                option, p, _ = self._walk(cursor, self._choice_options(param, closers))
                value_text = option.text
            else:
                budget = max_tokens - spent()
                source = self._copy_source(utterance) if param.from_utterance else None
                numeric = (param.kind if param.kind in ("int", "float") else "int") if option.bare else None
                if numeric is not None and option.text.endswith("-"):
                    numeric = "-" + numeric
                value, p, option = self._value(cursor, closers, source, budget, numeric=numeric)
                value_text = value.decode("utf-8", errors="replace") + option.text
            key = param.name
            decoded.argument_confidence[key] = decoded.argument_confidence.get(key, 1.0) * p
            parts.append(value_text)
        decoded.text = "".join(parts)
        return decoded

    def _redraft(
        self,
        cursor: _Cursor,
        alive: list[_Option],
        done: int,
        redraft: Callable[[list[str], Callable[[Call], bool]], Draft | None],
        utterance: str,
    ) -> None:
        """Where the draft ahead no longer holds after ``done`` tokens of the call's opening (the
        ``alive`` options share them), evaluate what is pending with a new draft that continues
        them, in one batch, to be taken as the prompt's draft is."""
        if self.model.holds(cursor.pending):  # type: ignore[attr-defined]
            return
        if len(alive) == 1 and alive[0].end:  # the call is complete: nothing is left to decide
            return
        chosen = alive[0].tokens[:done]
        openings = {(o.intent, o.param.name if o.param else None) for o in alive}

        def fits(call: Call) -> bool:  # the intent and first parameter of an option still possible
            return not call.args and (call.name, next(iter(call.kwargs), None)) in openings

        draft = redraft(list(dict.fromkeys(o.intent for o in alive)), fits)
        if draft is None:
            return
        tokens, reads = self.draft_tokens(draft, utterance)
        if len(tokens) <= done or tuple(tokens[:done]) != chosen:
            return
        # A read at q is the logits after token q; the one after the chosen tokens is the pending row.
        self._verify(cursor, tokens[done:], [q - done for q in reads if q >= done])

    def _redraft_rest(
        self,
        cursor: _Cursor,
        option: _Option,
        written: frozenset[str],
        redraft: Callable[[list[str], Callable[[Call], bool]], Draft | None],
        utterance: str,
    ) -> None:
        """Where the draft ahead no longer holds at the opener of another parameter (``option``,
        after the parameters ``written``), draft the rest of the call: the nearest row of the
        intent that has that parameter, from it on."""
        param = option.param
        if param is None or self.model.holds(cursor.pending):  # type: ignore[attr-defined]
            return
        opener = option.text[option.text.rfind(f"{param.name}=") :]

        def fits(call: Call) -> bool:
            return not call.args and param.name in call.kwargs

        draft = redraft([option.intent], fits)
        if draft is not None:
            self._verify(cursor, *self.draft_tokens(draft, utterance, opened=(opener, written)))

    def _verify(self, cursor: _Cursor, draft: list[int], reads: list[int]) -> None:
        """Evaluate what is pending and ``draft`` after it in one batch (``reads``: the drafted
        tokens whose logits a decision reads); the draft is then taken as the prompt's is."""
        if not draft:
            return
        logits = self.model.extend(cursor.pending, draft, reads)  # type: ignore[attr-defined]
        cursor.decoded.evaluations += 1
        if logits is not None:
            cursor.logits, cursor.pending = logits, []

    def _walk(
        self,
        cursor: _Cursor,
        options: list[_Option],
        *,
        first: int | None = None,
        scores: dict[str, float] | None = None,
        redraft: Callable[[list[_Option], int], None] | None = None,
    ) -> tuple[_Option, float, float]:
        """Follow the token trie of ``options``; consult the model only where it branches.

        Returns the option, its probability, and the probability at the point where only one
        intent was left (the intent's confidence, before any parameter choice)."""
        alive = [o for o in options if o.tokens and (first is None or o.tokens[0] == first)]
        if not alive:
            raise ValueError("no option to decode")
        pos = 0 if first is None else 1
        if first is not None:
            cursor.push(first, forced=False)
        prob = 1.0
        intent_prob: float | None = None
        while len(alive) > 1:
            if intent_prob is None and len({o.intent for o in alive}) == 1:
                intent_prob = prob
            longer = [o for o in alive if len(o.tokens) > pos]
            if len(longer) < len(alive):  # an option that is a token prefix of another: keep the longer ones
                alive = longer or alive[:1]
                continue
            branches = list(dict.fromkeys(o.tokens[pos] for o in alive))
            if len(branches) == 1:
                cursor.push(branches[0], forced=True)
            else:
                row = cursor.row()
                probs = _softmax(row[np.array(branches)])
                best = int(probs.argmax())
                cursor.decoded.sampled += 1
                if scores is not None:
                    by_token: dict[int, set[str]] = {}
                    for o in alive:
                        by_token.setdefault(o.tokens[pos], set()).add(o.intent)
                    for index, token in enumerate(branches):
                        if index != best:
                            intents = by_token[token]
                            for intent in intents:
                                scores[intent] = scores.get(intent, 0.0) + prob * float(probs[index]) / len(intents)
                prob *= float(probs[best])
                cursor.push(branches[best], forced=False)
            alive = [o for o in alive if o.tokens[pos] == cursor.pending[-1]]
            pos += 1
            if redraft is not None and len(branches) > 1:
                redraft(alive, pos)
        # The rest is forced. It is queued so a later decision sees it; a finished call never evaluates it.
        for token in alive[0].tokens[pos:]:
            cursor.push(token, forced=True)
        return alive[0], prob, prob if intent_prob is None else intent_prob

    def _value(
        self, cursor: _Cursor, closers: list[_Option], source: _Source | None, budget: int, *, numeric: str | None = None
    ) -> tuple[bytes, float, _Option]:
        """Decode a quoted value up to one of ``closers``; returns (value, probability, closer).
        ``source`` is the utterance a copied value comes from (None for a free value)."""
        closer_first = {o.tokens[0] for o in closers if o.tokens}
        closer_ids = np.fromiter(closer_first, dtype=np.int64)
        value = b""
        prob = 1.0
        rows: list[Logits] = []  # logits after each drafted token (already in the cache)
        draft: list[int] = []  # drafted tokens in the cache whose turn has not come yet
        token = closers[0].tokens[0]
        for _ in range(min(_MAX_VALUE_TOKENS, max(1, budget))):
            row = rows.pop(0) if rows else cursor.row()
            if numeric:
                allowed = self._numeric(value, closer_first, numeric)
            elif source is None:
                allowed = self._free(self._whole(cursor, row), value, closer_first)
                row = cursor.logits
            else:
                allowed = self._copied(value, source, closer_first)
            probs = _softmax(row[allowed])
            # Stop or go on is decided on the summed probability of each side, then the best token
            # of the winning side is taken: the model's mass for "the value ends here" is spread
            # over several closers (`")`, `",` …), and its mass for going on over several pieces.
            closing = np.isin(allowed, closer_ids) if value else np.zeros(len(allowed), dtype=bool)
            ends = bool(closing.any()) and (closing.all() or float(probs[closing].sum()) > 0.5)
            best = int(np.where(closing == ends, probs, -1.0).argmax())
            token = int(allowed[best])
            prob *= float(probs[best])
            cursor.decoded.sampled += 1
            if draft:
                if token == draft[0] and not ends:  # the draft holds: this token is already evaluated
                    draft.pop(0)
                    value += self.model.piece(token)
                    continue
                self.model.rewind(self.model.n_tokens - len(draft))  # diverged: drop the rest of the draft
                rows, draft = [], []
            if ends:
                break
            value += self.model.piece(token)
            cursor.push(token, forced=False)
            if source is not None and not getattr(self.model, "ahead", 0):  # a drafted call still ahead drafts this too
                draft = self._draft(source, value)
                if draft:
                    fed = self.model.feed([*cursor.pending, *draft], all_logits=True)
                    cursor.decoded.evaluations += 1
                    rows = list(fed[len(cursor.pending) - 1 :])
                    cursor.pending = []
        else:
            if draft:
                self.model.rewind(self.model.n_tokens - len(draft))
            token = closers[0].tokens[0]
        option, p, _ = self._walk(cursor, closers, first=token)
        return value, prob * p, option

    def _numeric(self, value: bytes, closer_first: set[int], kind: str) -> np.ndarray:
        """The tokens that keep ``value`` a number of ``kind`` (``int``: ``-?\\d+``; ``float`` also one
        ``.``): the vocabulary's number pieces (:meth:`_number_pieces`); a closer once the value is
        a number."""
        prefix = _NUMBER_PREFIX[kind]
        allowed = [t for t, piece in self._number_pieces() if prefix.fullmatch((value + piece).decode("utf-8", "replace"))]
        if _NUMBER[kind].fullmatch(value.decode("utf-8", "replace")):
            allowed += list(closer_first)
        return np.array(sorted(set(allowed)) or list(closer_first), dtype=np.int64)

    def _number_pieces(self) -> list[tuple[int, bytes]]:
        """The tokens numbers are written with: those of ``0`` to ``999`` (whatever digits a
        tokenizer groups), ``-`` and ``.``, with their text; found once per decoder."""
        if self._number_tokens is None:
            texts = [str(n) for n in range(1000)] + ["-", ".", "0.5", "-1"]
            tokens = {t for text in texts for t in self._tok(text)}
            pieces = [(t, self.model.piece(t)) for t in sorted(tokens)]
            self._number_tokens = [(t, p) for t, p in pieces if p and regex.fullmatch(rb"[-.0-9]+", p)]
        return self._number_tokens

    def _whole(self, cursor: _Cursor, row: Logits) -> np.ndarray:
        """``row`` as a whole array: the model completes a row that computes only the columns read."""
        if isinstance(row, np.ndarray):
            return row
        whole: np.ndarray = self.model.full_row()  # type: ignore[attr-defined]
        cursor.logits = whole
        cursor.decoded.evaluations += 1
        return whole

    def _copied(self, value: bytes, source: _Source, closer_first: set[int]) -> np.ndarray:
        """The tokens a value copied from ``source`` goes on with after ``value``; the closers where
        it may end."""
        if value:
            at = source.at(value)
            tokens = [t for t, piece in source.tokens if any(source.text.startswith(value + piece, i) for i in at)]
            ends = list(closer_first) if any(i + len(value) in source.ends for i in at) else []
        else:
            tokens, ends = source.first, []
        return np.array(tokens + ends or list(closer_first), dtype=np.int64)

    def _free(self, row: np.ndarray, value: bytes, closer_first: set[int]) -> np.ndarray:
        """A free value: the model's best tokens, except ones that would break the quoting."""
        top = np.argpartition(row, -16)[-16:]
        free = [int(t) for t in top if b'"' not in self.model.piece(int(t)) and not self.model.is_end(int(t))]
        return np.array(free + (list(closer_first) if value else []) or list(closer_first), dtype=np.int64)

    def _copy_source(self, utterance: str) -> _Source:
        """The tokens a value copied from ``utterance`` can be written with: every token of the
        utterance's tokenization from each character on (whole words: ``Nothing`` as well as
        `` Nothing``), and every short substring that is one token (pieces ending inside a word,
        as Chinese values do). Pieces holding a quote or a backslash are left out: they would
        break the value's quoting. Found by tokenizing; cached for the current utterance."""
        text = utterance.encode()
        if self._source is not None and self._source.text == text:
            return self._source
        found: dict[int, bytes] = {}
        for start in range(len(utterance)):
            for token in self.model.tokenize(utterance[start:]):
                if token not in found:
                    found[token] = self.model.piece(token)
            for end in range(start + 1, min(len(utterance), start + 16) + 1):
                tokens = self.model.tokenize(utterance[start:end])
                if len(tokens) == 1:
                    found.setdefault(tokens[0], self.model.piece(tokens[0]))
                elif len(tokens) > 2:
                    break  # longer substrings only get longer tokenizations
        pieces = [(t, p) for t, p in found.items() if p and b'"' not in p and b"\\" not in p]
        starts, ends = word_boundaries(utterance)
        first = [t for t, p in pieces if any(text.startswith(p, i) for i in starts)]
        self._source = _Source(text, pieces, starts, ends, first)
        return self._source

    def _draft(self, source: _Source, value: bytes) -> list[int]:
        """The utterance's next tokens after ``value`` (where it first occurs at a word start), to
        verify in one batch."""
        at = source.at(value)
        if not at:
            return []
        rest = source.text[at[0] + len(value) :].decode("utf-8", errors="ignore")
        return list(self.model.tokenize(rest))[:_DRAFT_TOKENS] if rest else []


def _draft_step(param: ParamSpec, value: Value, utterance: str) -> tuple[str, str | None, bool] | None:
    """How the decoder writes ``value`` for ``param``: (opener, value text, quoted); the value
    text is ``None`` when only the opener can be drafted, and ``None`` overall when not even it."""
    if isinstance(value, list | dict):
        return None
    name = param.name
    if param.kind == "bool":
        return (f"{name}=", ("true" if value else "false") if isinstance(value, bool) else None, False)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not (_bare_number(param) or (param.kind == "str" and param.numbers)):
            return None
        return (f"{name}=-" if value < 0 else f"{name}=", json.dumps(abs(value)), False)
    if _bare_number(param):
        return None
    opener = f'{name}="'
    if not isinstance(value, str) or not value:
        return (opener, None, True)
    if param.kind == "choice" and value not in param.choices:
        return (opener, None, True)
    if param.kind != "choice" and param.from_utterance and not can_copy(utterance, value):
        return (opener, None, True)
    return (opener, json.dumps(value, ensure_ascii=False)[1:-1], True)


def _decodable(param: ParamSpec) -> bool:
    """Whether constrained decoding can write ``param``'s value: everything but a mapping
    (``dict`` or pydantic-model parameters, which an unconstrained model writes)."""
    return param.kind != "object" and (param.item is None or param.item.kind != "object")


def _bare_number(param: ParamSpec) -> bool:
    """Whether ``param``'s value is written as a bare number (``minutes=10``, as the canonical call
    text writes numbers): an int or float the model writes itself. A number copied from the
    utterance stays quoted text (``temperature="二十六"``), coerced when it is bound."""
    return param.kind in ("int", "float") and not param.from_utterance


def _openers(param: ParamSpec) -> list[tuple[str, bool, bool]]:
    """The texts that open a value of ``param``, each with whether the value is a ``[...]`` list
    and whether it is a bare number. A list parameter takes a single quoted value too (the usual
    case in the datasets); a text parameter with ``numbers`` a bare number too."""
    if param.kind == "bool":
        return [(f"{param.name}=", False, False)]
    # A negative number opens with "=-": tokenizers merge the two (gemma's "=-" is one token), so
    # "=" followed by "-" is a spelling the model never saw and would not write.
    if _bare_number(param):
        return [(f"{param.name}=", False, True), (f"{param.name}=-", False, True)]
    if param.kind == "list":
        return [(f'{param.name}="', False, False), (f'{param.name}=["', True, False)]
    if param.kind == "str" and param.numbers:
        return [(f'{param.name}="', False, False), (f"{param.name}=", False, True), (f"{param.name}=-", False, True)]
    return [(f'{param.name}="', False, False)]


def reusable_prefix(cached: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading ``tokens`` a cache holding ``cached`` can keep for a new prompt: their
    common prefix, short of the last token, which is always evaluated again for its logits."""
    common = 0
    for old, new in zip(cached, tokens, strict=False):
        if old != new:
            break
        common += 1
    return min(common, len(tokens) - 1)


def greedy_decode(model: TokenModel, logits: Logits, max_tokens: int) -> tuple[str, int]:
    """Unconstrained greedy decoding until an end token; returns (text, tokens generated)."""
    out = b""
    count = 0
    for count in range(1, max_tokens + 1):  # noqa: B007
        if not isinstance(logits, np.ndarray):  # a row of a few columns (see Logits): this needs all
            logits = model.full_row()  # type: ignore[attr-defined]
        token = int(np.asarray(logits).argmax())
        if model.is_end(token):
            break
        out += model.piece(token)
        logits = model.feed([token])[-1]
    return out.decode("utf-8", errors="replace"), count
