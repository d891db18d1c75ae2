"""Continual benchmark (issue 11): new classes, drift and recurring concepts, one pass.

Class-incremental parts (``mnist-2``, ``mnist-1``, ``optdigits-2``, ``letter-2``, ``camera-2``:
data set and classes per stage; ``camera`` is MNIST through the frozen EfficientNet-Lite0, see
``benchmarks.continual_data``): classes in stages (0-1, 2-3, ...), each stage's samples in file
order; the last 20% of every class is held out. One pass, prequential (predict, then learn), no
task labels or stage boundaries given to the learner. After every stage a frozen learner is scored
on the held-out samples of every class: the stage x class accuracy matrix gives the final
per-class accuracy, average forgetting and backward transfer as Avalanche defines them (forgetting
of experience k: its accuracy right after stage k minus its accuracy after the last stage,
averaged over every stage but the last; BWT (Lopez-Paz and Ranzato): the mean of final minus
just-learned accuracy, so minus the average forgetting by definition).
Samples-to-80%: for each class first seen after stage 1, the first of its own samples ``j >= 10``
at which its last 10 prequential predictions were >= 80% right (``None``: never).

Drift parts (River generators, ``benchmarks.continual_drift`` for the figures): prequential
accuracy, pre/post-drift accuracy, the dip, samples to recover within 1 point; recurring concepts:
accuracy per block, each concept's first appearance against its returns. A learner with a seed
runs once per model seed of ``--seeds`` (default 0,1,2; the stream is the same for each) and its
row holds every seed's figures and their median with the range; a deterministic one (SLDA, River's
SoftmaxRegression and kNN, no-change) runs once. Class-incremental parts run model seed 0.

    make bench-continual                                   # everything, 2 jobs at a time
    python -m benchmarks.continual --streams drift --jobs 2
    python -m benchmarks.continual --streams drift --drift-n 10000 --seeds 0,1,2,3,4
    python -m benchmarks.continual --streams mnist-2 --learners "spela;spela:hidden_decay=0.999"
    python -m benchmarks.continual --learners "spela;spela-m0" --per-stage 2   # research rows

Each row is merged into ``benchmarks/results/continual.json`` as it finishes, with the commit
whose SpelaMLP defaults produced it; the markdown, the PNG curves and README.md's block are
generated from that file (``benchmarks.continual_report``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.continual_learners import Learner
from spela_stream.model import SpelaMLP

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = (0, 1, 2)  # model seeds of the drift parts (the README block's)
WINDOW = 10  # samples-to-80%: rolling window over the class's own samples


def class_incremental(
    X: np.ndarray, y: np.ndarray, per_stage: int, held_out: float = 0.2
) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Stage index arrays (file order inside a stage) and held-out indices per class."""
    classes = sorted(set(y.tolist()))
    train: dict[int, np.ndarray] = {}
    test: dict[int, np.ndarray] = {}
    for c in classes:
        idx = np.flatnonzero(y == c)
        cut = int(round(len(idx) * (1 - held_out)))
        train[c], test[c] = idx[:cut], idx[cut:]
    stages = [
        np.sort(np.concatenate([train[c] for c in classes[i : i + per_stage]]))
        for i in range(0, len(classes), per_stage)
    ]
    return stages, test


