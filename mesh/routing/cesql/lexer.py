"""Tokenizer for CESQL expression text.

Tokens carry their 0-based start offset so the parser can point at errors. Words
(``[A-Za-z0-9_]+``) are classified by the parser as keyword, identifier or function
name; a run of digits is an integer token (its sign is handled by the parser).

String literals follow section 2.2: ``'...'`` or ``"..."``; inside, a backslash and
the following character form one unit, and ``\\'`` (resp. ``\\"``) stands for the
delimiting quote. Every other backslash is kept verbatim, so ``'ab\\c'`` is the
4-character string ``ab\\c`` and LIKE patterns can carry their own ``\\%`` escapes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .errors import ParseError

__all__ = ["MAX_LENGTH", "Tok", "Token", "tokenize"]

#: Longest expression text accepted (characters).
MAX_LENGTH: Final = 4096


class Tok(enum.Enum):
    """Token kinds."""

    INT = "integer"
    STRING = "string literal"
    WORD = "word"
    OP = "operator"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    DOT = "'.'"
    EOF = "end of expression"


@dataclass(frozen=True, slots=True)
class Token:
    """One token: kind, source text (string literals: the unescaped value), offset."""

    kind: Tok
    text: str
    pos: int
    end: int

    def describe(self) -> str:
        """How the token is named in error messages."""
        if self.kind is Tok.EOF:
            return "end of expression"
        if self.kind is Tok.STRING:
            return "string literal"
        return repr(self.text)


_WORD_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_DIGITS: Final = frozenset("0123456789")
_SPACE: Final = frozenset(" \t\n\r\f\v")
_TWO_CHAR_OPS: Final = frozenset({"!=", "<>", "<=", ">="})
_ONE_CHAR_OPS: Final = frozenset("=<>+-*/%")
_PUNCT: Final = {"(": Tok.LPAREN, ")": Tok.RPAREN, ",": Tok.COMMA, ".": Tok.DOT}


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an EOF token; raises ParseError."""
    if len(text) > MAX_LENGTH:
        raise ParseError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH, text)
    tokens: list[Token] = []
    append = tokens.append
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c in _WORD_CHARS:
            start = i
            while i < n and text[i] in _WORD_CHARS:
                i += 1
            word = text[start:i]
            kind = Tok.INT if all(ch in _DIGITS for ch in word) else Tok.WORD
            append(Token(kind, word, start, i))
        elif c == "'" or c == '"':
            i = _string(text, i, append)
        elif text[i : i + 2] in _TWO_CHAR_OPS:
            append(Token(Tok.OP, text[i : i + 2], i, i + 2))
            i += 2
        elif c in _ONE_CHAR_OPS:
            append(Token(Tok.OP, c, i, i + 1))
            i += 1
        elif c in _PUNCT:
            append(Token(_PUNCT[c], c, i, i + 1))
            i += 1
        elif c == "!":
            raise ParseError("'!' must be followed by '=' (use NOT for negation)", i, text)
        else:
            raise ParseError(f"unexpected character {c!r}", i, text)
    append(Token(Tok.EOF, "", n, n))
    return tokens


def _string(text: str, start: int, append: Callable[[Token], None]) -> int:
    """Scan the string literal opening at ``start``; append its token; return the end."""
    quote = text[start]
    parts: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == quote:
            append(Token(Tok.STRING, "".join(parts), start, i + 1))
            return i + 1
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            parts.append(nxt if nxt == quote else c + nxt)
            i += 2
        else:
            parts.append(c)
            i += 1
    raise ParseError("unterminated string literal", start, text)
