"""Width against accuracy and cost (issue 15): should the default width follow the input?

SpelaMLP with its defaults except ``hidden``: one and two layers of 64 .. 1024 units, one pass,
prequential (predict, then learn; the first sample, with nothing to predict from, counts as
wrong), in stream order, on the four shared streams (``benchmarks.streams``) and on River's drift
generators of the continual benchmark (``benchmarks.continual_data``, 10,000 samples each); and
class-incremental MNIST (``benchmarks.continual``'s protocol, 5 stages of 2 classes or 10 of 1)
for the shapes a rule would pick. Accuracy is seeded and exact; cost is CPU time per sample
(``time.process_time``, one torch thread), wall-clock samples/s and the model's bytes
(``SpelaMLP.nbytes``: weights, class vectors, running statistics and the replay memory; ``weights``:
the layers' weights and biases alone). The load average is recorded with every row: on a shared
machine CPU seconds are the steadier figure, and both are rough.

    nice -n 10 python -m benchmarks.width_bench --streams mnist,optdigits     # grid rows
    nice -n 10 python -m benchmarks.width_bench --streams sea,agrawal,rbf,led --layers 2
    nice -n 10 python -m benchmarks.width_bench --ci 2,1 --shapes 1024,1024;256,256
    python -m benchmarks.width_bench --report                                 # markdown only

Rows are merged into ``benchmarks/results/width.json`` as they finish (the file is re-read before
each write); ``width.md`` is regenerated from it after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spela_stream.model import SpelaMLP, auto_hidden

RESULTS = Path(__file__).resolve().parent / "results"
FORMAT = "spela-stream.width/1"
WIDTHS = (64, 128, 256, 512, 1024)
SHARED = ("mnist", "optdigits", "letter", "elec2")
DRIFT = {"sea": "sea-abrupt", "agrawal": "agrawal", "rbf": "rbf", "led": "led"}
STREAMS = (*SHARED, *DRIFT)
DRIFT_N = 10_000
REFERENCE = "1024,1024"  # today's default, the row every other is compared with
CI_PARTS = {2: "mnist-5x2", 1: "mnist-10x1"}


def shape_name(hidden: Sequence[int] | str) -> str:
    return hidden if isinstance(hidden, str) else ",".join(str(w) for w in hidden)


def parse_shape(text: str) -> tuple[int, ...] | str:
    return "auto" if text.strip() == "auto" else tuple(int(v) for v in text.split(","))


def load(stream: str, limit: int | None) -> tuple[np.ndarray, list[Any]]:
    """A stream's rows in order: a shared data set, or a drift generator of DRIFT_N samples."""
    if stream in SHARED:
        from benchmarks.streams import load_stream

        return load_stream(stream, limit)
    from benchmarks.continual_data import drift_streams, materialise

    X, y = materialise(drift_streams(DRIFT_N)[DRIFT[stream]])
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, [int(v) for v in y]


def weight_bytes(model: SpelaMLP) -> int:
    return sum(
        t.element_size() * t.nelement()
        for layer in model.layers
        for t in (layer.weight, layer.bias)
    )


