"""storage.run.Run: the lifecycle of a run (issue 12, defects 9, 10, 13)."""

from __future__ import annotations

import io
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from spela_stream.datasets import iter_mnist
from spela_stream.display import Progress
from spela_stream.errors import CheckpointError, ConfigError, InputError, SourceError
from spela_stream.model import SpelaMLP
from spela_stream.stopping import Interrupted, StopGuard
from storage import CheckpointStore
from storage.run import Run, finish


def test_a_signal_inside_a_save_loses_no_history_rows(tmp_path: Path) -> None:
    # Defect 13: SIGINT during a timed checkpoint's save. The save must finish, the loop stop at
    # the next boundary, and every report row of the run reach the store.
    with CheckpointStore(tmp_path / "r.db") as store:
        run = Run.start(store, SpelaMLP(hidden=(16,), seed=0), "builtin:mnist", name="s",
                        checkpoint_every=50, checkpoint_seconds=None)  # fmt: skip
        real = store.save
        calls: list[int] = []

        def interrupting_save(*args: Any, **kwargs: Any) -> int:
            calls.append(kwargs["samples"])
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # arrives while the save is under way
            return real(*args, **kwargs)

        store.save = interrupting_save  # type: ignore[method-assign]
        with StopGuard() as guard, pytest.raises(Interrupted):
            run.learn(iter_mnist(400), every=25, guard=guard)
        store.save = real  # type: ignore[method-assign]
        assert calls == [50, 100, 101]  # the save finished; the stop came one sample on
        rows = [h["samples"] for h in store.history("s") if h["kind"] == "report"]
        assert rows == [25, 50, 75, 100]
        assert store.load("s").info.samples == 101


def test_resume_of_a_run_without_checkpoints_starts_it_afresh(tmp_path: Path) -> None:
    # Defect 9: a run killed before its first checkpoint goes on under its name.
    with CheckpointStore(tmp_path / "r.db") as store:
        store.create_run("k", SpelaMLP(hidden=(8,), seed=0).config(), "builtin:mnist")
        notes: list[str] = []
        run = Run.resume(store, "k", log=notes.append)
        assert run.skip == 0 and "stopped before its first checkpoint" in notes[0]
        assert run.learn(iter_mnist(30)).samples == 30
        assert store.run("k").checkpoints == 1


def test_a_failed_resume_keeps_the_recorded_source(tmp_path: Path) -> None:
    # Defect 10: a resume whose first record is refused writes no checkpoint.
    with CheckpointStore(tmp_path / "r.db") as store:
        Run.start(store, SpelaMLP(hidden=(8,), seed=0), "a.csv", name="w").learn(iter_mnist(20))
        run = Run.resume(store, "w", source="wide.csv", log=lambda _: None)
        with pytest.raises(InputError):
            run.learn([([1.0, 2.0], 1)])
        ck = store.load("w").info
        assert (ck.source, ck.samples, store.run("w").checkpoints) == ("a.csv", 20, 1)


@pytest.mark.parametrize(
    ("change", "why"),
    [({"metrics": {}}, r"incomplete \(missing 'metrics'\)"), ({"labels": True}, "labels")],
)
def test_resume_passes_over_a_checkpoint_it_cannot_use(
    tmp_path: Path, change: dict[str, Any], why: str
) -> None:
    # Found by benchmarks/reliability.py: metrics JSON {} (checksum intact) gave a KeyError
    # traceback from `learn --resume`, which went past load_loop's checks.
    with CheckpointStore(tmp_path / "r.db") as store:
        run = Run.start(store, SpelaMLP(hidden=(8,), seed=0), "builtin:mnist", name="w",
                        checkpoint_seconds=None)  # fmt: skip
        run.learn(iter_mnist(60), every=30)
        ck = store.load("w")
        state, metrics = dict(ck.state), ck.metrics
        if "metrics" in change:
            metrics = change["metrics"]
        else:
            state["labels"] = [state["labels"][0]] * 2  # a duplicate label list
        store.save("w", state=state, samples=60, source="builtin:mnist", position=60,
                   where="@60", metrics=metrics)  # fmt: skip
        *_, older, newest = [c.id for c in store.checkpoints("w")]
        notes: list[str] = []
        run = Run.resume(store, "w", log=notes.append)  # the older intact one goes on
        assert run.saved is not None and run.saved.id == older and run.loop.samples == 60
        pattern = f"^warning: checkpoint {newest} .*cannot be resumed.*{why}.*older"
        assert re.search(pattern, notes[0]), notes
        with pytest.raises(CheckpointError, match=f"of run 'w' in .*cannot be resumed.*{why}"):
            Run.resume(store, "w", checkpoint=newest)  # asked for by id: refused
    with CheckpointStore(tmp_path / "only.db") as store:  # nothing older to go on from: refused
        store.create_run("o", {}, "builtin:mnist")
        store.save("o", state=state, samples=60, source="builtin:mnist", position=60,
                   where="@60", metrics=metrics)  # fmt: skip
        with pytest.raises(CheckpointError, match=f"of run 'o' in .*cannot be resumed.*{why}"):
            Run.resume(store, "o")


