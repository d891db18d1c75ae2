"""Streams that ship inside the package: the MNIST test set (10,000 real digits).

The IDX files are LeCun et al.'s originals, byte for byte (see ``data/MNIST-PROVENANCE.md``).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import ConfigError, SourceError

MNIST_IMAGES = "t10k-images-idx3-ubyte.gz"
MNIST_LABELS = "t10k-labels-idx1-ubyte.gz"


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (MNIST's own format; gzip when the name ends in .gz) into an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises EOFError when truncated
        raise SourceError(f"{path}: cannot read IDX file: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise SourceError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in dtypes:
        raise SourceError(f"{path}: unknown IDX element type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SourceError(f"{path}: IDX header is truncated ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(dtypes[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise SourceError(
            f"{path}: IDX header says {dims} ({expected} bytes) but {len(data) - header} follow"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder("="))
    )


def _data_dir() -> Path:
    return Path(str(resources.files("spela_stream") / "data"))


def load_mnist(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The embedded MNIST test set: images (n, 784) float32 in 0..255 and labels (n,) int64."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    images = read_idx(_data_dir() / MNIST_IMAGES)
    labels = read_idx(_data_dir() / MNIST_LABELS)
    n = len(labels) if limit is None else min(limit, len(labels))
    width = int(np.prod(images.shape[1:]))
    return images[:n].reshape(n, width).astype(np.float32), labels[:n].astype(np.int64)


def iter_mnist(limit: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (x, y) pairs of the embedded MNIST stream in its published order."""
    X, y = load_mnist(limit)
    for row, label in zip(X, y, strict=True):
        yield row, int(label)