def evaluate(learner: Learner, X: np.ndarray, y: np.ndarray, per_stage: int) -> dict[str, Any]:
    """Run the protocol for one learner; every figure of the table."""
    stages, test = class_incremental(X, y, per_stage)
    classes = sorted(test)
    stage_classes = [sorted(set(y[s].tolist())) for s in stages]
    matrix = np.zeros((len(stages), len(classes)))  # held-out acc after stage s on class c
    correct = n = 0
    hits: dict[int, list[bool]] = {c: [] for c in classes}
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for s, idx in enumerate(stages):
        for i in idx:
            label = int(y[i])
            pred = learner.predict_learn(X[i], label)
            ok = pred == label
            correct += ok
            n += 1
            hits[label].append(bool(ok))
        for c in classes:
            preds = learner.predict(X[test[c]])
            matrix[s, c] = float(np.mean([p == c for p in preds]))
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0
    final = matrix[-1]
    all_test = np.concatenate([test[c] for c in classes])
    stage_acc = np.array(
        [
            [matrix[t, stage_classes[k]].mean() if t >= k else np.nan for k in range(len(stages))]
            for t in range(len(stages))
        ]
    )
    forgetting = [stage_acc[k, k] - stage_acc[-1, k] for k in range(len(stages) - 1)]
    to80 = {}
    for c in classes:
        if c in stage_classes[0]:
            continue
        h = np.array(hits[c], dtype=float)
        to80[c] = next(
            (j + 1 for j in range(WINDOW - 1, len(h)) if h[j + 1 - WINDOW : j + 1].mean() >= 0.8),
            None,
        )
    reached = [v for v in to80.values() if v is not None]
    weights = np.array([len(test[c]) for c in classes])
    return {
        "prequential": correct / n,
        "final_heldout": float((final * weights).sum() / weights.sum()),
        "final_per_class": [round(float(v), 4) for v in final],
        "avg_forgetting": float(np.mean(forgetting)),
        "bwt": -float(np.mean(forgetting)),
        "to80_median": float(np.median(reached)) if reached else None,
        "to80_max": (max(reached) if len(reached) == len(to80) else None) if reached else None,
        "to80_never": sum(v is None for v in to80.values()),
        "stage_matrix": [[round(float(v), 4) for v in row] for row in matrix],
        "memory_samples": learner.memory_samples(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "n_heldout": int(len(all_test)),
    }


def iid(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Prequential accuracy of SpelaMLP(**params) on one shared stream in its published order."""
    from benchmarks.streams import load_stream

    X, y = load_stream(name)
    model = SpelaMLP(**params)
    correct = 0
    t0 = time.perf_counter()
    for row, label in zip(X, y, strict=True):
        p = model.predict_learn_one(row, label)
        correct += p is not None and p.label == label
    seconds = time.perf_counter() - t0
    return {"stream": name, "accuracy": correct / len(y), "seconds": seconds, "n": len(y)}


# ---------------------------------------------------------------------------- the benchmark

CI_STAGES = {"mnist-2": 2, "mnist-1": 1, "optdigits-2": 2, "letter-2": 2, "camera-2": 2}
ALL_CI = ("spela", "spela-m0", "backprop", "backprop-replay", "slda", "river-softmax", "arf",
          "knn", "no-change")  # fmt: skip
# ARF and kNN on 784 pixels cost more CPU than the rest of MNIST together (about 40 and 60
# samples/s on a loaded core): they run on Optdigits and Letter; --learners adds them here.
ROSTERS: dict[str, tuple[str, ...]] = {
    "mnist-2": tuple(n for n in ALL_CI if n not in ("arf", "knn")),
    "mnist-1": ("spela", "spela-m0", "backprop", "backprop-replay", "slda", "no-change"),
    "optdigits-2": ALL_CI,
    "letter-2": ALL_CI,
    "camera-2": ("spela", "spela-frames", "spela-m0", "backprop-replay", "slda"),
}
DRIFT_ROSTER = ("spela", "spela-m0", "backprop", "river-softmax", "arf", "knn", "no-change")
DRIFT_PARTS = ("sea-abrupt", "sea-gradual", "agrawal", "rbf", "led", "recurring")
PARTS = (*CI_STAGES, *DRIFT_PARTS)
GROUPS = {"class-incremental": tuple(CI_STAGES), "drift": DRIFT_PARTS, "all": PARTS}


def parts(spec: str) -> list[str]:
    """``--streams`` (comma-separated parts or groups) -> the parts, in benchmark order."""
    wanted: set[str] = set()
    for item in filter(None, (v.strip() for v in spec.split(","))):
        if item in GROUPS:
            wanted |= set(GROUPS[item])
        elif item in PARTS:
            wanted.add(item)
        else:
            raise SystemExit(
                f"--streams: unknown part {item!r}; choose from {', '.join((*GROUPS, *PARTS))}"
            )
    return [p for p in PARTS if p in wanted]


def parse_seeds(spec: str) -> tuple[int, ...]:
    """``--seeds`` (comma-separated distinct non-negative integers) -> the seeds, in order."""
    try:
        seeds = tuple(int(v) for v in spec.split(",") if v.strip())
    except ValueError:
        seeds = ()
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SystemExit(
            f"--seeds: {spec!r} is not a list of distinct non-negative integers; "
            "give e.g. --seeds 0,1,2"
        )
    return seeds


def job_seeds(part: str, name: str, seeds: Sequence[int]) -> list[int | None]:
    """The model seeds a learner runs with on a part: every one of ``seeds`` on a drift part if
    its figures depend on the seed, else one run (``None``: the learner's own default)."""
    from benchmarks.continual_learners import seeded

    return list(seeds) if part not in CI_STAGES and seeded(name) else [None]


def run_job(
    part: str, name: str, drift_n: int, limit: int | None, seed: int | None = None
) -> dict[str, Any]:
    """One learner on one part with one model seed (in a worker process): its figures."""
    import torch

    from benchmarks.continual_data import drift_streams, load_class_incremental, materialise
    from benchmarks.continual_drift import run_drift
    from benchmarks.continual_learners import make

    torch.set_num_threads(1)
    kw = {} if seed is None else {"seed": seed}
    if part in CI_STAGES:
        X, y = load_class_incremental(part.split("-")[0], limit)
        learner = make(name, X.shape[1], int(y.max()) + 1, **kw)
        return evaluate(learner, X, y, CI_STAGES[part])
    stream = drift_streams(drift_n, int(drift_n * 0.8), drift_n // 10)[part]
    X, y = materialise(stream)
    learner = make(name, X.shape[1], int(y.max()) + 1, **kw)
    return run_drift(learner, stream, X, y) | {"title": stream.title}


def provenance() -> dict[str, Any]:
    """Which commit's SpelaMLP defaults produced a row (``+dirty``: spela_stream/ was edited)."""
    import inspect
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return out.stdout.strip()

    dirty = bool(git("status", "--porcelain", "--", "spela_stream"))
    defaults = {
        k: v.default
        for k, v in inspect.signature(SpelaMLP.__init__).parameters.items()
        if v.default is not inspect.Parameter.empty
    }
    return {
        "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else ""),
        # the last commit that changed the learner: rows of equal spela_commit ran the same code
        "spela_commit": git("log", "-1", "--format=%h", "HEAD", "--", "spela_stream")
        + ("+dirty" if dirty else ""),
        "spela_defaults": {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()},
    }


def log(t0: float, msg: str) -> None:
    print(f"[{(time.perf_counter() - t0) / 60:5.1f} min] {msg}", file=sys.stderr, flush=True)


def run_benchmark(
    chosen: Sequence[str],
    learners: Sequence[str] | None,
    jobs: int,
    drift_n: int,
    limit: int | None,
    out: Path,
    seeds: Sequence[int] = SEEDS,
) -> dict[str, Any]:
    """Run every (part, learner, model seed) job, ``jobs`` processes at a time; merge each row
    into ``out/continual.json`` as it finishes (rows of parts not run are kept, with their commit;
    the file is re-read before each write, so two runs of different parts can share it). A seeded
    learner's drift row is rewritten as each of its seeds finishes: the seeds done so far in this
    run, their median and range (``continual_drift.over_seeds``); every job's figures are also
    appended to ``out/continual-rows.jsonl`` with its seed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from benchmarks.continual_data import camera_features
    from benchmarks.continual_drift import over_seeds
    from benchmarks.continual_report import load_results, save_results

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)  # --out may name a new folder
    results = load_results(out / "continual.json")
    prov = provenance()
    todo = [
        (part, name, seed)
        for part in chosen
        for name in (learners or (ROSTERS.get(part) or DRIFT_ROSTER))
        for seed in job_seeds(part, name, seeds)
    ]
    log(t0, f"continual: {len(todo)} jobs on {', '.join(chosen)}, {jobs} at a time; "
        f"drift model seeds {', '.join(map(str, seeds))}; "
        f"spela defaults of {prov['commit']}")  # fmt: skip
    by_seed: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    if "camera-2" in chosen:
        camera_features(limit)  # embed once, before workers would race to
        log(t0, "camera: EfficientNet-Lite0 features ready (benchmarks/.cache)")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_job, p, n, drift_n, limit, s): (p, n, s) for p, n, s in todo}
        for done, fut in enumerate(as_completed(futures), start=1):
            part, name, seed = futures[fut]
            got = fut.result()
            tail = {**prov, "drift_n": drift_n, "limit": limit}
            kind = "class-incremental" if part in CI_STAGES else "drift"
            with (out / "continual-rows.jsonl").open("a") as fh:  # every job ever run, a log
                fh.write(json.dumps({"part": part, "learner": name, "seed": seed, **got,
                                     **tail}) + "\n")  # fmt: skip
            if seed is not None:
                by_seed.setdefault((part, name), {})[seed] = got
                row = {"learner": name, **over_seeds(by_seed[(part, name)]), **tail}
            else:  # one run: a deterministic learner on a drift part (seeds None), or a CI part
                row = {"learner": name, **got, **tail}
                if kind == "drift":
                    row["seeds"] = None
            results = load_results(out / "continual.json")  # another run may have added rows
            entry = results["parts"].setdefault(part, {"kind": kind, "rows": {}})
            entry["rows"][name] = row
            save_results(results, out / "continual.json")
            which = "" if seed is None else f" seed {seed}"
            log(t0, f"{done}/{len(todo)} {part} {name}{which}: preq {got['prequential']:.3f}"
                f"{_headline(got)} ({got['cpu_seconds']:.0f} CPU s)")  # fmt: skip
    return results


def _headline(row: dict[str, Any]) -> str:
    if "final_heldout" in row:
        return (
            f", final held-out {row['final_heldout']:.3f}, forgetting {row['avg_forgetting']:.3f}"
        )
    if "recovery" in row:
        return f", recovery {row['recovery']}"
    return ""


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--streams",
        default="all",
        help=f"parts or groups, comma-separated: {', '.join((*GROUPS, *PARTS))}",
    )
    ap.add_argument(
        "--learners",
        default=None,
        help="';'-separated learner names instead of each part's roster "
        "(spela variants: 'spela:key=value,key=value')",
    )
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one thread each)")
    ap.add_argument("--drift-n", type=int, default=50_000, help="samples of a drift stream")
    ap.add_argument(
        "--seeds",
        default=",".join(map(str, SEEDS)),
        help="model seeds of the drift parts, comma-separated (the stream stays the same): a "
        "seeded learner runs once per seed, its row gives the median and range (default "
        "%(default)s)",
    )
    ap.add_argument("--limit", type=int, default=None, help="first N samples of a data set")
    ap.add_argument("--no-readme", action="store_true", help="leave README.md's block alone")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--per-stage",
        type=int,
        default=None,
        help="research mode: class-incremental MNIST, these classes per stage, the --learners "
        "given, one row per learner on stdout (--json appends them to a file)",
    )
    ap.add_argument("--json", type=Path, default=None, help="research mode: append rows here")
    ap.add_argument(
        "--iid",
        default=None,
        help="instead: prequential accuracy on these shared streams (comma-separated), in "
        "stream order, for SpelaMLP with the overrides given as --params JSON",
    )
    ap.add_argument("--params", default="{}", help="JSON overrides of SpelaMLP for --iid")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = parse_seeds(args.seeds)
    learners = args.learners.split(";") if args.learners else None
    if args.iid:
        for stream in args.iid.split(","):
            r = iid(stream, json.loads(args.params))
            print(f"{stream:10s} {args.params} accuracy={r['accuracy']:.4f} n={r['n']}", flush=True)
        return
    if args.per_stage is not None:
        research(learners or ["spela", "spela-m0"], args.per_stage, args.limit, args.json)
        return
    from benchmarks.continual_report import publish

    results = run_benchmark(
        parts(args.streams), learners, args.jobs, args.drift_n, args.limit, args.out, seeds
    )
    md = publish(results, args.out, readme=not args.no_readme and args.out == RESULTS)
    print(md)


def research(names: Sequence[str], per_stage: int, limit: int | None, out: Path | None) -> None:
    """One row per learner on class-incremental MNIST (the research log's command)."""
    from benchmarks.continual_learners import make
    from spela_stream.datasets import load_mnist

    X, y = load_mnist(limit)
    for name in names:
        r = evaluate(make(name, X.shape[1], 10), X, y, per_stage)
        print(
            f"{name:40s} per_stage={per_stage} preq={r['prequential']:.3f} "
            f"final={r['final_heldout']:.3f} forget={r['avg_forgetting']:.3f} "
            f"to80={r['to80_median']}/{r['to80_max']} never={r['to80_never']} "
            f"mem={r['memory_samples']} {r['seconds']:.0f}s",
            flush=True,
        )
        print("   per class", r["final_per_class"], file=sys.stderr)
        if out:
            with out.open("a") as fh:
                fh.write(json.dumps({"learner": name, "per_stage": per_stage, **r}) + "\n")


if __name__ == "__main__":
    main()
