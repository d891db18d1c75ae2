"""Bytes written per checkpoint, against the checkpoint's own size (issue 12, defect 14).

    python -m benchmarks.write_bench                      # page sizes 1, 2, 4, 8, 64 KiB
    python -m benchmarks.write_bench --page-size 4096 -n 12
    python -m benchmarks.write_bench --journal truncate   # the same without WAL, to compare

Three real models learn a synthetic stream through ``Prequential`` and are checkpointed by
``Session.save`` with ``keep=3``, 100 samples apart, into a fresh database on the disk of
``--dir``: ~44 KB (hidden 32, 64 features, a memory of 80), ~54 KB (hidden 64, 32 features, a
memory of 200) and ~4.4 MB (784 -> 1024, a memory of 300). The figures are the mean over the
checkpoints after the first four, when old checkpoints are being pruned and their pages reused.

What is counted, three ways, each around one ``save`` and the WAL copy that follows it
(``CheckpointStore.settle`` waits for that copy):

- commit: SQLite's own count. ``wal_checkpoint`` reports the frames in the WAL; each frame is
  a page plus a 24-byte header, and the WAL starts over at every commit, so ``frames x (page
  size + 24)`` is what the commit wrote. This is the figure the goal (<= 2x) is set on and the
  test asserts (``tests/test_storage_writes.py``).
- copy: the frames copied back into the database file, ``x page size``. WAL writes every page
  twice by design (log, then file); this is the second time.
- syscall: ``wchar`` of ``/proc/self/io``: every byte this process handed to write() or
  pwrite() (all threads: the learner's commit and the copier's copy). Checks the two above.
- device: ``write_bytes`` of ``/proc/self/io``: what the kernel accounted for sending to the
  block device, in whole 4 KiB pages of the page cache (a 1 KiB database page dirties 4 KiB).

"payload" is the checkpoint's ``bytes`` column: its tensors' bytes plus its JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import storage.schema
from storage import CheckpointStore

WAL_FRAME_HEADER = 24


@dataclass(frozen=True)
class Model:
    """A model to checkpoint: its SpelaMLP shape and the width of its stream."""

    name: str
    hidden: tuple[int, ...]
    features: int
    memory: int


MODELS = (
    Model("44 KB", (32,), 64, 80),
    Model("54 KB", (64,), 32, 200),
    Model("4.4 MB", (1024,), 784, 300),
)
PAGE_SIZES = (1024, 2048, 4096, 8192, 65536)


@dataclass(frozen=True)
class Figures:
    """Mean bytes per checkpoint over the steady checkpoints of one model and page size."""

    model: str
    page_size: int
    journal: str
    payload: float
    commit: float  # WAL frames x (page + header): what the commit wrote
    copy: float  # frames copied back into the file x page
    syscall: float  # wchar
    device: float  # write_bytes
    file_bytes: int  # the database file after the last checkpoint, WAL folded in
    wal_bytes: int  # the largest the WAL file grew

    def ratio(self, what: str) -> float:
        """Bytes of ``what`` per payload byte."""
        return float(getattr(self, what)) / self.payload


def _io() -> tuple[int, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["write_bytes"])


@contextmanager
def page_size(size: int) -> Iterator[None]:
    """New databases get pages of ``size`` bytes inside the block."""
    saved = storage.schema.PAGE_SIZE
    storage.schema.PAGE_SIZE = size
    try:
        yield
    finally:
        storage.schema.PAGE_SIZE = saved


def measure(
    path: Path,
    model: Model,
    *,
    size: int,
    checkpoints: int = 10,
    steady_from: int = 4,
    every: int = 100,
    keep: int = 3,
    journal: str = "wal",
) -> Figures:
    """Learn and checkpoint ``model`` into a new database at ``path``; bytes per checkpoint."""
    import torch

    from spela_stream.model import SpelaMLP
    from spela_stream.prequential import Prequential
    from storage.session import Session

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    loop = Prequential(SpelaMLP(hidden=model.hidden, seed=0, memory=model.memory))
    rows: list[tuple[int, int, int, int, int]] = []
    wal = path.with_name(path.name + "-wal")
    wal_max = 0
    with page_size(size), CheckpointStore(path) as store:
        if journal != "wal":
            store.db.conn.execute(f"PRAGMA journal_mode = {journal}").fetchall()
        session = Session(store, store.create_run("w", {}, "synthetic"), loop, "synthetic", keep)
        for _ in range(checkpoints):
            X = rng.normal(size=(every, model.features))
            y = rng.integers(0, 10, every).tolist()
            for _report in loop.run(zip(X, y, strict=True), every=every):
                pass
            before = _io()
            cid = session.save()
            copied = store.settle()
            after = _io()
            wal_max = max(wal_max, wal.stat().st_size if wal.exists() else 0)
            payload = next(c.bytes for c in store.checkpoints("w") if c.id == cid)
            frames = copied.frames if copied is not None and journal == "wal" else 0
            back = copied.copied if copied is not None and journal == "wal" else 0
            rows.append((payload, frames, back, after[0] - before[0], after[1] - before[1]))
    steady = rows[steady_from:]
    return Figures(
        model=model.name,
        page_size=size,
        journal=journal,
        payload=statistics.fmean(r[0] for r in steady),
        commit=statistics.fmean(r[1] * (size + WAL_FRAME_HEADER) for r in steady),
        copy=statistics.fmean(r[2] * size for r in steady),
        syscall=statistics.fmean(r[3] for r in steady),
        device=statistics.fmean(r[4] for r in steady),
        file_bytes=path.stat().st_size,
        wal_bytes=wal_max,
    )


def table(figures: list[Figures]) -> str:
    """The figures as a markdown table."""
    lines = [
        "| model | page | journal | payload B | commit B | x | commit+copy B | x | syscall B "
        "| x | device B | x | file B | WAL max B |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for f in figures:
        total = f.commit + f.copy
        lines.append(
            f"| {f.model} | {f.page_size} | {f.journal} | {f.payload:,.0f} | {f.commit:,.0f} "
            f"| {f.ratio('commit'):.2f} | {total:,.0f} | {total / f.payload:.2f} "
            f"| {f.syscall:,.0f} | {f.ratio('syscall'):.2f} | {f.device:,.0f} "
            f"| {f.ratio('device'):.2f} | {f.file_bytes:,} | {f.wal_bytes:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure every model at every page size asked for; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    parser.add_argument("--page-size", type=int, action="append", help="repeatable")
    parser.add_argument("-n", type=int, default=10, help="checkpoints per model (>= 6)")
    parser.add_argument("--journal", default="wal", help="wal, or a rollback mode to compare")
    args = parser.parse_args(argv)
    sizes = args.page_size or list(PAGE_SIZES)
    found: list[Figures] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for model in MODELS:
            for size in sizes:
                path = Path(tmp) / f"{model.name.replace(' ', '')}-{size}.db"
                found.append(measure(path, model, size=size, checkpoints=args.n,
                                     journal=args.journal))  # fmt: skip
                print(f"{model.name} page {size}: done", file=sys.stderr)
    print(table(found))


if __name__ == "__main__":
    main()
