"""The call grammar: turn a model's text into :class:`~intentkit.calls.Call` objects.

The grammar is small and written out here; nothing in model output is ever evaluated::

    output   := noise? call (noise? call)* noise?
    call     := NAME "(" [arg ("," arg)* [","]] ")"
    arg      := NAME "=" value | value             (no positional after a keyword)
    value    := string | list | dict | bareword
    list     := "[" [value ("," value)* [","]] "]"
    dict     := "{" [key ":" value ("," key ":" value)* [","]] "}"    (JSON objects, Python dict literals)
    key      := string | NAME
    string   := '"…"' | "'…'" (JSON escapes) | “…” | ‘…’ | 「…」 | 『…』 | ＂…＂
    bareword := text up to , ) ] } ; or newline — a number, true/false, null/None, else a string

``NAME`` is any Unicode identifier (``home_turn_on_light``, ``位置``). Full-width punctuation
(``（ ） ， ； ＝ ［ ］``) and the enumeration comma ``、`` count as their ASCII forms outside
strings. Calls may be separated by ``;``, ``；``, newlines or other text; text around calls
(a role prefix, code fences, a trailing sentence, the ``[...]`` of a pythonic tool-call list) is
ignored. A number must be finite (``1e999`` is rejected). Dotted names (``os.system(…)``),
chained calls (``f().g()``) and calls used as values (``f(g(x))``) are rejected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import regex

from .calls import Call, Value
from .errors import ParseError

__all__ = ["DEFAULT_MAX_LENGTH", "ParseOutcome", "parse_calls", "parse_calls_lenient"]

#: Longest model output accepted, in characters; longer text is rejected before parsing.
DEFAULT_MAX_LENGTH = 8192
#: Deepest list / dict nesting accepted in one value.
MAX_DEPTH = 16
_MAX_NUMBER_CHARS = 64

_IDENT = r"[^\W\d]\w*"
# A call starts at a name directly followed by an opening parenthesis. The look-behind keeps
# "os.system(" from matching at "system(": the dotted name is matched whole and rejected.
_CALL_START = regex.compile(rf"(?<![\w.])({_IDENT}(?:\.{_IDENT})*)[(（]")
_KEYWORD = regex.compile(rf"({_IDENT})\s*[=＝](?![=＝])")
_NAME = regex.compile(_IDENT)
_WS = regex.compile(r"\s*")
_BAREWORD = regex.compile(r"[^,，、)）\]］}｝;；\n(（]*")
_NUMBER = regex.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_ESCAPE = regex.compile(r"\\(u[0-9a-fA-F]{4}|.)", regex.DOTALL)
_CHAINED = regex.compile(rf"\s*(?:\.\s*{_IDENT}\s*)?[(（]")
_RESUME = regex.compile(r"[;；\n]")

_COMMAS = frozenset(",，、")
_OPEN_DICT = frozenset("{｛")
_CLOSE_DICT = frozenset("}｝")
_COLONS = frozenset(":：")
_CLOSE_PAREN = frozenset(")）")
_OPEN_LIST = frozenset("[［")
_CLOSE_LIST = frozenset("]］")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』", "＂": "＂"}
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/"}
_WORDS: dict[str, Value] = {"true": True, "false": False, "null": None, "none": None}


@dataclass(slots=True)
class ParseOutcome:
    """What lenient parsing found: the calls that parsed and an error for each part that did not."""

    calls: list[Call] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_calls(text: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> list[Call]:
    """Parse every call in ``text``, in order.

    Returns ``[]`` for empty or whitespace-only text. Raises :class:`ParseError` (with the
    position and the raw text) for malformed calls and for text that holds no call at all.
    """
    outcome = _scan(text, max_length=max_length, lenient=False)
    return outcome.calls


def parse_calls_lenient(text: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> ParseOutcome:
    """Parse what can be parsed: malformed calls become errors and scanning resumes after them."""
    return _scan(text, max_length=max_length, lenient=True)


def _scan(text: str, *, max_length: int, lenient: bool) -> ParseOutcome:
    if not isinstance(text, str):
        raise TypeError(f"parse_calls expects str, got {type(text).__name__}")
    outcome = ParseOutcome()
    if len(text) > max_length:
        outcome.errors.append(
            ParseError(f"model output is {len(text)} characters, over the {max_length} limit", text=text, position=max_length)
        )
    else:
        parser = _Parser(text)
        pos = 0
        while (match := _CALL_START.search(text, pos)) is not None:
            try:
                outcome.calls.append(parser.call(match))
                pos = parser.pos
            except ParseError as exc:
                if not lenient:
                    raise
                outcome.errors.append(exc)
                resume = _RESUME.search(text, match.end())
                pos = resume.end() if resume else len(text)
        if not outcome.calls and not outcome.errors and text.strip():
            outcome.errors.append(ParseError("no function call found", text=text, position=0))
    if outcome.errors and not lenient:
        raise outcome.errors[0]
    return outcome


class _Parser:
    """Recursive descent over one text; ``pos`` is the cursor."""

    __slots__ = ("depth", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def error(self, message: str, position: int | None = None) -> ParseError:
        return ParseError(message, text=self.text, position=self.pos if position is None else position)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def call(self, match: regex.Match[str]) -> Call:
        name = match.group(1)
        if "." in name:
            raise self.error(f"dotted name {name!r} is not a callable intent", match.start())
        self.pos = match.end()
        args: list[Value] = []
        kwargs: dict[str, Value] = {}
        self.skip_ws()
        if self.peek() in _CLOSE_PAREN and self.peek():
            self.pos += 1
        else:
            self._arguments(name, args, kwargs)
        if _CHAINED.match(self.text, self.pos):
            raise self.error(f"the result of {name}(…) is called again; chained calls are rejected")
        return Call(name=name, args=tuple(args), kwargs=kwargs, span=(match.start(), self.pos))

    def _arguments(self, name: str, args: list[Value], kwargs: dict[str, Value]) -> None:
        while True:
            self.skip_ws()
            start = self.pos
            keyword = _KEYWORD.match(self.text, self.pos)
            if keyword is not None:
                key = keyword.group(1)
                if key in kwargs:
                    raise self.error(f"keyword argument {key!r} repeated", start)
                self.pos = keyword.end()
                kwargs[key] = self.value()
            else:
                if kwargs:
                    raise self.error("positional argument follows keyword argument", start)
                args.append(self.value())
            value_end = self.pos
            self.skip_ws()
            char = self.peek()
            if char in _COMMAS and char:
                self.pos += 1
                self.skip_ws()
                if self.peek() in _CLOSE_PAREN and self.peek():
                    self.pos += 1
                    return
            elif char in _CLOSE_PAREN and char:
                self.pos += 1
                return
            elif not char:
                raise self.error(f"unterminated call to {name}: missing ')'")
            elif (newline := self.text.find("\n", value_end, self.pos)) >= 0:
                raise self.error(f"unterminated call to {name}: missing ')' before the line ends", newline)
            else:
                raise self.error(f"expected ',' or ')' in call to {name}, found {char!r}")

    def value(self) -> Value:
        self.skip_ws()
        char = self.peek()
        if not char:
            raise self.error("expected a value, found the end of the text")
        if char in _QUOTES:
            return self.string(char)
        if char in _OPEN_LIST:
            return self.list_value()
        if char in _OPEN_DICT:
            return self.dict_value()
        start = self.pos
        end = _BAREWORD.match(self.text, start).end()  # type: ignore[union-attr]
        word = self.text[start:end].strip()
        self.pos = end
        if self.peek() in "(（" and self.peek():
            raise self.error("a call cannot be used as a value")
        if not word:
            raise self.error("missing value", start)
        return self._scalar(word, start)

    def _scalar(self, word: str, start: int) -> Value:
        lowered = word.lower()
        if lowered in _WORDS:
            return _WORDS[lowered]
        if _NUMBER.fullmatch(word):
            if len(word) > _MAX_NUMBER_CHARS:
                raise self.error("number literal too long", start)
            try:
                number: int | float = float(word) if any(c in word for c in ".eE") else int(word)
            except ValueError:  # digits Python cannot convert stay text
                return word
            if not math.isfinite(number):
                raise self.error(f"number {word} is out of range", start)
            return number
        return word

    def string(self, opener: str) -> str:
        start = self.pos
        closer = _QUOTES[opener]
        self.pos += 1
        if opener in "\"'":
            body_start = self.pos
            text = self.text
            while True:
                end = text.find(opener, self.pos)
                if end < 0:
                    raise self.error("unterminated string", start)
                # A quote preceded by an odd number of backslashes is escaped.
                slashes = 0
                while text[end - 1 - slashes] == "\\" and end - 1 - slashes >= body_start:
                    slashes += 1
                if slashes % 2 == 0:
                    break
                self.pos = end + 1
            body = text[body_start:end]
            self.pos = end + 1
            return _ESCAPE.sub(_unescape, body) if "\\" in body else body
        end = self.text.find(closer, self.pos)
        if end < 0:
            raise self.error("unterminated string", start)
        self.pos = end + 1
        return self.text[start + 1 : end]

    def list_value(self) -> list[Value]:
        items: list[Value] = []
        self._items(_CLOSE_LIST, "list", lambda: items.append(self.value()))
        return items

    def dict_value(self) -> dict[str, Value]:
        items: dict[str, Value] = {}

        def entry() -> None:
            self.skip_ws()
            key_at = self.pos
            key = self.dict_key()
            if key in items:
                raise self.error(f"key {key!r} repeated", key_at)
            self.skip_ws()
            if not (self.peek() in _COLONS and self.peek()):
                raise self.error(f"expected ':' after the key {key!r}")
            self.pos += 1
            items[key] = self.value()

        self._items(_CLOSE_DICT, "dict", entry)
        return items

    def _items(self, closers: frozenset[str], what: str, item: Callable[[], None]) -> None:
        """Parse the comma-separated items of a list or dict whose opener is at the cursor, up to
        one of ``closers`` (a trailing comma allowed); ``item`` parses one."""
        start = self.pos
        closer = sorted(closers)[0]
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"values nested deeper than {MAX_DEPTH}", start)
        self.pos += 1
        self.skip_ws()
        if self.peek() in closers and self.peek():
            self.pos += 1
            self.depth -= 1
            return
        while True:
            item()
            self.skip_ws()
            char = self.peek()
            if char in _COMMAS and char:
                self.pos += 1
                self.skip_ws()
                if self.peek() in closers and self.peek():
                    self.pos += 1
                    break
            elif char in closers and char:
                self.pos += 1
                break
            elif not char:
                raise self.error(f"unterminated {what}: missing '{closer}'", start)
            else:
                raise self.error(f"expected ',' or '{closer}' in {what}, found {char!r}")
        self.depth -= 1

    def dict_key(self) -> str:
        char = self.peek()
        if char in _QUOTES and char:
            return self.string(char)
        name = _NAME.match(self.text, self.pos)
        if name is None:
            raise self.error("expected a key (a quoted string or a name)")
        self.pos = name.end()
        return name.group()


def _unescape(match: regex.Match[str]) -> str:
    code = match.group(1)
    if len(code) == 5:  # \uXXXX
        return chr(int(code[1:], 16))
    return _SIMPLE_ESCAPES.get(code, code)
