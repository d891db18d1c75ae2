"""The suite's one prequential loop: one learner, one stream, in a process of its own.

    python -m benchmarks.loop JOB.json OUT.json

``JOB.json`` names the learner (``benchmarks.learners``), the stream file (an ``.npz`` holding
``X`` float32 (n, d) and ``y`` class indices in order of first appearance), an optional ``limit``,
``window`` and ``max_seconds`` (a slow learner stops there; its figures are those of the samples
it learned, and say how many). The loop predicts every sample, then learns it (a micro-batch
learner predicts the whole batch first), one pass, in stream order, and writes its figures to
``OUT.json``.

Measured in the child, so that every learner gets a fresh process: wall clock of the loop alone
(the stream is in memory; turning a row into what the learner takes, a dict or a VW line, is
inside the loop: it is the price of using that learner), the peak RSS while learning (the
kernel's high-water mark, reset just before the loop, so torch, C and Java memory count), the
learner's own size in bytes. For spela-stream also each layer's accuracy, what early exit would
have done, and the cost of a checkpoint through ``storage.Session``.

Imports only numpy at the top: the deep-river jobs run this file in a virtualenv of their own.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

CHECKPOINT_SECONDS = 60.0  # spela-stream learn's default --checkpoint-seconds
EXIT_THRESHOLD = 0.9  # SpelaMLP's default exit_threshold


def _status(key: str) -> int:
    """A ``/proc/self/status`` figure in bytes (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))
    except (OSError, StopIteration):
        return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # the peak (VmHWM) restarts from the current RSS
    except OSError:
        pass


def scores(y: np.ndarray, preds: np.ndarray, n_classes: int, window: int) -> dict[str, Any]:
    """Accuracy, Cohen's kappa and the rolling accuracy curve of a prediction stream.

    ``preds`` is ``-1`` where the learner had nothing to predict: a wrong answer, and a column of
    its own in the confusion matrix.

    >>> y = np.array([0, 1, 1, 0]); p = np.array([-1, 1, 1, 1])
    >>> s = scores(y, p, 2, window=2)
    >>> s["accuracy"], s["curve"]["rolling"]
    (0.5, [0.0, 0.5, 1.0, 0.5])
    """
    n = len(y)
    correct = (preds == y).astype(np.float64)
    accuracy = float(correct.mean()) if n else 0.0
    cm = np.zeros((n_classes, n_classes + 1))
    np.add.at(cm, (y, np.where(preds < 0, n_classes, preds)), 1)
    po = np.trace(cm[:, :n_classes]) / max(n, 1)
    pe = float((cm.sum(axis=1)[:n_classes] * cm.sum(axis=0)[:n_classes]).sum()) / max(n, 1) ** 2
    kappa = (po - pe) / (1 - pe) if pe < 1 else 0.0
    cs = np.concatenate([[0.0], np.cumsum(correct)])
    points = np.unique(np.linspace(1, n, min(n, 200)).astype(int)) if n else np.array([], int)
    lo = np.maximum(points - window, 0)
    rolling = (cs[points] - cs[lo]) / (points - lo)
    return {
        "accuracy": accuracy,
        "kappa": float(kappa),
        "final_rolling": float(rolling[-1]) if n else 0.0,
        "curve": {"samples": points.tolist(), "rolling": [round(float(r), 4) for r in rolling]},
    }


def _spela_extras(learner: Any, X: np.ndarray, y: np.ndarray, batch: int) -> dict[str, Any]:
    """Per-layer accuracy, early exit at the default threshold, and the checkpoint cost."""
    n = len(y)
    depth = len(learner.model.hidden)
    labels = np.full((n, depth), -1)
    conf = np.zeros((n, depth))
    for i, (ls, cs) in enumerate(zip(learner.layer_labels, learner.layer_conf, strict=True)):
        labels[i, : len(ls)] = [-1 if v is None else v for v in ls]
        conf[i, : len(cs)] = cs
    out: dict[str, Any] = {
        "layer_accuracy": [float((labels[:, k] == y).mean()) for k in range(depth)],
    }
    if depth > 1:
        stop = conf[:, 0] >= EXIT_THRESHOLD
        chosen = np.where(stop, labels[:, 0], labels[:, -1])
        m = min(n, 2000)  # predict-only speed after the stream, full pass vs early exit
        model = learner.model
        times = {}
        for report in ("last", "early_exit"):
            model.report = report
            model.predict_one(X[0])
            t0 = time.perf_counter()
            for i in range(m):
                model.predict_one(X[i])
            times[report] = (time.perf_counter() - t0) / m
        model.report = "last"
        out["early_exit"] = {
            "threshold": EXIT_THRESHOLD,
            "stopped_early": float(stop.mean()),
            "accuracy": float((chosen == y).mean()),
            "predict_us_full": times["last"] * 1e6,
            "predict_us_early_exit": times["early_exit"] * 1e6,
            "predict_time_saved": 1.0 - times["early_exit"] / times["last"],
        }
    if batch == 1:
        out["checkpoint"] = _checkpoint_cost(learner.model)
    return out


