"""Rich (boolean) dependencies, as rpm writes them: `(a >= 1 or (b if c else d))`.

Grammar (rpm's): a rich dependency is a parenthesised expression of operands joined by one
operator: `and`, `or`, `with` (any count of operands), `without` (two), `if`/`unless` (two,
optionally `else` and a third). An operand is a simple dependency `name [op evr]` or a nested
parenthesised expression. Different operators may not be mixed without parentheses.
"""

from __future__ import annotations

from dataclasses import dataclass

from mkosi_initrd.packages.model import Dep

_CMP = ("<", "<=", "=", "==", ">=", ">")
_NARY = ("and", "or", "with")
_BINARY = ("without",)
_COND = ("if", "unless")
KEYWORDS = (*_NARY, *_BINARY, *_COND, "else")


class RichDepError(ValueError):
    pass


@dataclass(frozen=True)
class Atom:
    dep: Dep


@dataclass(frozen=True)
class Bool:
    """`op` is "and", "or", "with" or "without"; `args` are Atom/Bool/Cond nodes."""

    op: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Cond:
    """`then if cond [else otherwise]` (op "if") or `then unless cond [else otherwise]`."""

    op: str
    then: Node
    cond: Node
    otherwise: Node | None = None


Node = Atom | Bool | Cond


def parse(text: str) -> Node:
    tokens = tokenize(text)
    if not tokens or tokens[0] != "(":
        raise RichDepError(f"rich dependency must start with '(': {text!r}")
    node, pos = _expr(tokens, 1, text)
    if pos != len(tokens):
        raise RichDepError(f"trailing text after rich dependency: {text!r}")
    return node


def tokenize(text: str) -> list[str]:
    """Parentheses and words; a word keeps balanced parentheses (`libfx.so.1()(64bit)`)."""
    tokens = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            tokens.append(c)
            i += 1
        else:
            start, depth = i, 0
            while i < len(text) and not text[i].isspace():
                if text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    if depth == 0:
                        break
                    depth -= 1
                i += 1
            tokens.append(text[start:i])
    return tokens


def _operand(tokens: list[str], pos: int, text: str) -> tuple[Node, int]:
    if pos >= len(tokens):
        raise RichDepError(f"unexpected end of rich dependency: {text!r}")
    if tokens[pos] == "(":
        return _expr(tokens, pos + 1, text)
    name = tokens[pos]
    if name == ")" or name in KEYWORDS:
        raise RichDepError(f"expected a dependency, got {name!r} in {text!r}")
    pos += 1
    if pos < len(tokens) and tokens[pos] in _CMP:
        if pos + 1 >= len(tokens) or tokens[pos + 1] in ("(", ")"):
            raise RichDepError(f"missing version after {tokens[pos]!r} in {text!r}")
        op = "=" if tokens[pos] == "==" else tokens[pos]
        return Atom(Dep(name, op, tokens[pos + 1])), pos + 2
    return Atom(Dep(name)), pos


def _expr(tokens: list[str], pos: int, text: str) -> tuple[Node, int]:
    """Parse after an opening parenthesis up to and including its closing one."""
    first, pos = _operand(tokens, pos, text)
    args = [first]
    op = ""
    cond: Node | None = None
    otherwise: Node | None = None
    while True:
        if pos >= len(tokens):
            raise RichDepError(f"missing ')' in {text!r}")
        tok = tokens[pos]
        if tok == ")":
            pos += 1
            break
        if tok not in KEYWORDS:
            raise RichDepError(f"expected an operator, got {tok!r} in {text!r}")
        if tok == "else":
            if op not in _COND or otherwise is not None:
                raise RichDepError(f"'else' without 'if'/'unless' in {text!r}")
            otherwise, pos = _operand(tokens, pos + 1, text)
            continue
        if op and (tok != op or op in _COND or op in _BINARY):
            raise RichDepError(f"cannot mix {op!r} and {tok!r} without parentheses in {text!r}")
        op = tok
        operand, pos = _operand(tokens, pos + 1, text)
        if op in _COND:
            cond = operand
        else:
            args.append(operand)
    if not op:
        return first, pos
    if op in _COND:
        assert cond is not None
        return Cond(op, first, cond, otherwise), pos
    return Bool(op, tuple(args)), pos


def atoms(node: Node) -> list[Dep]:
    """Every simple dependency named in `node`."""
    if isinstance(node, Atom):
        return [node.dep]
    if isinstance(node, Bool):
        return [d for a in node.args for d in atoms(a)]
    return atoms(node.then) + atoms(node.cond) + (atoms(node.otherwise) if node.otherwise else [])


def to_text(node: Node) -> str:
    if isinstance(node, Atom):
        return str(node.dep)
    if isinstance(node, Bool):
        return "(" + f" {node.op} ".join(to_text(a) for a in node.args) + ")"
    tail = f" else {to_text(node.otherwise)}" if node.otherwise else ""
    return f"({to_text(node.then)} {node.op} {to_text(node.cond)}{tail})"