def test_a_run_skips_bad_records_and_keeps_them_without_the_cli(tmp_path: Path) -> None:
    # The bad-record policy is the Run's: a reader's bad line and a sample the model refuses
    # (a label of another kind) are counted, logged and kept in `rejects`, and the run goes on.
    from spela_stream.sources import open_source

    data = tmp_path / "d.csv"
    rows = [f"{i % 3}.5,{i % 2}.25,{i % 2}" for i in range(30)]
    rows[4] = "1,2"  # line 5: too few fields
    rows[9] = "0.5,0.5,yes"  # line 10: a text label in a run of integer labels
    data.write_text("\n".join(rows) + "\n")
    bad = tmp_path / "bad.csv"
    notes: list[str] = []
    with CheckpointStore(tmp_path / "r.db") as store:
        run = Run.start(store, SpelaMLP(hidden=(8,), seed=0), str(data), name="b",
                        on_error="skip", rejects=bad, log=notes.append)  # fmt: skip
        with open_source(str(data), header=False, on_error=run.on_bad) as src:
            report = run.learn(src)
        assert (report.samples, report.rejected, report.position) == (28, 2, 30)
        assert store.load("b").info.position == 30
    assert bad.read_text().splitlines() == ["1,2"]  # a refused sample has no raw text to keep
    assert [n.split(":")[0] for n in notes] == [f"skipped {data} line 5", f"skipped {data} line 10"]
    with CheckpointStore(tmp_path / "r.db") as store:
        with pytest.raises(ConfigError, match="`rejects` needs `on_error` skip"):
            Run.start(store, SpelaMLP(hidden=(8,)), str(data), rejects=bad)
        run = Run.resume(store, "b", log=notes.append)  # raise, the default: no handler
        assert run.on_bad is None
        with open_source(str(data), header=False, on_error=run.on_bad) as src:
            with pytest.raises(SourceError, match="line 5"):
                run.learn(src)  # read from its start (skip 0): the bad line stops it


# ---------------------------------------------------------------- finish (issue 12)


def _finished(
    tmp_path: Path, stream: Any, stops: list[str | None], **learn: Any
) -> tuple[Run, str]:
    err = io.StringIO()
    progress = Progress(err=err, live=False)
    with CheckpointStore(tmp_path / "f.db") as store, StopGuard() as guard:
        run = Run.start(store, SpelaMLP(hidden=(8,), seed=0), "builtin:mnist", name="f")
        finish(run, run.reports(stream, every=20, **learn), progress, guard, stops.append,
               reading="digits")  # fmt: skip
    return run, err.getvalue()


def test_finish_makes_drives_and_sums_up_a_run(tmp_path: Path) -> None:
    stops: list[str | None] = []
    run, err = _finished(tmp_path, iter_mnist(60), stops, limit=50)
    assert stops == [None] and run.loop.samples == 50
    assert err.startswith(f"learning digits into {tmp_path / 'f.db'} run 'f'\n")
    assert err.count("\n") == 5  # the news line, the header and a row per 20 samples + the end
    with CheckpointStore(tmp_path / "f.db") as store:
        assert store.run("f").samples == 50


def test_finish_sums_up_a_signal_after_the_checkpoint_and_raises_it(tmp_path: Path) -> None:
    def signalled() -> Any:
        for i, sample in enumerate(iter_mnist(100)):
            if i == 30:
                os.kill(os.getpid(), signal.SIGINT)
            yield sample

    stops: list[str | None] = []
    with pytest.raises(Interrupted) as stop:
        _finished(tmp_path, signalled(), stops)
    assert stop.value.exit_code == 130 and stops == ["SIGINT"]
    with CheckpointStore(tmp_path / "f.db") as store:
        assert store.run("f").samples == 30  # the 30 learned before the signal, checkpointed


def test_finish_says_what_a_failure_kept(tmp_path: Path) -> None:
    def failing() -> Any:
        yield from iter_mnist(25)
        raise SourceError("x.csv line 26: broken")

    err = io.StringIO()
    with pytest.raises(SourceError, match="line 26"):
        with CheckpointStore(tmp_path / "f.db") as store, StopGuard() as guard:
            run = Run.start(store, SpelaMLP(hidden=(8,), seed=0), "builtin:mnist", name="f")
            finish(run, run.reports(failing()), Progress(err=err, live=False), guard,
                   lambda _: pytest.fail("no summary after a failure"))  # fmt: skip
    assert err.getvalue().splitlines()[-1] == "checkpointed 25 samples of run 'f'"