def _checkpoint_cost(model: Any, repeats: int = 7) -> dict[str, Any]:
    """Median time of ``storage.Session.save`` (one SQLite transaction, WAL, synchronous=FULL)."""
    from spela_stream.prequential import Prequential
    from storage import CheckpointStore
    from storage.session import Session

    with tempfile.TemporaryDirectory() as tmp:
        store = CheckpointStore(os.path.join(tmp, "bench.db"))
        run = store.create_run(None, model.config(), "bench")
        session = Session(store, run, Prequential(model), "bench", keep=3)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.save()
            times.append(time.perf_counter() - t0)
        size = os.path.getsize(os.path.join(tmp, "bench.db"))
        store.close()
    median = statistics.median(times)
    return {
        "save_s_median": median,
        "save_s_max": max(times),
        "db_bytes_keep3": size,
        "share_at_default_interval": median / (CHECKPOINT_SECONDS + median),
        "default_interval_s": CHECKPOINT_SECONDS,
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in this process and return its figures."""
    from benchmarks.learners import build, spec

    s = spec(job["learner"])
    data = np.load(job["data"])
    X, y = data["X"], data["y"].astype(np.int64)
    n_classes = int(data["n_classes"]) if "n_classes" in data else int(y.max()) + 1
    if job.get("limit"):
        X, y = X[: job["limit"]], y[: job["limit"]]
    n, d = X.shape
    if s.family in ("spela-stream", "torch backprop", "deep-river"):
        import torch

        torch.set_num_threads(1)
    rss_start = _status("VmRSS:")
    learner = build(s, d, n_classes, job.get("extra"))
    ys = y.tolist()
    preds = np.full(n, -1, dtype=np.int64)
    _reset_peak()
    rss_before = _status("VmRSS:")
    budget = float(job.get("max_seconds") or "inf")
    t0 = time.perf_counter()
    done = n
    if s.batch == 1:
        step = learner.predict_learn
        for i in range(n):
            p = step(X[i], ys[i])
            if p is not None:
                preds[i] = p
            if i % 64 == 63 and time.perf_counter() - t0 > budget:
                done = i + 1
                break
    else:
        for i in range(0, n, s.batch):
            ps = learner.predict_learn_many(X[i : i + s.batch], ys[i : i + s.batch])
            preds[i : i + len(ps)] = [-1 if p is None else p for p in ps]
    seconds = time.perf_counter() - t0
    if done < n:  # out of time: the figures are those of the samples learned
        X, y, preds, n = X[:done], y[:done], preds[:done], done
    peak = _status("VmHWM:")
    out: dict[str, Any] = {
        "learner": s.name,
        "n": n,
        "d": d,
        "classes": n_classes,
        "seconds": seconds,
        "samples_per_s": n / seconds if seconds > 0 else 0.0,
        **scores(y, preds, n_classes, int(job.get("window", 1000))),
        "rss_start_mb": rss_start / 2**20,
        "rss_before_loop_mb": rss_before / 2**20,
        "peak_rss_mb": peak / 2**20,
        "loop_rss_growth_mb": (peak - rss_before) / 2**20,
        "model_bytes": learner.nbytes(),
    }
    if s.family == "spela-stream":
        out.update(_spela_extras(learner, X, y, s.batch))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m benchmarks.loop JOB.json OUT.json", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        job = json.load(fh)
    result = run_job(job)
    with open(argv[1], "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
