"""Strict number parsing in every text reader (issue 12, defect 15): ASCII numbers only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spela_stream.sources import BadRecordError, open_source
from spela_stream.sources.numparse import number

ARFF_HEAD = "@relation r\n@attribute a numeric\n@attribute b numeric\n@attribute c {x,y}\n@data\n"
# Each reader: file name, two records whose second holds V as feature 2, and the message its
# "not a number" error gives for line 2 (the ARFF header is 5 lines, so its record is line 7).
READERS = {
    "csv": ("d.csv", "1,2,x\n1,{v},x\n", "d.csv line 2: field 2 is {v!r}, not a number"),
    "tsv": ("d.tsv", "1\t2\tx\n1\t{v}\tx\n", "d.tsv line 2: field 2 is {v!r}, not a number"),
    "libsvm": ("d.libsvm", "1 1:1 2:2\n1 1:1 2:{v}\n", "value {v!r} of index 2 is not a number"),
    "arff": ("d.arff", ARFF_HEAD + "1,2,x\n1,{v},x\n", "attribute 'b' is {v!r}, not a number"),
    "jsonl": ("d.jsonl", '{"x": [1, 2], "y": "x"}\n{"x": [1, {v}], "y": "x"}\n', "line 2"),
}
LENIENT = ["1_000", "1_0.5", "١٢٣", "１２３", "1e1_0", "٣.٥"]  # float() takes every one of these


def _read(tmp_path: Path, reader: str, value: str) -> tuple[list[float], list[BadRecordError]]:
    name, template, _ = READERS[reader]
    path = tmp_path / name
    path.write_text(template.replace("{v}", value), encoding="utf-8")
    bad: list[BadRecordError] = []
    with open_source(
        str(path), on_error=bad.append, header=None if reader != "csv" else False
    ) as src:
        xs = [float(s.x[1]) for s in src]
    return xs, bad


@pytest.mark.parametrize("value", LENIENT)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_lenient_float_literals_are_not_numbers(tmp_path: Path, reader: str, value: str) -> None:
    assert isinstance(float(value), float)  # the leniency being closed
    xs, bad = _read(tmp_path, reader, value)
    assert xs == [2.0]  # the good record only
    assert len(bad) == 1
    line = "line 7" if reader == "arff" else "line 2"
    assert line in str(bad[0])
    expected = READERS[reader][2].replace("{v!r}", repr(value))
    if reader in ("libsvm", "arff"):
        expected = expected.replace("line 2: ", "")
    assert expected in str(bad[0]), str(bad[0])


# Plain numbers, all readers: V as written -> the float32 feature. " 12 " (ASCII spaces around)
# stays a number in CSV/TSV/ARFF/JSON, as float() and every CSV writer with ", " have it; LIBSVM
# splits on whitespace, so a spaced value cannot occur there.
PLAIN = [("1e3", 1000.0), ("-0.5", -0.5), ("+2.5E-1", 0.25), (".5", 0.5), ("7.", 7.0)]


@pytest.mark.parametrize(("value", "expected"), PLAIN)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_plain_ascii_numbers_are_read(
    tmp_path: Path, reader: str, value: str, expected: float
) -> None:
    if reader == "jsonl" and value in ("+2.5E-1", ".5", "7."):
        pytest.skip("not JSON numbers: JSON's own grammar refuses them")
    xs, bad = _read(tmp_path, reader, value)
    assert bad == [] and xs == [2.0, expected]


@pytest.mark.parametrize("reader", ["csv", "tsv", "arff", "jsonl"])
def test_surrounding_ascii_spaces_are_allowed(tmp_path: Path, reader: str) -> None:
    xs, bad = _read(tmp_path, reader, " 12 ")
    assert bad == [] and xs == [2.0, 12.0]


@pytest.mark.parametrize("reader", sorted(READERS))
def test_nan_and_inf_words_are_read_then_refused_as_not_finite(tmp_path: Path, reader: str) -> None:
    """nan/inf parse as today (so the message says NaN, not 'not a number') and are refused."""
    for value, word in [("nan", "NaN in"), ("-inf", "infinity in"), ("Infinity", "infinity in")]:
        if reader == "jsonl":
            value = {"nan": "NaN", "-inf": "-Infinity"}.get(value, value)
        xs, bad = _read(tmp_path, reader, value)
        assert xs == [2.0] and len(bad) == 1 and word in str(bad[0]), (value, bad)


def test_number_is_float_on_plain_text_and_refuses_the_rest() -> None:
    for text in ["0", "-0.5", "1e3", " 12 ", "\t3\n", "nan", "-INF", "infinity", "1.5e-7"]:
        assert np.array_equal(number(text), float(text), equal_nan=True)
    for text in [*LENIENT, "", "1 2", "0x10", "1,5", "\u00a012", "12\u2003"]:
        with pytest.raises(ValueError):
            number(text)


def test_a_first_line_of_non_ascii_digits_is_not_taken_for_numbers(tmp_path: Path) -> None:
    """Header detection uses the same rule: a field of ١٢٣ is text."""
    path = tmp_path / "d.csv"
    path.write_text("١,٢,x\n1,2,x\n", encoding="utf-8")
    bad: list[BadRecordError] = []
    with open_source(str(path), on_error=bad.append, header=False) as src:
        samples = list(src)
    assert [s.x.tolist() for s in samples] == [[1.0, 2.0]]
    assert "line 1: field 1 is '١', not a number" in str(bad[0])


def test_csv_integer_labels_are_ints_and_text_labels_str(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('1,2,"1"\n1,2,2\n1,2,yes\n1,2,١\n', encoding="utf-8")
    with open_source(str(path), header=False) as src:
        ys = [s.y for s in src]
    assert ys == [1, 2, "yes", "١"]  # a non-ASCII digit label is text, not the int 1
    assert [type(y) for y in ys] == [int, int, str, str]
