"""What SQLite's recovery would drop from a damaged write-ahead log, said before it is gone.

SQLite reads the WAL up to its first frame whose checksum chain breaks and silently ignores the
rest: a flipped byte in the log loses every checkpoint committed after it, and the next writer
overwrites the evidence. So before the store opens a file, this reads the ``-wal`` file as
SQLite's recovery does (https://sqlite.org/fileformat.html#the_write_ahead_log) and counts the
committed transactions past the break: frames with the log's salts whose checksum holds against
the frame before them, so that they were written after it, whole. Nothing is said while another
process holds the log's write lock (its tail may be half-written), nor when the log only ends in
an uncommitted transaction (a writer killed mid-checkpoint: nothing committed is lost). A log
cut short loses its tail without a trace; that is not seen here.
"""

from __future__ import annotations

import fcntl
import functools
import os
import struct
from pathlib import Path

import numpy as np

MAGIC = {0x377F0682: "<", 0x377F0683: ">"}  # the checksums' word order: little, big endian
HEADER, FRAME_HEADER = 32, 24
WRITE_LOCK = 120  # the byte of the -shm file a writer locks (SQLite's WAL_WRITE_LOCK)
MASK = 0xFFFFFFFF


@functools.lru_cache(maxsize=4)
def _powers(n: int) -> np.ndarray:
    """M**k for k < n, where M steps SQLite's checksum over one pair of words (mod 2**64)."""
    step = np.array([[1, 1], [1, 2]], dtype=np.uint64)
    out = np.empty((n, 2, 2), dtype=np.uint64)
    out[0] = np.eye(2, dtype=np.uint64)
    for k in range(1, n):
        out[k] = out[k - 1] @ step
    return out


def checksums(blocks: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """SQLite's WAL checksum of each row of ``blocks`` (32-bit words, an even count per row)
    from its seed: ``s0 += w[i] + s1; s1 += w[i+1] + s0`` over the words, all at once.

    The step is linear, so the result is ``M**n @ seed + sum(M**(n-1-k) @ (a_k, a_k + b_k))``;
    uint64 arithmetic wraps modulo 2**64, a multiple of 2**32, so the low 32 bits are exact.
    """
    words = blocks.astype(np.uint64).reshape(len(blocks), -1, 2)  # (frames, pairs, 2)
    n = words.shape[1]
    inputs = np.stack([words[..., 0], words[..., 0] + words[..., 1]], axis=-1)
    powers = _powers(n + 1)
    with np.errstate(over="ignore"):
        total = np.einsum("kij,fkj->fi", powers[n - 1 :: -1], inputs)
        total += np.einsum("ij,fj->fi", powers[n], seeds.astype(np.uint64))
    out: np.ndarray = total & MASK
    return out


def _writer_active(shm: Path) -> bool:
    """Whether another process holds the log's write lock now."""
    try:
        fd = os.open(shm, os.O_RDONLY)
    except OSError:
        return False  # no -shm: nobody has the file open
    try:
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, WRITE_LOCK, 1, 0)
        got = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
        return bool(struct.unpack("hhqqi", got)[0] != fcntl.F_UNLCK)
    except OSError:
        return True  # cannot tell: say nothing rather than something false
    finally:
        os.close(fd)


def lost_in_wal(db: str | Path) -> str | None:
    """What SQLite's recovery of ``db``'s WAL would silently drop, in words; None when it
    would drop no committed transaction (or another process is writing it)."""
    wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
    try:
        size = wal.stat().st_size
    except OSError:
        return None
    if size <= HEADER or _writer_active(shm):
        return None
    data = wal.read_bytes()
    if _writer_active(shm) or len(data) != wal.stat().st_size:
        return None  # it changed while read: a live writer's, not damage
    return describe_loss(data, str(wal), str(db))


def describe_loss(data: bytes, wal: str, db: str) -> str | None:
    """The sentence for a WAL image ``data`` (see ``lost_in_wal``)."""
    magic, _, page, _, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:HEADER])
    order = MAGIC.get(magic)
    frame = FRAME_HEADER + page
    count = (len(data) - HEADER) // frame if order is not None and page >= 512 else 0
    if count == 0:
        return None
    body = np.frombuffer(data, dtype=np.uint8, count=count * frame, offset=HEADER)
    frames = body.reshape(count, frame)
    head = frames[:, :FRAME_HEADER].copy().view(">u4")  # (frames, 6), big endian
    commit = head[:, 1] != 0
    words = np.frombuffer(data[:24], dtype=np.dtype(f"{order}u4"))[None, :]
    header_ok = bool((checksums(words, np.zeros((1, 2))) == [c1, c2]).all())
    if not header_ok:  # SQLite ignores the whole log; its frames carry the salts it had
        same = (head[:, 2] == head[0, 2]) & (head[:, 3] == head[0, 3])
        lost = int((commit & same).sum())
        why = f"its header is damaged, so SQLite ignores all {count} frames in it"
        return _sentence(wal, db, why, lost) if lost else None
    # each frame's checksum from the one stored before it: a frame written whole after it holds
    blocks = np.concatenate([frames[:, :8], frames[:, FRAME_HEADER:]], axis=1)
    blocks = blocks.copy().view(np.dtype(f"{order}u4"))
    seeds = np.vstack([[c1, c2], head[:-1, 4:6]])
    sound = (checksums(blocks, seeds) == head[:, 4:6]).all(axis=1)
    ours = (head[:, 2] == salt1) & (head[:, 3] == salt2)
    bad = np.flatnonzero(~(sound & ours))
    if len(bad) == 0:
        return None
    first = int(bad[0])
    after = np.arange(count) > first
    lost = int((commit & ours & ((np.arange(count) == first) | (after & sound))).sum())
    if not lost:
        return None  # stale frames of an older log, or an uncommitted tail: nothing committed
    rest = count - first - 1
    why = f"frame {first + 1} of {count} is damaged, so SQLite drops it" + (
        f" and the {rest} after it" if rest else ""
    )
    return _sentence(wal, db, why, lost)


def _sentence(wal: str, db: str, why: str, lost: int) -> str:
    many = "transaction" if lost == 1 else "transactions"
    return (
        f"{wal} is damaged: {why}; {lost} committed {many} in it (checkpoints and lease changes "
        f"saved since the log was last copied into {db}) are lost"
    )
