import pytest

from mkosi_initrd.packages.model import Dep
from mkosi_initrd.packages.richdep import Atom, Bool, Cond, RichDepError, atoms, parse, to_text


def test_or_of_versioned_and_plain_deps() -> None:
    assert parse("(a >= 1.0 or b)") == Bool("or", (Atom(Dep("a", ">=", "1.0")), Atom(Dep("b"))))


def test_chained_operator_collects_all_operands() -> None:
    node = parse("(a and b and c)")
    assert isinstance(node, Bool) and [x.dep.name for x in node.args] == ["a", "b", "c"]  # type: ignore[union-attr]


def test_if_else_keeps_the_three_branches() -> None:
    assert parse("(a if b else c)") == Cond("if", Atom(Dep("a")), Atom(Dep("b")), Atom(Dep("c")))


def test_unless_without_else() -> None:
    assert parse("(a unless b)") == Cond("unless", Atom(Dep("a")), Atom(Dep("b")))


def test_nested_expressions_with_epochs_and_sonames() -> None:
    node = parse("((libfx.so.1()(64bit) with fx = 1:2.3-4) or (c without d))")
    assert node == Bool(
        "or",
        (
            Bool("with", (Atom(Dep("libfx.so.1()(64bit)")), Atom(Dep("fx", "=", "1:2.3-4")))),
            Bool("without", (Atom(Dep("c")), Atom(Dep("d")))),
        ),
    )


def test_text_round_trips() -> None:
    text = "((a >= 1 with b) or (c if d else e))"
    assert to_text(parse(text)) == text


def test_atoms_lists_every_simple_dependency() -> None:
    assert [d.name for d in atoms(parse("(a or (b if c else (d and e)))"))] == ["a", "b", "c", "d", "e"]


def test_debian_style_versions_parse() -> None:
    assert parse("(debconf >= 0.5 or debconf-2.0)") == Bool(
        "or", (Atom(Dep("debconf", ">=", "0.5")), Atom(Dep("debconf-2.0")))
    )


@pytest.mark.parametrize(
    "text",
    [
        "a or b",
        "(a or b",
        "(a or b and c)",
        "(a if b if c)",
        "(a else b)",
        "(a or)",
        "(a >= )",
        "(a b)",
        "()",
    ],
)
def test_malformed_rich_deps_are_rejected(text: str) -> None:
    with pytest.raises(RichDepError):
        parse(text)
