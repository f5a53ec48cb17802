"""The single definition of the prompt a routing model sees, shared by training and serving.

A model answers well only in the format it was trained on, so the trainer records
:attr:`PromptFormat.fingerprint` next to the weights and every backend builds its messages
here; a mismatch is detected at load time instead of silently costing accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .calls import NO_INTENT
from .registry import IntentCatalog, IntentSpec

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "PROMPT_VERSION",
    "TEMPLATES",
    "Message",
    "PromptFormat",
    "PromptMismatchWarning",
    "check_prompt",
]

#: The system prompt of the seed recipe, kept verbatim so its fine-tuned models route as trained.
DEFAULT_SYSTEM_PROMPT = "你是一个意图识别专家，可以根据用户的问题识别出意图，并返回对应的函数调用和参数。"
#: Bumped whenever the way messages are assembled changes; part of the fingerprint.
PROMPT_VERSION = 1
_SENTENCE_END = tuple("。！？!?.…")

Message = dict[str, str]

#: Text templates: (prompt up to the answer, what ends the answer). Gemma has no system role,
#: so the system text opens the user turn, as its own chat template does.
TEMPLATES: dict[str, tuple[str, str]] = {
    "gemma": ("<start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>"),
    "chatml": (
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>",
    ),
}


@dataclass(frozen=True, slots=True)
class PromptFormat:
    """How an utterance becomes chat messages.

    ``system_prompt`` is the instruction; ``list_intents`` appends the registered intents with
    their signatures (for zero-shot models that were not fine-tuned on them);
    ``turn_separator`` ends each turn when a session's user turns are joined; ``template``
    names the text format of :meth:`render` (one of :data:`TEMPLATES`), used by the trainer and
    by backends that take raw text, so that both see exactly the same characters.
    """

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    list_intents: bool = False
    turn_separator: str = "。"
    template: str = "gemma"

    @property
    def fingerprint(self) -> str:
        """A short hash of everything that shapes the prompt (not the catalog)."""
        payload = json.dumps([PROMPT_VERSION, asdict(self)], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def system(self, catalog: IntentCatalog | None = None) -> str:
        """The system message; lists the intents when ``list_intents`` is set."""
        if not self.list_intents or catalog is None:
            return self.system_prompt
        lines = [self.system_prompt, "", "可用的函数（只能调用这些）："]
        lines += [f"- {_signature(spec)}：{spec.description}".rstrip("：") for spec in catalog.intents]
        lines += ["", f'只回答函数调用，例如 weather_search(city="杭州")；没有合适的函数时回答 {NO_INTENT}()。']
        return "\n".join(lines)

    def messages(self, text: str, catalog: IntentCatalog | None = None) -> list[Message]:
        """The chat messages for one utterance: system, then user."""
        return [{"role": "system", "content": self.system(catalog)}, {"role": "user", "content": text}]

    def render(self, text: str, catalog: IntentCatalog | None = None) -> str:
        """The full prompt text, up to where the model's answer starts."""
        return TEMPLATES[self.template][0].format(system=self.system(catalog), user=text)

    @property
    def answer_end(self) -> str:
        """The text that ends an answer in this template (generation stops there)."""
        return TEMPLATES[self.template][1]

    def join_turns(self, turns: Sequence[str]) -> str:
        """Join a session's user turns the way the seed recipe does.

        One turn is left as it is; several are each ended with ``turn_separator`` unless they
        already end a sentence: ``["我想听音乐", "给我放个周杰伦的音乐吧"]`` →
        ``"我想听音乐。给我放个周杰伦的音乐吧。"``.
        """
        turns = [t.strip() for t in turns if t.strip()]
        if len(turns) <= 1:
            return turns[0] if turns else ""
        return "".join(t if t.endswith(_SENTENCE_END) else t + self.turn_separator for t in turns)

    def chat_template(self, catalog: IntentCatalog | None = None) -> str:
        """A Jinja chat template (``tokenizer.chat_template``, as Hugging Face and llama.cpp read
        it) that renders exactly :meth:`render`'s text: the system message (this format's system
        prompt, or the intents listed for ``catalog``, where the messages bring none), the user
        turns joined as :meth:`join_turns` joins them, and the generation prompt. Assistant turns
        are left out: the model was trained on the user's turns alone. The text opens with the
        renderer's ``bos_token``, as Hugging Face templates do, for the servers that tokenize a
        rendered chat without adding it (llama-cpp-python). Every GGUF intentkit writes carries
        it, so that a third-party server renders the prompt the model was trained on."""
        start, end = TEMPLATES[self.template][0].split("{user}")
        head, between = start.split("{system}")
        answer_start = end.split(self.answer_end, 1)[1]
        default_system = self.system(catalog)
        ends = "".join(_SENTENCE_END)

        def literal(text: str) -> str:
            return json.dumps(text, ensure_ascii=False)

        return (
            "{%- set ns = namespace(system=" + literal(default_system) + ", users=[]) -%}"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] -%}"
            "{%- elif message['role'] == 'user' and message['content'] | trim -%}"
            "{%- set ns.users = ns.users + [message['content'] | trim] -%}"
            "{%- endif -%}{%- endfor -%}"
            "{{- bos_token if bos_token is defined else '' -}}"
            "{{- " + literal(head) + " + ns.system + " + literal(between) + " -}}"
            "{%- if ns.users | length == 1 -%}{{- ns.users[0] -}}"
            "{%- else -%}{%- for turn in ns.users -%}{{- turn -}}"
            "{%- if turn[-1:] not in " + literal(ends) + " -%}{{- " + literal(self.turn_separator) + " -}}{%- endif -%}"
            "{%- endfor -%}{%- endif -%}"
            "{{- " + literal(self.answer_end) + " -}}"
            "{%- if add_generation_prompt -%}{{- " + literal(answer_start) + " -}}{%- endif -%}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "version": PROMPT_VERSION, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptFormat:
        """Rebuild a format saved with :meth:`to_dict` (extra keys such as the fingerprint are ignored)."""
        return cls(**{k: data[k] for k in ("system_prompt", "list_intents", "turn_separator", "template") if k in data})

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown prompt template {self.template!r}; templates: {', '.join(TEMPLATES)}")


def _signature(spec: IntentSpec) -> str:
    parts = []
    for param in spec.params:
        kind = "|".join(param.choices) if param.kind == "choice" else param.kind
        default = "" if param.required else f" = {json.dumps(param.default, ensure_ascii=False, default=str)}"
        parts.append(f"{param.name}: {kind}{default}")
    return f"{spec.name}({', '.join(parts)})"


class PromptMismatchWarning(UserWarning):
    """A model was trained with a different prompt than the runtime builds: expect poor accuracy."""


def check_prompt(trained: dict[str, Any] | None, runtime: PromptFormat, source: str) -> bool:
    """Compare a model's saved prompt (``intentkit.json``'s ``prompt``) with the runtime's; warn loudly
    on a mismatch. Returns True when they match (or the model recorded none)."""
    if not trained or trained.get("fingerprint") in (None, runtime.fingerprint):
        return True
    saved = PromptFormat.from_dict(trained)
    changed = [k for k, v in asdict(runtime).items() if asdict(saved).get(k) != v] or ["version"]
    message = (
        f"{source} was trained with prompt {trained.get('fingerprint')} but the router builds prompt "
        f"{runtime.fingerprint} (differs in: {', '.join(changed)}); accuracy will suffer. "
        f"Use PromptFormat.from_dict(...) with the model's saved prompt."
    )
    logging.getLogger("intentkit").warning(message)
    warnings.warn(message, PromptMismatchWarning, stacklevel=3)
    return False
