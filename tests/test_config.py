"""spela_stream.config: option texts parsed into the values the library takes."""

from __future__ import annotations

import pytest

from spela_stream.config import parse_columns, parse_hidden, parse_layers
from spela_stream.errors import ConfigError


def test_hidden_widths_auto_and_absent() -> None:
    assert parse_hidden("1024,1024") == (1024, 1024)
    assert parse_hidden(" 512 , 7") == (512, 7)
    assert parse_hidden("  auto ") == "auto"
    assert parse_hidden(None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b", "'a,b': give layer widths like 1024,1024, or auto"),
        ("", "'': give layer widths like 1024,1024, or auto"),
        ("64,", "'64,': give layer widths like 1024,1024, or auto"),
        ("0", "'0': widths must be positive integers"),
        ("16,-2", "'16,-2': widths must be positive integers"),
    ],
)
def test_hidden_bad_texts_name_the_text_and_the_form(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_hidden(text)
    assert str(caught.value) == message


def test_columns_are_stripped_distinct_and_at_least_two() -> None:
    assert parse_columns("a, b ,label") == ("a", "b", "label")
    assert parse_columns(None) is None
    for bad in ("a", "a,a", "a,,b", ""):
        with pytest.raises(ConfigError) as caught:
            parse_columns(bad)
        assert str(caught.value) == f"{bad!r}: give distinct column names like a,b,c,label"


def test_layers_numbers_none_and_absent() -> None:
    assert parse_layers("0,1,3") == (0, 1, 3)
    assert parse_layers("none") == ()
    assert parse_layers(None) is None
    with pytest.raises(ConfigError, match=r"^'x': give layer numbers like 0,1, or none$"):
        parse_layers("x")
    with pytest.raises(ConfigError, match=r"^'1,-1': layers count from 0$"):
        parse_layers("1,-1")
