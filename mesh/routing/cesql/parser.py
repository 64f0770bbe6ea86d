"""Recursive-descent / precedence-climbing parser: tokens -> :mod:`ast` nodes.

Precedence (section 3.6), tightest first: function calls; unary ``NOT`` and ``-``;
postfix ``LIKE`` and ``IN``; ``* / %``; ``+ -``; comparisons; ``AND OR XOR``. Equal
precedence associates left to right, so ``a OR b AND c`` is ``(a OR b) AND c`` and
``NOT a = b`` is ``(NOT a) = b``: parenthesize when in doubt.

Limits keep parsing (and later compilation and evaluation) bounded and free of
RecursionError: text longer than :data:`MAX_LENGTH`, syntactic nesting (parentheses,
unary operators, call arguments, IN sets) deeper than :data:`MAX_NESTING`, and trees
deeper than :data:`MAX_DEPTH` (long operator chains) are ParseErrors.
"""

from __future__ import annotations

import re
from typing import Final, NoReturn

from .ast import (
    Attribute,
    Binary,
    Call,
    DataExists,
    DataPath,
    Exists,
    In,
    Like,
    Literal,
    Node,
    Unary,
    children,
)
from .errors import ParseError
from .lexer import MAX_LENGTH, Tok, Token, tokenize
from .types import INT32_MAX

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "MAX_NESTING", "parse_ast"]

#: Deepest syntactic nesting accepted (parentheses, unary operators, calls, IN sets).
MAX_NESTING: Final = 64
#: Deepest syntax tree accepted (counts every operator, e.g. in ``a OR b OR c ...``).
MAX_DEPTH: Final = 128

