"""The continual benchmark's outputs, all generated from ``benchmarks/results/continual.json``:
``continual.md`` (every table), ``continual-stages.png`` and ``continual-drift.png`` (curves),
and README.md's block between ``<!-- continual:begin -->`` and ``<!-- continual:end -->``.

    python -m benchmarks.continual_report      # regenerate them from the JSON, running nothing
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- continual:begin -->", "<!-- continual:end -->"
FORMAT = "spela-stream.continual/1"

CI_TITLES = {
    "mnist-2": "MNIST, 5 stages of 2",
    "mnist-1": "MNIST, 10 stages of 1",
    "optdigits-2": "Optdigits, 5 stages of 2",
    "letter-2": "Letter, 13 stages of 2",
    "camera-2": "MNIST frames -> EfficientNet-Lite0 (1280-d), 5 stages of 2",
}
DRIFT_TITLES = {
    "sea-abrupt": "SEA abrupt",
    "sea-gradual": "SEA gradual",
    "agrawal": "Agrawal switch",
    "rbf": "RandomRBF",
    "led": "LED drift",
    "recurring": "recurring Agrawal",
}
LEARNER_TITLES = {
    "spela": "spela-stream defaults",
    "spela-frames": "spela-stream camera defaults (1x1024, input readout 2,000)",
    "spela-m0": "spela-stream, memory=0",
    "backprop": "backprop 2x1024 (lr 0.01, per sample)",
    "backprop-replay": "backprop + replay (1,000, same schedule)",
    "slda": "SLDA (shrinkage 0.01)",
    "river-softmax": "River SoftmaxRegression",
    "arf": "River ARF",
    "knn": "River kNN (window 1,000)",
    "no-change": "no-change",
}


def rows(results: dict[str, Any], part: str) -> dict[str, dict[str, Any]]:
    """A part's rows in the roster's order (LEARNER_TITLES), other names after them."""
    got = results["parts"][part]["rows"]
    order = list(LEARNER_TITLES)
    return {n: got[n] for n in sorted(got, key=lambda n: (order.index(n) if n in order else 99, n))}


def load_results(path: Path) -> dict[str, Any]:
    """The results file, or an empty one (a file of another format is not overwritten)."""
    if not path.is_file():
        return {"format": FORMAT, "parts": {}}
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a {FORMAT} file; move it away first")
    return data


def save_results(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _name(learner: str) -> str:
    return LEARNER_TITLES.get(learner, learner)


def _multi(r: dict[str, Any]) -> bool:
    """A row of more than one model seed (``continual_drift.over_seeds``)."""
    return len(r.get("per_seed", ())) > 1


def _value(r: dict[str, Any], key: str, digits: int = 3) -> str:
    """A figure; over seeds, its median and the range: ``0.970 (0.968-0.971)``."""
    text = _f(r[key], digits)
    if _multi(r) and f"{key}_range" in r:
        lo, hi = r[f"{key}_range"]
        text += f" ({lo:.{digits}f}-{hi:.{digits}f})"
    return text


def _samples(v: int | float | None) -> str:
    return "never" if v is None else f"{v:,.0f}"


def recovery_text(r: dict[str, Any]) -> str:
    """Recovery; over seeds, the median, the range and how many seeds recovered if not all:
    ``548 (535-871)``, ``3,735 (1,575-never; 2/3 recovered)``, ``never (0/3 recovered)``."""
    text = _samples(r["recovery"])
    if not _multi(r):
        return text
    n, k = len(r["per_seed"]), r["recovered"]
    lo, hi = r["recovery_range"]
    inner = [] if lo is None else [f"{_samples(lo)}-{_samples(hi)}"]
    if k < n:
        inner.append(f"{k}/{n} recovered")
    return f"{text} ({'; '.join(inner)})"


def seeds_note(results: dict[str, Any], parts: Sequence[str]) -> str:
    """What the drift figures are over: which model seeds, which rows are one run and why (a
    deterministic learner; one seed: a row from before ``--seeds``, or a run of one seed)."""
    from benchmarks.continual_learners import seeded

    seed_sets: dict[tuple[int, ...], None] = {}
    fixed: dict[str, None] = {}
    single: dict[tuple[str, int], list[str]] = {}
    for p in parts:
        for name, r in rows(results, p).items():
            if _multi(r):
                seed_sets[tuple(r["seeds"])] = None
            elif r.get("seeds", ()) is None or not seeded(name):
                fixed[_name(name)] = None
            else:  # an older row has no seeds: it ran the learner's default, seed 0
                single.setdefault((_name(name), (r.get("seeds") or [0])[0]), []).append(p)
    out = []
    if seed_sets:
        which = " / ".join(", ".join(map(str, s)) for s in seed_sets)
        out.append(
            f"Seeded learners: the median over model seeds {which} (the same stream for each), "
            "min-max in brackets; a seed that never recovers counts as slower than any, and the "
            "brackets say how many recovered when not all did."
        )
    if fixed:
        out.append(f"One run of {', '.join(fixed)}: deterministic, no seed.")
    if single:
        items = [
            f"{name} (seed {seed}"
            + ("" if len(ps) == len(parts) else f"; {', '.join(DRIFT_TITLES[p] for p in ps)}")
            + ")"
            for (name, seed), ps in single.items()
        ]
        out.append(f"One seed only: {', '.join(items)}.")
    return " ".join(out)


def _ordered(results: dict[str, Any], titles: dict[str, str]) -> list[str]:
    return [p for p in titles if p in results["parts"]]


SHOWN_DEFAULTS = (
    "hidden",
    "lr",
    "contrast",
    "memory",
    "replay",
    "replay_every",
    "replay_gate",
    "hidden_decay",
    "report",
)


def provenance_lines(results: dict[str, Any]) -> list[str]:
    """Which commit's SpelaMLP defaults produced which parts' spela rows (grouped by defaults;
    the commit is the last one that changed spela_stream/ before the run)."""
    groups: dict[str, tuple[set[str], list[str]]] = {}
    for part, entry in results["parts"].items():
        for name, r in entry["rows"].items():
            if not name.startswith("spela"):
                continue
            d = r.get("spela_defaults", {})
            key = ", ".join(f"{k}={d[k]}" for k in SHOWN_DEFAULTS if k in d)
            commits, parts = groups.setdefault(key, (set(), []))
            commits.add(r.get("spela_commit", r["commit"]))
            if part not in parts:
                parts.append(part)
    return [
        f"- spela-stream rows of {', '.join(parts)}: `SpelaMLP` defaults of commit "
        f"{', '.join(f'`{c}`' for c in sorted(commits))} ({key})"
        for key, (commits, parts) in groups.items()
    ]


def _to80(r: dict[str, Any]) -> str:
    med, mx, never = r["to80_median"], r["to80_max"], r["to80_never"]
    text = f"{_f(med, 0) if med is not None else '-'} / {mx if mx is not None else '-'}"
    return text + (f" ({never} never)" if never else "")


def class_incremental_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for part in _ordered(results, CI_TITLES):
        part_rows = rows(results, part)
        lines += [
            f"### {CI_TITLES[part]}",
            "",
            "| learner | prequential | final held-out | avg forgetting | BWT | "
            "to 80% median / max | memory (samples) | CPU s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in part_rows.items():
            lines.append(
                f"| {_name(name)} | {_f(r['prequential'])} | **{_f(r['final_heldout'])}** | "
                f"{_f(r['avg_forgetting'])} | {_f(r['bwt'])} | {_to80(r)} | "
                f"{r['memory_samples']:,} | {r['cpu_seconds']:.0f} |"
            )
        n_classes = len(next(iter(part_rows.values()))["final_per_class"])
        if n_classes <= 10:
            lines += [
                "",
                "Final held-out accuracy per class:",
                "",
                "| learner | " + " | ".join(str(c) for c in range(n_classes)) + " |",
                "|---|" + "---|" * n_classes,
            ]
            for name, r in part_rows.items():
                cells = " | ".join(f"{v:.2f}" for v in r["final_per_class"])
                lines.append(f"| {_name(name)} | {cells} |")
        lines.append("")
    return lines


def _learners(results: dict[str, Any], parts: Sequence[str]) -> list[str]:
    names: dict[str, None] = {}
    for p in parts:
        names.update(dict.fromkeys(rows(results, p)))
    order = list(LEARNER_TITLES)
    return sorted(names, key=lambda n: (order.index(n) if n in order else 99, n))


def drift_tables(results: dict[str, Any]) -> list[str]:
    parts = _ordered(results, DRIFT_TITLES)
    if not parts:
        return []
    drifts = [p for p in parts if p != "recurring"]
    lines = [
        "### Prequential accuracy",
        "",
        "| learner | " + " | ".join(DRIFT_TITLES[p] for p in parts) + " |",
        "|---|" + "---|" * len(parts),
    ]
    names = _learners(results, parts)
    for name in names:
        cells = [results["parts"][p]["rows"].get(name) for p in parts]
        lines.append(
            f"| {_name(name)} | "
            + " | ".join(_value(r, "prequential") if r else "" for r in cells)
            + " |"
        )
    note = seeds_note(results, parts)
    if note:
        lines += ["", note]
    if drifts:
        lines += [
            "",
            "### After the drift: pre-drift level -> post-drift accuracy; dip; recovery",
            "",
            "Recovery: samples from the change's start until a rolling window of 500 samples, "
            "wholly after it, is back within 1 point of the 2,000 samples before it (500 is the "
            "floor: a learner the drift does not hurt; `never`: not within the stream).",
            "",
            "| learner | " + " | ".join(DRIFT_TITLES[p] for p in drifts) + " |",
            "|---|" + "---|" * len(drifts),
        ]
        for name in names:
            cells = []
            for p in drifts:
                r = results["parts"][p]["rows"].get(name)
                if r is None:
                    cells.append("")
                    continue
                cells.append(
                    f"{r['pre_drift']:.3f} -> {r['post_drift']:.3f}; {r['dip']:.2f}; "
                    f"{recovery_text(r)}"
                )
            lines.append(f"| {_name(name)} | " + " | ".join(cells) + " |")
    lines += per_seed_table(results, parts)
    if "recurring" in parts:
        rec_rows = rows(results, "recurring")
        n_blocks = len(next(iter(rec_rows.values()))["blocks"])
        lines += [
            "",
            "### Recurring concepts: accuracy per block; first appearance -> mean of returns",
            "",
            "Concept A (Agrawal function 0) in the even blocks, B (function 4) in the odd ones; "
            "'early': the first fifth of a block (how fast it is re-learned).",
            "",
            "| learner | "
            + " | ".join(f"block {b + 1}" for b in range(n_blocks))
            + " | A first -> returns | A early | B first -> returns | B early |",
            "|---|" + "---|" * (n_blocks + 4),
        ]
        for name, r in rec_rows.items():
            cells = [f"{v:.3f}" for v in r["blocks"]]
            for c in ("concept0", "concept1"):
                d = r.get(c)
                cells += (
                    [
                        f"{d['first']:.3f} -> {d['returns']:.3f}",
                        f"{d['first_early']:.3f} -> {d['returns_early']:.3f}",
                    ]
                    if d
                    else ["", ""]
                )
            lines.append(f"| {_name(name)} | " + " | ".join(cells) + " |")
    return lines + [""]


def per_seed_table(results: dict[str, Any], parts: Sequence[str]) -> list[str]:
    """Each model seed's prequential accuracy and recovery, for the rows of several seeds."""
    names = [n for n in _learners(results, parts)
             if any(_multi(results["parts"][p]["rows"].get(n) or {}) for p in parts)]  # fmt: skip
    if not names:
        return []
    lines = [
        "",
        "### Each model seed: prequential accuracy; recovery",
        "",
        "Seeds in order (`seed 0 / seed 1 / ...`, as listed in the row's `seeds`); the medians "
        "above are over these.",
        "",
        "| learner | " + " | ".join(DRIFT_TITLES[p] for p in parts) + " |",
        "|---|" + "---|" * len(parts),
    ]
    for name in names:
        cells = []
        for p in parts:
            r = results["parts"][p]["rows"].get(name)
            if r is None or not _multi(r):
                cells.append("")
                continue
            ps = r["per_seed"]
            cell = " / ".join(f"{s['prequential']:.3f}" for s in ps)
            if "recovery" in r:
                cell += "; " + " / ".join(_samples(s["recovery"]) for s in ps)
            cells.append(f"seeds {', '.join(str(s['seed']) for s in ps)}: {cell}")
        lines.append(f"| {_name(name)} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(results: dict[str, Any], curves: Sequence[str]) -> str:
    lines = [
        "# Continual learning benchmark (issue 11)",
        "",
        "<!-- generated by `make bench-continual` (python -m benchmarks.continual) from "
        "benchmarks/results/continual.json; do not edit by hand -->",
        "",
        "One pass, prequential (predict, then learn), one sample at a time, single-threaded "
        "torch, seeded: accuracy figures are exact and repeat; CPU seconds were taken on a "
        "shared 2-core machine and are only a rough guide. Protocols: the docstrings of "
        "`benchmarks/continual.py` and `benchmarks/continual_drift.py`; streams: "
        "`benchmarks/continual_data.py`. The hand-written research log (every variant "
        "measured) is `benchmarks/results/continual-research.md`.",
        "",
        *provenance_lines(results),
        "",
    ]
    ci = class_incremental_tables(results)
    if ci:
        lines += ["## Class-incremental", "", *ci]
    dr = drift_tables(results)
    if dr:
        lines += ["## Drift (River generators)", "", *_drift_streams(results), "", *dr]
    lines += [f"![{Path(c).stem}]({Path(c).name})" for c in curves]
    cost = {
        p: sum(r.get("cpu_seconds", 0.0) for r in e["rows"].values())
        for p, e in results["parts"].items()
    }
    total = sum(cost.values())
    lines += [
        "",
        "## Cost",
        "",
        "CPU seconds of each part's rows (one core each; the camera part's one-off embedding "
        "of 10,000 frames, cached in `benchmarks/.cache`, is not counted): "
        + ", ".join(f"{p} {c:.0f}" for p, c in cost.items())
        + f". All together {total / 60:.1f} CPU min, so about {total / 120:.0f} min with "
        "`--jobs 2` on an otherwise idle 2-core machine.",
    ]
    return "\n".join(lines) + "\n"


def _drift_streams(results: dict[str, Any]) -> list[str]:
    out = []
    for p in _ordered(results, DRIFT_TITLES):
        r = next(iter(results["parts"][p]["rows"].values()))
        out.append(f"- **{DRIFT_TITLES[p]}**: {r.get('title', '')}, {r['n']:,} samples")
    return out


def render_readme_block(results: dict[str, Any], curves: Sequence[str]) -> str:
    """The README's block: final held-out accuracy per class-incremental part, prequential
    accuracy and recovery per drift stream, the curves; which commit produced it."""
    lines = [
        BEGIN,
        "<!-- generated by `make bench-continual` from benchmarks/results/continual.json; "
        "do not edit by hand -->",
        "",
        *provenance_lines(results),
        "",
    ]
    ci = _ordered(results, CI_TITLES)
    if ci:
        lines += [
            "Final held-out accuracy on all classes after a class-incremental pass "
            "(average forgetting in brackets):",
            "",
            "| learner | " + " | ".join(CI_TITLES[p] for p in ci) + " |",
            "|---|" + "---|" * len(ci),
        ]
        for name in _learners(results, ci):
            cells = []
            for p in ci:
                r = results["parts"][p]["rows"].get(name)
                cells.append(f"{r['final_heldout']:.3f} ({r['avg_forgetting']:.2f})" if r else "")
            lines.append(f"| {_name(name)} | " + " | ".join(cells) + " |")
    dr = _ordered(results, DRIFT_TITLES)
    if dr:
        lines += [
            "",
            "Drift: prequential accuracy; samples to recover within 1 point of the pre-drift "
            "level (recurring: first appearance -> returns, mean of both concepts); "
            + ", ".join(
                f"{DRIFT_TITLES[p]} {next(iter(results['parts'][p]['rows'].values()))['n']:,}"
                for p in dr
            )
            + " samples, the change in the middle. "
            + seeds_note(results, dr),
            "",
            "| learner | " + " | ".join(DRIFT_TITLES[p] for p in dr) + " |",
            "|---|" + "---|" * len(dr),
        ]
        for name in _learners(results, dr):
            cells = []
            for p in dr:
                r = results["parts"][p]["rows"].get(name)
                cells.append(_drift_cell(r) if r else "")
            lines.append(f"| {_name(name)} | " + " | ".join(cells) + " |")
    lines += ["", "Tables and protocol: `benchmarks/results/continual.md`.", ""]
    lines += [f"![{Path(c).stem}]({c})" for c in curves]
    lines.append(END)
    return "\n".join(lines)


def _drift_cell(r: dict[str, Any]) -> str:
    if "recovery" in r:
        return f"{_value(r, 'prequential')}; {recovery_text(r)}"
    first = np.mean([r[c]["first"] for c in ("concept0", "concept1") if c in r])
    ret = np.mean([r[c]["returns"] for c in ("concept0", "concept1") if c in r])
    return f"{_value(r, 'prequential')}; {first:.3f} -> {ret:.3f}"


def write_readme(block: str, path: Path = README) -> None:
    """Replace the block between the markers (SystemExit if the README has none)."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} block")
    start = text.index(BEGIN)
    stop = text.index(END, start) + len(END)
    path.write_text(text[:start] + block + text[stop:])


def publish(results: dict[str, Any], out: Path = RESULTS, readme: bool = True) -> str:
    """Write continual.md and the curves into ``out`` (and README's block); the markdown."""
    from benchmarks.continual_plots import plot_drift, plot_stages

    curves = [c for c in (plot_stages(results, out), plot_drift(results, out)) if c]
    rel = [str(Path(c).relative_to(ROOT)) if Path(c).is_relative_to(ROOT) else c for c in curves]
    md = render_markdown(results, rel)
    (out / "continual.md").write_text(md)
    if readme:
        write_readme(render_readme_block(results, rel))
        print("continual: README.md block rewritten", file=sys.stderr)
    return md


if __name__ == "__main__":
    print(publish(load_results(RESULTS / "continual.json")))
