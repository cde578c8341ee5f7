"""Milvus filter expressions: escaping and composition (pure)."""

from hypothesis import given
from hypothesis import strategies as st

from retrieval.expressions import filter_expression, string_literal
from retrieval.sources import CandidateFilters


def _unescape(literal: str) -> str:
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            out.append(body[i + 1])
            i += 2
        else:
            assert body[i] != '"', "an unescaped quote would end the literal early"
            out.append(body[i])
            i += 1
    return "".join(out)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_characters="\x7f")))
def test_printable_strings_round_trip_through_a_literal(value: str) -> None:
    literal = string_literal(value)
    assert literal is not None and literal.startswith('"') and literal.endswith('"')
    assert _unescape(literal) == value


def test_control_characters_are_not_pushed() -> None:
    assert string_literal("a\nb") is None
    expression, not_pushed = filter_expression(
        CandidateFilters(available_only=False), ["a\nb", "ok"]
    )
    assert expression == 'item_id not in ["ok"]'
    assert not_pushed == 1


def test_quotes_and_backslashes_are_escaped() -> None:
    assert string_literal('a"b\\c') == '"a\\"b\\\\c"'


def test_filters_compose_with_and() -> None:
    filters = CandidateFilters(categories=frozenset({"Drama", "Comedy"}), available_only=True)
    expression, not_pushed = filter_expression(filters, ["i2", "i1"])
    assert expression == (
        'available == true and array_contains_any(categories, ["Comedy", "Drama"]) '
        'and item_id not in ["i1", "i2"]'
    )
    assert not_pushed == 0


def test_no_filters_give_an_empty_expression() -> None:
    assert filter_expression(CandidateFilters(available_only=False)) == ("", 0)


def test_exclusions_beyond_the_cap_are_reported_for_overfetching() -> None:
    expression, not_pushed = filter_expression(
        CandidateFilters(available_only=False), [f"i{n}" for n in range(10)], max_excluded=4
    )
    assert expression.count('"i') == 4
    assert not_pushed == 6
