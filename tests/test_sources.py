"""Text stream readers: CSV/TSV, JSON lines, ARFF, LIBSVM; detection, errors, skip, on_error."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spela_stream.errors import SourceError
from spela_stream.sources import FORMATS, BadRecordError, Sample, Source, open_source

ARFF = b"""% a comment
@relation 'toy'
@attribute a numeric
@attribute 'day of week' {mon,tue}
@attribute class {UP,DOWN}

@data
1.5,tue,UP
% between rows
-2,mon,DOWN
"""


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    """Write ``content`` to tmp_path/name, gzipped when the name ends in .gz."""
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    return path


def read(path: Path | str, **kw: Any) -> tuple[list[Sample], list[BadRecordError], Source]:
    """All samples and the bad records (collected through on_error) of a source."""
    bad: list[BadRecordError] = []
    with open_source(str(path), on_error=bad.append, **kw) as src:
        samples = list(src)
    return samples, bad, src


def rows(samples: list[Sample]) -> list[tuple[list[float], Any]]:
    return [(s.x.tolist(), s.y) for s in samples]


# (file name, content, format, rows, feature names)
CASES = [
    ("d.csv", b"1,2,cat\n3,4.5,dog\n", "csv", [([1, 2], "cat"), ([3, 4.5], "dog")], None),
    ("d.csv", b"a,b,y\n1,2,7\n-3,4,+1\n", "csv", [([1, 2], 7), ([-3, 4], 1)], ["a", "b"]),
    ("d.tsv", b"1\t2\t-1\n", "tsv", [([1, 2], -1)], None),
    ("d.tab", b"a\tb\n0.5\tx\n", "tsv", [([0.5], "x")], ["a"]),
    ("d.jsonl", b'{"x": [1, 2], "y": "a", "id": 3}\n', "jsonl", [([1, 2], "a")], None),
    ("d.ndjson", b'{"f": 1, "g": 2, "label": 5.0}\n', "jsonl", [([1, 2], 5)], ["f", "g"]),
    ("d.json", b'{"f": 1, "class": true}\n', "jsonl", [([1], True)], ["f"]),
    ("d.arff", ARFF, "arff", [([1.5, 1], "UP"), ([-2, 0], "DOWN")], ["a", "day of week"]),
    (
        "d.libsvm",
        b"1 3:2 1:0.5 # note\n-1 qid:4 2:1\n",
        "libsvm",
        [([0.5, 0, 2], 1), ([0, 1, 0], -1)],
        None,
    ),
    ("d.svm", b"a 1:1\n", "libsvm", [([1], "a")], None),
    ("d.svmlight", b"2 2:1\n", "libsvm", [([0, 1], 2)], None),
    # no known extension: sniffed from the first line
    ("d.data", b"1,2,cat\n", "csv", [([1, 2], "cat")], None),
    ("d.txt", b"1\t2\tcat\n", "tsv", [([1, 2], "cat")], None),
    ("d", b'{"x": [1], "y": 0}\n', "jsonl", [([1], 0)], None),
    ("d.dat", ARFF, "arff", [([1.5, 1], "UP"), ([-2, 0], "DOWN")], ["a", "day of week"]),
    (
        "d.txt",
        b"@RELATION x\n@attribute a real\n@attribute c {p}\n@data\n1,p\n",
        "arff",
        [([1], "p")],
        ["a"],
    ),
    ("d.txt", b"+1 1:1 2:2\n", "libsvm", [([1, 2], 1)], None),
]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(("name", "content", "fmt", "expected", "names"), CASES)
def test_each_format_reads_its_records(
    tmp_path: Path, name: str, content: bytes, fmt: str, expected: list[Any], names: Any, gz: bool
) -> None:
    path = write(tmp_path, name + (".gz" if gz else ""), content)
    samples, bad, src = read(path)
    assert bad == []
    assert (src.format, src.feature_names) == (fmt, names)
    assert rows(samples) == expected
    assert [s.index for s in samples] == list(range(len(expected)))
    for s in samples:
        assert s.x.dtype == np.float32 and s.x.ndim == 1
        assert s.where.startswith(f"{path} line ")


def test_gzip_is_found_by_magic_bytes_too(tmp_path: Path) -> None:
    path = tmp_path / "noext"
    path.write_bytes(gzip.compress(b"1,2,a\n"))
    assert rows(read(path)[0]) == [([1, 2], "a")]


def test_forced_format_beats_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"1\t2\tx\n")
    assert rows(read(path, fmt="tsv")[0]) == [([1, 2], "x")]


def test_positions_count_header_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", b"a,b,y\n\n1,2,x\n   \n3,4,y\n")
    samples, _, _ = read(path)
    assert [(s.index, s.where) for s in samples] == [
        (0, f"{path} line 3"),
        (1, f"{path} line 5"),
    ]


def test_jsonl_ids_and_json_label_types(tmp_path: Path) -> None:
    content = (
        b'{"x": [1], "y": "7", "id": "a"}\n{"x": [2], "y": 7, "id": 12}\n'
        b'{"x": [3], "y": null}\n{"x": [4]}\n{"x": [5], "y": false}\n'
    )
    samples, bad, _ = read(write(tmp_path, "d.jsonl", content))
    assert bad == []
    assert [(s.y, s.id) for s in samples] == [
        ("7", "a"),
        (7, "12"),
        (None, None),
        (None, None),
        (False, None),
    ]


# --- header detection --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "header"),
    [
        (b"a,b,label\n1,2,x\n", True),  # all text
        (b"x1,x2,y\n1,2,3\n", True),
        (b"1,2,cat\n3,4,dog\n", False),  # text column stays text: a label, not a header
        (b"T,2,8\nI,5,12\n", False),  # letter-recognition: label first
        (b"1,2,3\n4,5,6\n", False),
        (b"id,2,x\n1,2,x\n", True),  # some column text in line 1, a number in line 2
    ],
)
def test_header_detection(tmp_path: Path, content: bytes, header: bool) -> None:
    samples, bad, src = read(write(tmp_path, "d.csv", content), label_column=-1)
    assert (src.feature_names is not None) == header
    assert len(samples) + len(bad) == 2 - header


def test_header_can_be_forced_either_way(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"1,2,3\n4,5,6\n")
    samples, _, src = read(path, header=True)
    assert src.feature_names == ["1", "2"] and rows(samples) == [([4, 5], 6)]
    path = write(tmp_path, "e.csv", b"a,b,c\n4,5,6\n")
    samples, bad, _ = read(path, header=False)
    assert rows(samples) == [([4, 5], 6)]
    assert [e.where for e in bad] == [f"{path} line 1"]


# --- label column ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label_column", "expected", "names"),
    [
        (None, ([1, 2], "x"), ["a", "b"]),
        ("y", ([1, 2], "x"), ["a", "b"]),
        ("a", ([2], "x"), None),  # a by name: then "y" is a text feature -> bad record
        (0, ([2], "x"), None),
        (-1, ([1, 2], "x"), ["a", "b"]),
        ("1", ([1], "x"), None),  # an index given as text (from a CLI option)
    ],
)
def test_label_column_by_name_and_index(
    tmp_path: Path, label_column: Any, expected: Any, names: Any
) -> None:
    path = write(tmp_path, "d.csv", b"a,b,y\n1,2,x\n")
    samples, bad, src = read(path, label_column=label_column)
    if names is None:  # the text column "y" is now a feature
        assert bad and "not a number" in str(bad[0]) and "`label_column` y" in str(bad[0])
        return
    assert rows(samples) == [expected] and src.feature_names == names


def test_label_column_in_the_middle(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"1,cat,2\n3,dog,4\n")
    assert rows(read(path, label_column=1)[0]) == [([1, 2], "cat"), ([3, 4], "dog")]


def test_label_column_first_for_arff_and_flat_jsonl(tmp_path: Path) -> None:
    samples, _, src = read(write(tmp_path, "d.arff", ARFF), label_column="a")
    assert src.feature_names == ["day of week", "class"]
    assert rows(samples) == [([1, 0], "1.5"), ([0, 1], -2)]  # label tokens: "-2" is an int
    samples, _, src = read(write(tmp_path, "d.jsonl", b'{"f": 1, "g": "k"}\n'), label_column="g")
    assert rows(samples) == [([1], "k")] and src.feature_names == ["f"]


@pytest.mark.parametrize(
    ("content", "label_column", "message"),
    [
        (b"1,2,3\n", "price", "is a column name, but"),
        (b"a,b\n1,2\n", "c", "no column named 'c' for `label_column` (columns: 'a', 'b')"),
        (b"1,2,3\n", 3, "`label_column` 3 is out of range for 3 columns (use 0..2, or -1"),
        (b"1,2,3\n", -4, "`label_column` -4 is out of range"),
    ],
)
def test_bad_label_column_fails_at_open(
    tmp_path: Path, content: bytes, label_column: Any, message: str
) -> None:
    path = write(tmp_path, "d.csv", content)
    with pytest.raises(SourceError) as info:
        open_source(str(path), label_column=label_column)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


# --- unlabelled records ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.csv", b"1,2,\n"),
        ("d.csv", b'1,2,""\n'),
        ("d.jsonl", b'{"x": [1, 2], "y": null}\n'),
        ("d.jsonl", b'{"x": [1, 2]}\n'),
        ("d.jsonl", b'{"a": 1, "b": 2}\n'),  # flat with no label key
        (
            "d.arff",
            b"@relation r\n@attribute a real\n@attribute b real\n@attribute c {p}\n@data\n1,2,?\n",
        ),
    ],
)
def test_unlabelled_records_have_y_none(tmp_path: Path, name: str, content: bytes) -> None:
    samples, bad, _ = read(write(tmp_path, name, content))
    assert bad == [] and rows(samples) == [([1, 2], None)]


# --- bad records: exact where, a fix in the message ----------------------------------------

BAD_CASES = [
    ("data.csv", b"1,2,3\n\n1,2\n", 3, "2 fields, expected 3 (is `label_column` right?)"),
    (
        "data.csv",
        b"a,price,y\n1,abc,0\n",
        2,
        "field 2 ('price') is 'abc', not a number (features must be numeric; "
        "if this column is the label, pass `label_column` price)",
    ),
    ("data.csv", b"1,2,3\n1,nan,3\n", 2, "NaN in field 2 (fill in or drop missing values"),
    ("data.csv", b"1,2,3\n1,-inf,3\n", 2, "infinity in field 2"),
    (
        "data.csv",
        b"1,2,3\n1e31,2,3\n",
        2,
        "field 1 is 1e+31, beyond 1e+30 in magnitude (rescale the feature)",
    ),
    (
        "data.csv",
        b"1,2,3\n1,,3\n",
        2,
        "field 2 is empty (fill in the missing value or drop the record)",
    ),
    ("data.csv", b"1,2,3\n\xff\xfe,2,3\n", 2, "not UTF-8 text"),
    ("data.tsv", b"1\t2\t3\n1\tx\t3\n", 2, "field 2 is 'x', not a number"),
    ("d.jsonl", b'{"x": [1]}\n{"x": [1, 2]}\n', 2, '"x" has 2 values, expected 1'),
    ("d.jsonl", b'{"x": [1]}\n[1]\n', 2, "a JSON list, expected an object"),
    ("d.jsonl", b'{"x": [1]}\n{"x": [1}\n', 2, "not valid JSON"),
    ("d.jsonl", b'{"x": [1]}\n{"x": ["a"]}\n', 2, 'x[0] is "a", not a number'),
    ("d.jsonl", b'{"x": [1]}\n{"x": [1], "y": 0.5}\n', 2, "label 0.5 is not a whole number"),
    ("d.jsonl", b'{"x": [1]}\n{"x": [1], "y": [1]}\n', 2, "label is a JSON list"),
    ("d.jsonl", b'{"x": [1]}\n{"x": [NaN]}\n', 2, "NaN in x[0]"),
    ("d.jsonl", b'{"x": [1]}\n{"z": 1}\n', 2, 'no "x" list'),
    (
        "d.jsonl",
        b'{"a": 1, "b": 2}\n{"a": 1, "c": 2}\n',
        2,
        "keys differ from the first record's: missing ['b'], unknown ['c']",
    ),
    ("d.arff", ARFF + b"?,mon,UP\n", 11, "missing value '?' in attribute 'a'"),
    (
        "d.arff",
        ARFF + b"1,sun,UP\n",
        11,
        "attribute 'day of week' is 'sun', not one of its declared values",
    ),
    (
        "d.arff",
        ARFF + b"1,mon,FLAT\n",
        11,
        "label 'FLAT' is not one of attribute 'class''s declared values",
    ),
    ("d.arff", ARFF + b"1,mon\n", 11, "2 values, expected 3 (one per @attribute)"),
    ("d.arff", ARFF + b"x,mon,UP\n", 11, "attribute 'a' is 'x', not a number"),
    ("d.arff", ARFF + b"{0 1}\n", 11, "sparse ARFF rows"),
    ("d.libsvm", b"1 1:1 2:1\n1 0:1\n", 2, "index 0; LIBSVM indices start at 1"),
    ("d.libsvm", b"1 1:1 2:1\n1 1:x\n", 2, "value 'x' of index 1 is not a number"),
    ("d.libsvm", b"1 1:1 2:1\n1 x:1\n", 2, "index 'x' in 'x:1' is not a number"),
    ("d.libsvm", b"1 1:1 2:1\n1 1:1 1:2\n", 2, "index 1 appears twice"),
    ("d.libsvm", b"1 1:1 2:1\n1 1\n", 2, "token '1' is not index:value"),
    (
        "d.libsvm",
        b"1 1:1 2:1\n1:1 2:2\n",
        2,
        "first token '1:1' looks like index:value; a LIBSVM line starts with its label",
    ),
]


@pytest.mark.parametrize(("name", "content", "line", "problem"), BAD_CASES)
def test_bad_record_says_where_and_how_to_fix(
    tmp_path: Path, name: str, content: bytes, line: int, problem: str
) -> None:
    path = write(tmp_path, name, content)
    with open_source(str(path)) as src:
        with pytest.raises(BadRecordError) as info:
            list(src)
    err = info.value
    assert err.where == f"{path} line {line}"
    assert str(err).startswith(f"{err.where}: {problem}")
    assert err.raw == content.split(b"\n")[line - 1].decode("utf-8", "replace")
    header = name == "data.csv" and content.startswith(b"a,")
    assert err.index == (2 if name == "d.arff" else 0 if header else 1)


def test_libsvm_index_beyond_the_given_width(tmp_path: Path) -> None:
    path = write(tmp_path, "d.libsvm", b"1 1:1\n1 5:1\n")
    samples, bad, src = read(path, n_features=3)
    assert rows(samples) == [([1, 0, 0], 1)]
    assert (
        str(bad[0]) == f"{path} line 2: index 5 is beyond the width 3 (pass a larger `n_features`)"
    )
    assert len(read(path)[0][1].x) == 5  # pre-scanned width


def test_on_error_continues_and_can_stop(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"1,2,a\n1,x,b\n3,4,c\n1\n5,6,d\n")
    samples, bad, _ = read(path)
    assert rows(samples) == [([1, 2], "a"), ([3, 4], "c"), ([5, 6], "d")]
    assert [(e.index, e.where) for e in bad] == [(1, f"{path} line 2"), (3, f"{path} line 4")]
    assert [s.index for s in samples] == [0, 2, 4]

    def stop(err: BadRecordError) -> None:
        raise SourceError(f"stopped at {err.where}")

    seen = []
    with pytest.raises(SourceError, match="stopped at .* line 2"):
        for s in open_source(str(path), on_error=stop):
            seen.append(s.index)
    assert seen == [0]


@pytest.mark.parametrize(
    ("name", "content", "skip", "first_where", "first_index"),
    [
        ("d.csv", b"a,b,y\n1,2,x\n\nbad\n5,6,z\n", 2, 5, 2),
        ("d.jsonl", b'{"x":[1]}\n{"x":[2]}\n\n{"x":[3]}\n', 2, 4, 2),
        ("d.arff", ARFF + b"3,mon,UP\n", 2, 11, 2),
        ("d.libsvm", b"1 1:1\n# c\nbad\n2 1:3\n", 2, 4, 2),
    ],
)
def test_skip_passes_records_unparsed(
    tmp_path: Path, name: str, content: bytes, skip: int, first_where: int, first_index: int
) -> None:
    path = write(tmp_path, name, content)
    samples, bad, _ = read(path, skip=skip)
    assert bad == []  # the bad record sat in the skipped part
    assert (samples[0].where, samples[0].index) == (f"{path} line {first_where}", first_index)
    assert read(path, skip=99)[0] == []


def test_skip_resumes_where_an_unbroken_read_is(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"".join(b"%d,%d,%d\n" % (i, -i, i % 3) for i in range(50)))
    whole = rows(read(path)[0])
    assert rows(read(path, skip=17)[0]) == whole[17:]


def test_quoted_fields_via_csv_module(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b'"a","b, c","kind"\n1,"2",\'x\'\n3,4,"New York, NY"\n')
    samples, bad, src = read(path)
    assert src.feature_names == ["a", "b, c"] and bad == []
    assert rows(samples) == [([1, 2], "x"), ([3, 4], "New York, NY")]


def test_label_tokens(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"1,7\n1, -1 \n1,+1\n1,007\n1, cat \n1,1.0\n1,1e3\n")
    assert [s.y for s in read(path)[0]] == [7, -1, 1, 7, "cat", "1.0", "1e3"]


@pytest.mark.parametrize(
    "line",
    [
        b"0,255,-3,17",
        b"0.5,-0.25,.5,5.",
        b"1e3,-2E-2,+4,  7 ",
        b"1.5e-3,3,4,5",  # (1_0 is no longer a number: see test_sources_numbers.py)
        b"-0,0.0000001,99999999999999999999,1",
    ],
)
def test_fast_and_slow_paths_agree(tmp_path: Path, line: bytes) -> None:
    content = line + b",y\n"
    fast = read(write(tmp_path, "d.csv", content))[0][0].x
    slow = np.array([float(f) for f in line.split(b",")], dtype=np.float32)
    np.testing.assert_array_equal(fast, slow)


# --- errors at open time -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kw", "message"),
    [
        ("nope.csv", {}, "nope.csv: no such file"),
        ("builtin:foo", {}, "builtin:foo: unknown builtin stream (choose from builtin:mnist)"),
        ("x.csv", {"fmt": "xls"}, "x.csv: unknown format 'xls' (choose from csv, tsv"),
        ("x.csv", {"skip": -1}, "x.csv: skip must be 0 or more"),
        ("x.libsvm", {"n_features": 0}, "x.libsvm: n_features must be at least 1"),
        ("x.csv", {"fmt": "builtin"}, "x.csv: format 'builtin' goes only with builtin:NAME"),
    ],
)
def test_open_errors_name_the_input_and_the_fix(spec: str, kw: Any, message: str) -> None:
    with pytest.raises(SourceError) as info:
        open_source(spec, **kw)
    assert str(info.value).startswith(message)


def test_open_errors_for_files(tmp_path: Path) -> None:
    cases = [
        (tmp_path, "is a directory, not a file (pass a file inside it)"),
        (write(tmp_path, "e.csv", b""), "no records (the file is empty"),
        (write(tmp_path, "e.csv.gz", b"\n\n"), "no records"),
        (write(tmp_path, "b.bin", b"\x00\xff\x10binary\n"), "cannot tell the format"),
        (
            write(tmp_path, "one.csv", b"1;2;3\n"),
            "1 field, so no features beside the label (is the delimiter right?",
        ),
        (write(tmp_path, "h.arff", b"@relation r\n@attribute a real\n"), "has no @data line"),
        (
            write(
                tmp_path, "s.arff", b"@relation r\n@attribute s string\n@attribute c {a}\n@data\n"
            ),
            "attribute 's' is string, which cannot be a feature",
        ),
        (
            write(tmp_path, "t.arff", b"@relation r\n@attribute a blob\n@data\n"),
            "attribute 'a' has type 'blob'",
        ),
        (
            write(tmp_path, "x.arff", b"@relation r\nhello\n"),
            "line 2: expected @relation, @attribute or @data",
        ),
        (write(tmp_path, "n.libsvm", b"1\n2\n"), "no feature index found"),
        (write(tmp_path, "j.jsonl", b'{"a": 1}\n'), None),  # fine: unlabelled
    ]
    for path, message in cases:
        if message is None:
            open_source(str(path)).close()
            continue
        with pytest.raises(SourceError) as info:
            open_source(str(path))
        assert str(info.value).startswith(f"{path}") and message in str(info.value), path
    with pytest.raises(SourceError, match="no key 'z' for `label_column`"):
        open_source(str(write(tmp_path, "k.jsonl", b'{"a": 1}\n')), label_column="z")


def test_truncated_gzip_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    data = b"".join(
        b"%d,%d,%d\n" % tuple(v) for v in np.random.default_rng(0).integers(0, 10**6, (5000, 3))
    )
    path.write_bytes(gzip.compress(data)[:20000])
    with pytest.raises(SourceError, match="cannot read"):
        list(open_source(str(path)))


def test_a_source_is_read_once_and_closes_its_file(tmp_path: Path) -> None:
    src = open_source(str(write(tmp_path, "d.csv", b"1,2,3\n")))
    assert len(list(src)) == 1
    with pytest.raises(SourceError, match="already read; open it again"):
        iter(src)
    assert set(FORMATS) >= {src.format}
    with open_source(str(write(tmp_path, "e.csv", b"1,2,3\n"))) as src2:
        pass
    assert src2.lines.stream.closed  # type: ignore[attr-defined]


def test_no_label_column_reads_every_field_as_a_feature(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", b"1,2,3\n4,5,6\n")
    samples, _, _ = read(path, label_column="none")
    assert rows(samples) == [([1.0, 2.0, 3.0], None), ([4.0, 5.0, 6.0], None)]
    named = write(tmp_path, "n.csv", b"a,none\n1,x\n")  # a column really named "none" wins
    samples, _, _ = read(named, label_column="none")
    assert rows(samples) == [([1.0], "x")]


@pytest.mark.parametrize(("n_features", "expected"), [(3, None), (2, 3.0), (None, 3.0)])
def test_a_known_width_tells_unlabelled_records(
    tmp_path: Path, n_features: int | None, expected: float | None
) -> None:
    path = write(tmp_path, "w.csv", b"1,2,3\n")
    (sample,), _, _ = read(path, n_features=n_features)
    assert sample.y == (None if expected is None else 3)
    assert len(sample.x) == (3 if expected is None else 2)
