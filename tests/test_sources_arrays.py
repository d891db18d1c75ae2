"""Array stream readers: .npy, .npz, IDX images and builtin:mnist."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spela_stream.errors import SourceError
from spela_stream.sources import BadRecordError, Sample, open_source


def read(path: Path | str, **kw: Any) -> tuple[list[Sample], list[BadRecordError]]:
    bad: list[BadRecordError] = []
    with open_source(str(path), on_error=bad.append, **kw) as src:
        return list(src), bad


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_npy_label_last_by_default_and_memory_mapped(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.array([[0.5, 1, 3], [2, 3, 4.0]]))
    src = open_source(str(path))
    assert isinstance(src._X, np.memmap)  # type: ignore[attr-defined]
    samples = list(src)
    assert [(s.x.tolist(), s.y, s.index, s.where) for s in samples] == [
        ([0.5, 1], 3, 0, f"{path} row 0"),
        ([2, 3], 4, 1, f"{path} row 1"),
    ]
    assert isinstance(samples[0].y, int) and samples[0].x.dtype == np.float32


def test_npy_label_column_skip_and_nan_label(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1, 5, 6], [np.nan, 7, 8], [2, 9, 10]]))
    samples, bad = read(path, label_column=0, skip=1)
    assert [(s.x.tolist(), s.y, s.index) for s in samples] == [([7, 8], None, 1), ([9, 10], 2, 2)]
    assert bad == []


def test_npy_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1, np.inf, 0], [1, 2, 0.5], [1, 2, 3]]))
    samples, bad = read(path)
    assert [s.index for s in samples] == [2]
    assert [str(e) for e in bad] == [
        f"{path} row 0: infinity in column 1 (fill in or drop such values before streaming)",
        f"{path} row 1: label 0.5 is not a whole number; labels name classes (save them as ints "
        "or strings)",
    ]
    assert bad[0].raw is None and bad[1].index == 1


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.arange(4.0), "a 1-d array (4,); save a 2-d array"),
        (np.zeros((2, 2, 2)), "a 3-d array"),
        (np.array([["a", "b"]]), "has dtype <U1, not numbers"),
        (np.zeros((3, 1)), "1 column, so no features"),
    ],
)
def test_npy_refusals(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "x.npy"
    np.save(path, array)
    with pytest.raises(SourceError, match=f"^{path}: ") as info:
        open_source(str(path))
    assert message in str(info.value)


def test_object_arrays_are_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="pickled object arrays are never loaded"):
        open_source(str(path))
    path = tmp_path / "x.npz"
    np.savez(path, X=np.zeros((1, 2)), y=np.array([None], dtype=object))
    with pytest.raises(SourceError, match="cannot read its arrays"):
        open_source(str(path))


def test_npy_gz_and_magic_sniffing(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1.0, 2, 3]]))
    gz = tmp_path / "x.npy.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    odd = tmp_path / "x.bin"
    odd.write_bytes(path.read_bytes())
    for p in (gz, odd):
        samples, _ = read(p)
        assert [(s.x.tolist(), s.y) for s in samples] == [([1, 2], 3)]


@pytest.mark.parametrize(
    ("xkey", "ykey"), [("X", "y"), ("x", "y"), ("data", "labels"), ("features", "labels")]
)
def test_npz_keys(tmp_path: Path, xkey: str, ykey: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **{xkey: np.arange(6).reshape(3, 2), ykey: np.array(["a", "b", "c"])})
    samples, _ = read(path, skip=1)
    assert [(s.x.tolist(), s.y, s.where) for s in samples] == [
        ([2, 3], "b", f"{path} row 1"),
        ([4, 5], "c", f"{path} row 2"),
    ]


def test_npz_without_y_is_unlabelled_and_images_flatten(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=np.ones((2, 2, 3), dtype=np.uint8))
    samples, _ = read(path)
    assert [(s.x.shape, s.y) for s in samples] == [((6,), None), ((6,), None)]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"a": np.zeros((2, 2))}, "no feature array among ['a'] (save it as X, with labels as y)"),
        ({"X": np.zeros((2, 2)), "y": np.zeros(3)}, "y has shape (3,)"),
        ({"X": np.zeros(2)}, "X is 1-d"),
    ],
)
def test_npz_refusals(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(SourceError) as info:
        open_source(str(path))
    assert str(info.value).startswith(f"{path}: {message}")


def test_not_numpy_data(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    path.write_text("hello")
    with pytest.raises(SourceError, match="cannot read as NumPy data"):
        open_source(str(path))
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "none.npz"))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_with_sibling_labels(tmp_path: Path, gz: bool) -> None:
    ext = ".gz" if gz else ""
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    opener = gzip.compress if gz else bytes
    (tmp_path / f"t-images-idx3-ubyte{ext}").write_bytes(opener(idx_bytes(images)))
    (tmp_path / f"t-labels-idx1-ubyte{ext}").write_bytes(
        opener(idx_bytes(np.array([4, 5, 6], np.uint8)))
    )
    path = tmp_path / f"t-images-idx3-ubyte{ext}"
    samples, _ = read(path)
    assert [(s.x.tolist(), s.y, s.where) for s in samples][1] == (
        [4, 5, 6, 7],
        5,
        f"{path} record 1",
    )
    (tmp_path / f"t-labels-idx1-ubyte{ext}").unlink()
    assert [s.y for s in read(path)[0]] == [None, None, None]


def test_idx_refusals(tmp_path: Path) -> None:
    labels = tmp_path / "t-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.array([1, 2], np.uint8)))
    with pytest.raises(
        SourceError, match="1-d IDX file holds labels, not features; pass the images"
    ):
        open_source(str(labels))
    images = tmp_path / "u-images-idx3-ubyte"
    images.write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    (tmp_path / "u-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 2], np.uint8)))
    with pytest.raises(SourceError, match="are they from the same split"):
        open_source(str(images))
    bad = tmp_path / "v.idx"
    bad.write_bytes(b"\x00\x00\x08\x02\x00\x00")
    with pytest.raises(SourceError, match="^" + str(bad)):
        open_source(str(bad))


def test_builtin_mnist() -> None:
    with open_source("builtin:mnist") as src:
        assert (src.name, src.format, src.feature_names) == ("builtin:mnist", "builtin", None)
        samples = list(src)
    assert len(samples) == 10_000
    assert [s.y for s in samples[:5]] == [7, 2, 1, 0, 4]
    assert samples[5].where == "builtin:mnist record 5" and samples[5].index == 5
    assert samples[0].x.shape == (784,) and samples[0].x.dtype == np.float32
    resumed = list(open_source("builtin:mnist", skip=9_998))
    assert [s.index for s in resumed] == [9_998, 9_999]
    np.testing.assert_array_equal(resumed[0].x, samples[9_998].x)


def test_binary_formats_refuse_stdin() -> None:
    import io

    for fmt in ("npy", "npz", "idx"):
        with pytest.raises(SourceError, match=f"<stdin>: {fmt} data cannot be streamed"):
            open_source("-", fmt=fmt, stdin=io.BytesIO(b""))
