"""The embedded MNIST stream and the IDX reader."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spela_stream.datasets import MNIST_LABELS, _data_dir, iter_mnist, load_mnist, read_idx
from spela_stream.errors import SourceError, SpelaError

# From data/MNIST-PROVENANCE.md (the published test split).
MNIST_COUNTS = {0: 980, 1: 1135, 2: 1032, 3: 1010, 4: 982, 5: 892, 6: 958, 7: 1028, 8: 974, 9: 1009}


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def test_load_mnist_shapes_and_ranges() -> None:
    X, y = load_mnist()
    assert X.shape == (10000, 784) and X.dtype == np.float32
    assert y.shape == (10000,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 255.0
    assert np.array_equal(X, np.round(X))  # pixel values, not rescaled
    counts = dict(zip(*np.unique(y, return_counts=True), strict=True))
    assert {int(k): int(v) for k, v in counts.items()} == MNIST_COUNTS
    assert y[:5].tolist() == [7, 2, 1, 0, 4]  # the published order


def test_load_mnist_limit_is_a_prefix() -> None:
    X, y = load_mnist(25)
    X_all, y_all = load_mnist()
    assert X.shape == (25, 784) and y.shape == (25,)
    assert np.array_equal(X, X_all[:25]) and np.array_equal(y, y_all[:25])
    assert load_mnist(20000)[0].shape == (10000, 784)


def test_iter_mnist_yields_vectors_and_int_labels() -> None:
    X, y = load_mnist(30)
    pairs = list(iter_mnist(30))
    assert len(pairs) == 30
    for (x, label), row, expected in zip(pairs, X, y, strict=True):
        assert x.shape == (784,)
        assert type(label) is int and label == int(expected)
        assert np.array_equal(x, row)


@pytest.mark.parametrize(
    ("dtype", "code"),
    [(">u1", 0x08), (">i1", 0x09), (">i2", 0x0B), (">i4", 0x0C), (">f4", 0x0D), (">f8", 0x0E)],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, dtype: str, code: int, gz: bool) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == ">u1":
        arr = np.arange(24, dtype=">u1").reshape(2, 3, 4)
    data = _idx_bytes(arr, code)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.shape == (2, 3, 4)
    assert np.array_equal(out, arr)
    assert out.dtype.isnative


BAD_FILES = {
    "empty": b"",
    "garbage": b"this is not an IDX file at all",
    "bad magic": b"\x01\x02\x08\x01\x00\x00\x00\x03abc",
    "unknown type": b"\x00\x00\x07\x01\x00\x00\x00\x03abc",
    "truncated body": b"\x00\x00\x08\x02\x00\x00\x00\x03\x00\x00\x00\x03" + bytes(8),
    "trailing bytes": b"\x00\x00\x08\x01\x00\x00\x00\x02" + bytes(3),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_read_idx_rejects_bad_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(SourceError) as info:
        read_idx(path)
    assert str(path) in str(info.value)  # the message names the file


def test_read_idx_rejects_truncated_real_file(tmp_path: Path) -> None:
    raw = gzip.decompress((_data_dir() / MNIST_LABELS).read_bytes())
    path = tmp_path / "labels.idx"
    path.write_bytes(raw[:5000])
    with pytest.raises(SourceError, match="10000"):
        read_idx(path)


def test_read_idx_missing_file_and_garbage_gzip(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        read_idx(tmp_path / "nope.idx")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(SourceError):
        read_idx(bad)
    assert issubclass(SourceError, SpelaError)


def test_read_idx_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short.idx"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02")  # 3 dims announced, 1 present
    with pytest.raises(SourceError):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.idx.gz"
    path.write_bytes((_data_dir() / MNIST_LABELS).read_bytes()[:2000])
    with pytest.raises(SourceError):
        read_idx(path)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=64),
        # A valid magic number, so the header and size checks are reached too.
        st.tuples(
            st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
            st.integers(0, 4),
            st.binary(max_size=40),
        ).map(lambda t: bytes([0, 0, t[0], t[1]]) + t[2]),
    )
)
@example(data=b"\x00\x00\x08\x03\x00\x00\x00\x02")
def test_read_idx_any_bytes_raise_only_source_error(tmp_path: Path, data: bytes) -> None:
    """Parser contract (STYLE.md): any input either parses or raises SourceError."""
    path = tmp_path / "any.idx"
    path.write_bytes(data)
    try:
        out = read_idx(path)
    except SourceError:
        return
    assert isinstance(out, np.ndarray)


def test_load_mnist_zero_limit_is_empty() -> None:
    X, y = load_mnist(0)
    assert X.shape == (0, 784) and y.shape == (0,)
    assert list(iter_mnist(0)) == []