def prequential_row(X: np.ndarray, y: list[Any], hidden: Sequence[int] | str) -> dict[str, Any]:
    """One pass of ``predict_learn_one``: accuracy, per-layer accuracy, cost and size."""
    model = SpelaMLP(hidden=hidden)  # type: ignore[arg-type]
    load0 = os.getloadavg()[0]
    correct = 0
    layer_hits: np.ndarray | None = None
    t0, cpu0 = time.perf_counter(), time.process_time()
    for row, label in zip(X, y, strict=True):
        p = model.predict_learn_one(row, label)
        assert p is not None
        correct += p.label == label
        if p.layer_labels:
            hits = np.array([v == label for v in p.layer_labels], dtype=np.int64)
            layer_hits = hits if layer_hits is None else layer_hits + hits
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = len(y)
    return {
        "hidden": list(model.hidden),
        "n": n,
        "n_features": int(X.shape[1]),
        "n_classes": len(model.labels),
        "accuracy": correct / n,
        "layer_accuracy": [] if layer_hits is None else [float(h) / n for h in layer_hits],
        "cpu_us_per_sample": cpu / n * 1e6,
        "samples_per_s": n / wall,
        "seconds": wall,
        "cpu_seconds": cpu,
        "nbytes": model.nbytes(),
        "weight_bytes": weight_bytes(model),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def ci_row(per_stage: int, hidden: Sequence[int] | str) -> dict[str, Any]:
    """Class-incremental MNIST (the continual benchmark's protocol and figures)."""
    from benchmarks.continual import evaluate
    from benchmarks.continual_learners import Spela
    from spela_stream.datasets import load_mnist

    X, y = load_mnist()
    learner = Spela(hidden=hidden)
    load0 = os.getloadavg()[0]
    r = evaluate(learner, X, y, per_stage)
    keep = ("prequential", "final_heldout", "avg_forgetting", "to80_median", "seconds")
    return {
        "hidden": list(learner.model.hidden),
        **{k: r[k] for k in keep},
        "cpu_seconds": r["cpu_seconds"],
        "nbytes": learner.model.nbytes(),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


# ---------------------------------------------------------------------------- results


def load_results(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"format": FORMAT, "streams": {}, "class_incremental": {}}
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a {FORMAT} file; move it away first")
    return data


def merge(path: Path, section: str, key: str, shape: str, row: dict[str, Any]) -> None:
    results = load_results(path)  # another run may have added rows
    results.setdefault(section, {}).setdefault(key, {})[shape] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def provenance() -> dict[str, Any]:
    from benchmarks.continual import provenance as prov

    return {k: v for k, v in prov().items() if k != "spela_defaults"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- rules

Rule = Callable[[int], tuple[int, ...]]


def _pow2(v: float) -> int:
    return 1 << max(0, round(np.log2(max(v, 1.0))))


def _clamp(v: int, lo: int = 64, hi: int = 1024) -> int:
    return min(hi, max(lo, v))


RULES: dict[str, tuple[str, Rule]] = {
    "fixed 1024,1024": ("the default before issue 15", lambda d: (1024, 1024)),
    "auto": ("SpelaMLP's hidden='auto': 512,512 up to 64 features, else 1024,1024", auto_hidden),
    "2x256 if d<=64": (
        "two layers of 256 up to 64 features, else 1024",
        lambda d: (256, 256) if d <= 64 else (1024, 1024),
    ),
    "2x pow2(16d)": (
        "two layers of 16 x n_features rounded to a power of two, within 128..1024",
        lambda d: (_clamp(_pow2(16 * d), lo=128),) * 2,
    ),
}


# ---------------------------------------------------------------------------- report


def _acc(row: dict[str, Any] | None) -> str:
    return "-" if row is None else f"{row['accuracy']:.4f}"


def _us(row: dict[str, Any] | None) -> str:
    return "-" if row is None else f"{row['cpu_us_per_sample']:.0f}"


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


def report(results: dict[str, Any]) -> str:
    streams = {s: results["streams"][s] for s in STREAMS if s in results.get("streams", {})}
    shapes = [
        s
        for s in (*(str(w) for w in WIDTHS), *(f"{w},{w}" for w in WIDTHS))
        if any(s in rows for rows in streams.values())
    ]
    extra = sorted({s for rows in streams.values() for s in rows} - set(shapes))
    shapes += extra
    out = [
        "# Width against accuracy and cost (issue 15)",
        "",
        "Generated by `benchmarks/width_bench.py` from `width.json`. SpelaMLP defaults except "
        "`hidden`; one pass, prequential, stream order, seed 0 (accuracy exact). Cost: CPU "
        "microseconds per sample of `predict_learn_one` on one torch thread (`time.process_time`), "
        "measured on a shared 2-core machine (load average per row in the JSON): rough, compare "
        "within a column. Drift streams: River generators of the continual benchmark, "
        f"{DRIFT_N:,} samples.",
        "",
    ]
    meta = results.get("meta", {})
    if meta:
        out += [f"Commit {meta.get('commit')}; load averages seen {meta.get('load_seen')}.", ""]
    if streams:
        head = "| stream (d, classes, n) | " + " | ".join(shapes) + " |"
        sep = "|---|" + "---:|" * len(shapes)
        out += ["## Prequential accuracy", "", head, sep]
        for s, rows in streams.items():
            any_row = next(iter(rows.values()))
            label = f"{s} ({any_row['n_features']}, {any_row['n_classes']}, {any_row['n']:,})"
            best = max(r["accuracy"] for r in rows.values())
            cells = [
                f"**{_acc(rows.get(h))}**"
                if rows.get(h) and rows[h]["accuracy"] == best
                else _acc(rows.get(h))
                for h in shapes
            ]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out += ["", "## CPU microseconds per sample", "", head, sep]
        for s, rows in streams.items():
            any_row = next(iter(rows.values()))
            label = f"{s} ({any_row['n_features']}, {any_row['n_classes']}, {any_row['n']:,})"
            out.append(f"| {label} | " + " | ".join(_us(rows.get(h)) for h in shapes) + " |")
        out += ["", "## Model KiB (nbytes: weights, class vectors, statistics, replay memory)"]
        out += ["", head, sep]
        for s, rows in streams.items():
            any_row = next(iter(rows.values()))
            label = f"{s} ({any_row['n_features']}, {any_row['n_classes']}, {any_row['n']:,})"
            cells = ["-" if h not in rows else _kib(rows[h]["nbytes"]) for h in shapes]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out += rules_section(streams)
    ci = results.get("class_incremental", {})
    if ci:
        out += ["", "## Class-incremental MNIST (benchmarks.continual's protocol)", ""]
        out += ["| part | hidden | prequential | final held-out | forgetting | CPU s | KiB |"]
        out += ["|---|---|---:|---:|---:|---:|---:|"]
        for part in CI_PARTS.values():
            for shape, r in ci.get(part, {}).items():
                out.append(
                    f"| {part} | {shape} | {r['prequential']:.4f} | {r['final_heldout']:.4f} | "
                    f"{r['avg_forgetting']:.4f} | {r['cpu_seconds']:.0f} | {_kib(r['nbytes'])} |"
                )
    return "\n".join(out) + "\n"


def rules_section(streams: dict[str, dict[str, Any]]) -> list[str]:
    """Each candidate rule's pick per stream, against today's 1024,1024 (accuracy points and
    CPU time ratio); a pick the grid lacks is shown as missing."""
    out = ["", "## Candidate rules (width from n_features; classes are unknown at build time)"]
    out += ["", "| rule | " + " | ".join(streams) + " |", "|---|" + "---|" * len(streams)]
    for name, (desc, rule) in RULES.items():
        cells = []
        for rows in streams.values():
            d = next(iter(rows.values()))["n_features"]
            pick = shape_name(rule(d))
            ref, got = rows.get(REFERENCE), rows.get(pick)
            if ref is None or got is None:
                cells.append(f"{pick}: -")
                continue
            delta = (got["accuracy"] - ref["accuracy"]) * 100
            speed = ref["cpu_us_per_sample"] / got["cpu_us_per_sample"]
            cells.append(f"{pick}: {delta:+.2f} pt, {speed:.1f}x")
        out.append(f"| {name} ({desc}) | " + " | ".join(cells) + " |")
    out += [
        "",
        "Each cell: the rule's shape, its accuracy minus 1024,1024's in points, and 1024,1024's "
        "CPU time per sample over the pick's (above 1: the pick is cheaper).",
    ]
    return out


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="", help=f"comma-separated: {', '.join(STREAMS)}")
    ap.add_argument("--widths", default=",".join(str(w) for w in WIDTHS))
    ap.add_argument("--layers", default="1,2", help="depths of the grid, comma-separated")
    ap.add_argument(
        "--shapes",
        default=None,
        help="';'-separated shapes instead of the grid (e.g. 256,256;auto)",
    )
    ap.add_argument("--ci", default="", help="class-incremental MNIST, classes per stage: 2,1")
    ap.add_argument("--limit", type=int, default=None, help="first N samples of every stream")
    ap.add_argument("--report", action="store_true", help="only regenerate width.md")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    path = args.out / "width.json"
    if args.shapes:
        shapes = [parse_shape(s) for s in args.shapes.split(";")]
    else:
        shapes = [
            (w,) * int(k)
            for k in args.layers.split(",")
            for w in (int(v) for v in args.widths.split(","))
        ]
    prov = provenance()
    for stream in filter(None, args.streams.split(",")):
        if stream not in STREAMS:
            raise SystemExit(f"--streams: unknown {stream!r}; choose from {', '.join(STREAMS)}")
        X, y = load(stream, args.limit)
        for hidden in shapes:
            row = prequential_row(X, y, hidden) | prov | {"limit": args.limit}
            merge(path, "streams", stream, shape_name(hidden), row)
            log(
                f"{stream} {shape_name(hidden)}: acc {row['accuracy']:.4f}, "
                f"{row['cpu_us_per_sample']:.0f} CPU us/sample, {row['samples_per_s']:.0f}/s, "
                f"{row['nbytes'] / 1024:.0f} KiB, load {row['load_avg']}"
            )
    for per_stage in (int(v) for v in filter(None, args.ci.split(","))):
        for hidden in shapes:
            row = ci_row(per_stage, hidden) | prov
            merge(path, "class_incremental", CI_PARTS[per_stage], shape_name(hidden), row)
            log(
                f"{CI_PARTS[per_stage]} {shape_name(hidden)}: preq {row['prequential']:.4f}, "
                f"final {row['final_heldout']:.4f}, load {row['load_avg']}"
            )
    results = load_results(path)
    loads = [
        v
        for sec in ("streams", "class_incremental")
        for rows in results.get(sec, {}).values()
        for r in rows.values()
        for v in r["load_avg"]
    ]
    commits = sorted(
        {r["commit"] for rows in results.get("streams", {}).values() for r in rows.values()}
    )
    results["meta"] = {
        "commit": ", ".join(commits),
        "load_seen": f"{min(loads):.2f} to {max(loads):.2f}" if loads else "-",
    }
    md = report(results)
    (args.out / "width.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
