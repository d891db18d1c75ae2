"""Run the prequential baselines on the benchmark streams and print markdown tables.

Examples::

    python -m benchmarks.run_baselines --hidden 1024
    python -m benchmarks.run_baselines --streams optdigits letter --hidden 256,256 --limit 2000
    python -m benchmarks.run_baselines --hidden 1024,1024 --grid 0.01 0.03 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # allow `python benchmarks/run_baselines.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baselines import (
    DEFAULT_GRID,
    best_backprop,
    prequential_river_softmax,
)
from benchmarks.streams import STREAMS, load_stream


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad --hidden {text!r}; use e.g. 1024 or 256,256"
        ) from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"bad --hidden {text!r}; use e.g. 1024 or 256,256")
    return sizes


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_hidden(hidden: tuple[int, ...]) -> str:
    return "x".join(str(h) for h in hidden)


def run_stream(
    name: str,
    hiddens: list[tuple[int, ...]],
    grid: tuple[float, ...],
    limit: int | None,
    river: bool,
    seed: int,
) -> dict[str, Any]:
    X, y = load_stream(name, limit)
    _log(f"[{name}] n={X.shape[0]} d={X.shape[1]} classes={len(set(y))}")
    out: dict[str, Any] = {"stream": name, "n": X.shape[0], "d": X.shape[1], "backprop": []}
    for hidden in hiddens:
        t0 = time.perf_counter()
        res = best_backprop(X, y, hidden=hidden, grid=grid, seed=seed)
        for r in res["grid"]:
            _log(
                f"[{name}] backprop {_fmt_hidden(hidden)} lr={r['lr']:g}: "
                f"acc={r['accuracy']:.4f} {r['samples_per_s']:.0f} samples/s"
            )
        _log(f"[{name}] backprop {_fmt_hidden(hidden)} grid took {time.perf_counter() - t0:.1f}s")
        out["backprop"].append(res)
    if river:
        res = prequential_river_softmax(X, y)
        _log(f"[{name}] river softmax: acc={res['accuracy']:.4f} {res['samples_per_s']:.0f}/s")
        out["river_softmax"] = res
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### {result['stream']} (n={result['n']}, d={result['d']})",
        "",
        "| learner | hidden | lr | accuracy | samples/s | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for res in result["backprop"]:
        for r in res["grid"]:
            mark = " (best)" if r["lr"] == res["lr"] else ""
            lines.append(
                f"| backprop SGD{mark} | {_fmt_hidden(r['hidden'])} | {r['lr']:g} "
                f"| {r['accuracy']:.4f} | {r['samples_per_s']:.0f} | {r['seconds']:.1f} |"
            )
    if "river_softmax" in result:
        r = result["river_softmax"]
        lines.append(
            f"| river StandardScaler+SoftmaxRegression | - | default "
            f"| {r['accuracy']:.4f} | {r['samples_per_s']:.0f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", nargs="+", choices=STREAMS, default=list(STREAMS))
    parser.add_argument(
        "--hidden",
        nargs="+",
        type=_hidden,
        default=[(1024,)],
        help="hidden layer sizes, comma separated; several configs may be given (1024 256,256)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    parser.add_argument(
        "--grid", nargs="+", type=float, default=list(DEFAULT_GRID), help="SGD learning rates"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-river", dest="river", action="store_false", help="skip River")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args(argv)

    results = []
    t0 = time.perf_counter()
    for name in args.streams:
        result = run_stream(name, args.hidden, tuple(args.grid), args.limit, args.river, args.seed)
        results.append(result)
        print(markdown(result) + "\n", flush=True)
    _log(f"total {time.perf_counter() - t0:.1f}s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