KEYWORDS: Final = frozenset({"AND", "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "FALSE"})
_BINARY_PRECEDENCE: Final = {
    "AND": 1,
    "OR": 1,
    "XOR": 1,
    "=": 2,
    "!=": 2,
    "<>": 2,
    "<": 2,
    "<=": 2,
    ">": 2,
    ">=": 2,
    "+": 3,
    "-": 3,
    "*": 4,
    "/": 4,
    "%": 4,
}
_IDENTIFIER: Final = re.compile(r"[a-z0-9]+")
_FUNCTION_NAME: Final = re.compile(r"[A-Za-z][A-Za-z_]*")
_DATA_SEGMENT: Final = re.compile(r"[A-Za-z0-9_]+")
#: Context attributes every valid event has (``EXISTS`` of them is always true).
REQUIRED_ATTRIBUTES: Final = frozenset({"id", "source", "specversion", "type"})


def parse_ast(text: str, *, strict: bool = False) -> Node:
    """Parse CESQL ``text`` into a syntax tree; raises :class:`ParseError`.

    ``strict`` rejects the event-mesh data extension (``data.<path>``).
    """
    if not isinstance(text, str):
        raise TypeError(f"CESQL expression must be a str, not {type(text).__name__}")
    parser = _Parser(text, tokenize(text), strict)
    try:
        return parser.parse()
    except RecursionError:  # only if the caller's stack is already nearly exhausted
        raise ParseError("expression is too deeply nested", 0, text) from None


class _Parser:
    def __init__(self, text: str, tokens: list[Token], strict: bool) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.strict = strict
        self.nesting = 0
        self.depths: dict[int, int] = {}

    # --- helpers --------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        if token.kind is not Tok.EOF:
            self.i += 1
        return token

    def fail(self, message: str, position: int) -> NoReturn:
        raise ParseError(message, position, self.text)

    def expect(self, kind: Tok, context: str) -> Token:
        token = self.peek()
        if token.kind is not kind:
            self.fail(f"expected {kind.value} {context}, found {token.describe()}", token.pos)
        return self.advance()

    def keyword(self, token: Token) -> str | None:
        if token.kind is Tok.WORD:
            upper = token.text.upper()
            if upper in KEYWORDS:
                return upper
        return None

    def node(self, node: Node, position: int) -> Node:
        """Record ``node``'s tree depth; fail if it exceeds MAX_DEPTH."""
        depth = 1 + max((self.depths[id(c)] for c in children(node)), default=0)
        if depth > MAX_DEPTH:
            self.fail(f"expression is nested more than {MAX_DEPTH} levels deep", position)
        self.depths[id(node)] = depth
        return node

    def enter(self, position: int) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            self.fail(f"expression is nested more than {MAX_NESTING} levels deep", position)

    # --- grammar --------------------------------------------------------------------

    def parse(self) -> Node:
        if self.peek().kind is Tok.EOF:
            self.fail("empty expression", 0)
        node = self.expression()
        token = self.peek()
        if token.kind is not Tok.EOF:
            self.fail(f"unexpected {token.describe()} after a complete expression", token.pos)
        return node

    def expression(self) -> Node:
        self.enter(self.peek().pos)
        node = self.binary(1)
        self.nesting -= 1
        return node

    def binary(self, min_precedence: int) -> Node:
        left = self.postfix()
        while True:
            token = self.peek()
            if token.kind is Tok.OP:
                op = token.text
            else:
                op = self.keyword(token) or ""
            precedence = _BINARY_PRECEDENCE.get(op)
            if precedence is None or precedence < min_precedence:
                return left
            self.advance()
            right = self.binary(precedence + 1)
            left = self.node(Binary(op, left, right, token.pos), token.pos)

    def postfix(self) -> Node:
        node = self.unary()
        while True:
            token = self.peek()
            word = self.keyword(token)
            negated = False
            if word == "NOT":
                following = self.keyword(self.peek(1))
                if following not in ("LIKE", "IN"):
                    self.fail("NOT here must be followed by LIKE or IN", token.pos)
                negated = True
                self.advance()
                word = following
            if word == "LIKE":
                self.advance()
                pattern = self.peek()
                if pattern.kind is not Tok.STRING:
                    self.fail(
                        f"the pattern of LIKE must be a string literal, found {pattern.describe()}",
                        pattern.pos,
                    )
                self.advance()
                node = self.node(Like(node, pattern.text, negated, token.pos), token.pos)
            elif word == "IN":
                self.advance()
                values = self.set_expression()
                node = self.node(In(node, values, negated, token.pos), token.pos)
            else:
                return node

    def set_expression(self) -> tuple[Node, ...]:
        self.expect(Tok.LPAREN, "to open the IN set")
        values = [self.expression()]
        while self.peek().kind is Tok.COMMA:
            self.advance()
            values.append(self.expression())
        self.expect(Tok.RPAREN, "to close the IN set")
        return tuple(values)

    def unary(self) -> Node:
        token = self.peek()
        if self.keyword(token) == "NOT":
            self.advance()
            self.enter(token.pos)
            operand = self.unary()
            self.nesting -= 1
            return self.node(Unary("NOT", operand, token.pos), token.pos)
        if token.kind is Tok.OP and token.text in ("-", "+"):
            self.advance()
            following = self.peek()
            if following.kind is Tok.INT:  # a signed integer literal
                self.advance()
                return self.node(self.integer(following, token), token.pos)
            if token.text == "+":
                self.fail("unary '+' is only allowed in front of an integer literal", token.pos)
            self.enter(token.pos)
            operand = self.unary()
            self.nesting -= 1
            return self.node(Unary("-", operand, token.pos), token.pos)
        return self.primary()

    def integer(self, digits: Token, sign: Token | None = None) -> Literal:
        value = int(digits.text)
        negative = sign is not None and sign.text == "-"
        if value > INT32_MAX + (1 if negative else 0):
            self.fail(
                "integer literal is outside the 32-bit range (-2147483648 to 2147483647)",
                sign.pos if sign else digits.pos,
            )
        start = sign.pos if sign else digits.pos
        return Literal(-value if negative else value, start)

    def primary(self) -> Node:
        token = self.advance()
        kind = token.kind
        if kind is Tok.INT:
            return self.node(self.integer(token), token.pos)
        if kind is Tok.STRING:
            return self.node(Literal(token.text, token.pos), token.pos)
        if kind is Tok.LPAREN:
            node = self.expression()
            self.expect(Tok.RPAREN, f"to close the '(' at position {token.pos}")
            return node
        if kind is Tok.WORD:
            word = self.keyword(token)
            if word == "TRUE" or word == "FALSE":
                return self.node(Literal(word == "TRUE", token.pos), token.pos)
            if word == "EXISTS":
                return self.exists(token)
            if word is not None:
                self.fail(f"unexpected keyword {word}", token.pos)
            if self.peek().kind is Tok.LPAREN:
                return self.call(token)
            if self.peek().kind is Tok.DOT:
                return self.node(DataPath(self.data_path(token), token.pos), token.pos)
            return self.node(Attribute(self.identifier(token), token.pos), token.pos)
        self.fail(f"expected a value, found {token.describe()}", token.pos)

    def identifier(self, token: Token) -> str:
        name = token.text.lower()
        if not _IDENTIFIER.fullmatch(name):
            self.fail(
                f"invalid attribute name {token.text!r}: names are lower-case letters and digits",
                token.pos,
            )
        return name

    def exists(self, keyword: Token) -> Node:
        token = self.peek()
        if token.kind is not Tok.WORD or self.keyword(token) is not None:
            self.fail(
                f"expected an attribute name after EXISTS, found {token.describe()}", token.pos
            )
        self.advance()
        if self.peek().kind is Tok.DOT:
            return self.node(DataExists(self.data_path(token), keyword.pos), keyword.pos)
        return self.node(Exists(self.identifier(token), keyword.pos), keyword.pos)

    def data_path(self, head: Token) -> tuple[str, ...]:
        """``data.a.b`` (the head word is consumed, the next token is the dot)."""
        if head.text.lower() != "data":
            self.fail(
                f"unexpected '.' after {head.text!r}: only the data extension "
                "(data.<path>) uses dotted names",
                self.peek().pos,
            )
        if self.strict:
            self.fail(
                "data.<path> access is an event-mesh extension to CESQL 1.0, "
                "not allowed in strict mode",
                head.pos,
            )
        path: list[str] = []
        end = head.end
        while self.peek().kind is Tok.DOT:
            dot = self.advance()
            segment = self.peek()
            if dot.pos != end:
                self.fail("unexpected space before '.' in a data path", dot.pos)
            if (
                segment.pos != dot.end
                or segment.kind not in (Tok.WORD, Tok.INT)
                or not _DATA_SEGMENT.fullmatch(segment.text)
            ):
                self.fail(
                    "expected a data path segment (letters, digits, '_') right after '.'", dot.end
                )
            self.advance()
            path.append(segment.text)
            end = segment.end
        return tuple(path)

    def call(self, name: Token) -> Node:
        if not _FUNCTION_NAME.fullmatch(name.text):
            self.fail(
                f"invalid function name {name.text!r}: letters and '_' only, "
                "starting with a letter",
                name.pos,
            )
        self.advance()  # '('
        args: list[Node] = []
        if self.peek().kind is not Tok.RPAREN:
            args.append(self.expression())
            while self.peek().kind is Tok.COMMA:
                self.advance()
                args.append(self.expression())
        self.expect(Tok.RPAREN, f"to close the argument list of {name.text}")
        return self.node(Call(name.text.upper(), tuple(args), name.pos), name.pos)
