"""The benchmark suite: spela-stream against backprop, deep-river, River, Vowpal Wabbit and MOA.

    python -m benchmarks.suite            # full streams (make bench)
    python -m benchmarks.suite --quick    # 1,000 samples per stream, 9 learners (make bench-quick)

Every learner of ``benchmarks.learners`` runs on every stream of ``benchmarks.streams`` (the four
shared ones, in their published order; the embedded MNIST stream is byte-identical to the shared
MNIST test set, which the suite checks, so it is learned once), one pass, prequentially, each job
in a fresh process of its own (``benchmarks.loop``) with one thread, one after another, so that
every learner is timed in the same run on the same machine. Peers are installed on demand
(``benchmarks.peers``); one that cannot be installed or that fails is recorded as "not run: why".

Writes ``benchmarks/results/suite-<mode>.json`` (every figure and the machine), ``suite-<mode>.md``
(the tables), ``curve-<stream>.png`` (rolling accuracy of every learner; ``-quick`` added in
quick mode) and, in full mode, the
block of README.md between ``<!-- suite:begin -->`` and ``<!-- suite:end -->``. Progress goes to
stderr; stdout carries the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.learners import LEARNERS, Spec, spec
from benchmarks.peers import PeerUnavailable, ensure, versions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
STREAM_TITLES = {
    "optdigits": "Optdigits",
    "letter": "Letter",
    "elec2": "Elec2",
    "mnist": "MNIST test",
    "embedded": "builtin:mnist",
}
GRID = (0.003, 0.01, 0.03)  # backprop learning rates (0.1 diverges on every stream)
QUICK_LIMIT = 1000
QUICK_PEER_SECONDS = 30.0
# Quick mode: one learner of each kind that the targets name, on the first 1,000 samples.
QUICK_LEARNERS = (
    "spela 2x1024",
    "spela 2x1024 mb32",
    "backprop 2x1024",
    "deep-river MLP 2x1024",
    "River SoftmaxRegression",
    "River HoeffdingTree",
    "River kNN",
    "VW --oaa -q ff",
    "MOA kNN",
)
SPELA_DEFAULT = "spela 2x1024"
# Slow peers on long or wide streams stop after this much learning in full mode, so that the
# suite ends in well under an hour on two cores; the table says how many samples they learned.
# spela-stream and the backprop learners it is compared against always learn every sample.
PEER_SECONDS = 120.0
UNCAPPED = ("spela-stream", "torch backprop", "deep-river")
FULL_LIMITS: dict[tuple[str, str], int] = {}
README_CURVE = "letter"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- streams


def _class_indices(labels: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    index: dict[Any, int] = {}
    y = np.array([index.setdefault(v, len(index)) for v in labels], dtype=np.int64)
    return y, list(index)


def prepare_streams(
    names: Sequence[str], limit: int | None, cache: Path
) -> dict[str, dict[str, Any]]:
    """Load each stream once, write it as an ``.npz`` the jobs read, and describe it."""
    from benchmarks.streams import load_stream
    from spela_stream.datasets import load_mnist

    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == "embedded":
            X, labels = load_mnist(limit)
            ylist: list[Any] = labels.tolist()
        else:
            X, ylist = load_stream(name, limit=limit)
        y, classes = _class_indices(ylist)
        path = cache / f"{name}.npz"
        np.savez(path, X=X, y=y, n_classes=len(classes))
        out[name] = {
            "n": int(X.shape[0]),
            "d": int(X.shape[1]),
            "classes": len(classes),
            "path": str(path),
        }
    if "embedded" in out and "mnist" in out:
        a, b = np.load(out["embedded"]["path"]), np.load(out["mnist"]["path"])
        if np.array_equal(a["X"], b["X"]) and np.array_equal(a["y"], b["y"]):
            out["embedded"]["same_as"] = "mnist"
    return out


def available_streams(requested: Sequence[str]) -> list[str]:
    """The requested streams whose data is here (the embedded one always is)."""
    from benchmarks.streams import DATA_DIR

    if DATA_DIR.is_dir():
        return list(requested)
    log(f"suite: no shared data at {DATA_DIR} (set SPELA_DATA); only the embedded stream runs")
    return [s for s in requested if s == "embedded"]


# ---------------------------------------------------------------------------- jobs


def plan(
    streams: dict[str, dict[str, Any]],
    learners: Sequence[Spec],
    limits: dict[tuple[str, str], int],
    window: int,
    grid: Sequence[float],
    peer_seconds: float | None = None,
) -> list[dict[str, Any]]:
    """One job per (stream, learner, backprop learning rate)."""
    jobs = []
    for name, info in streams.items():
        if info.get("same_as"):
            continue
        for s in learners:
            extras: list[dict[str, Any] | None] = (
                [{"lr": lr} for lr in grid] if s.family == "torch backprop" else [None]
            )
            for extra in extras:
                jobs.append(
                    {
                        "stream": name,
                        "learner": s.name,
                        "extra": extra,
                        "limit": limits.get((s.name, name)),
                        "window": window,
                        "data": info["path"],
                        "max_seconds": None if s.family in UNCAPPED else peer_seconds,
                        "estimate_s": _estimate(s, info, peer_seconds),
                    }
                )
    # longest first, so that with --jobs N the long ones do not end the run alone
    return sorted(jobs, key=lambda j: -j["estimate_s"])


# rough seconds per sample on one quiet core, to order the jobs (not a figure of the suite)
_COST = {
    "spela 2x1024": 6e-4,
    "spela 1x1024": 3e-4,
    "backprop 2x1024": 1.5e-3,
    "backprop 1x1024": 4e-4,
    "deep-river MLP 2x1024": 3e-3,
    "deep-river MLP 1x1024": 1.5e-3,
}


def _estimate(s: Spec, info: dict[str, Any], peer_seconds: float | None) -> float:
    per_sample = _COST.get(s.name, 1e-4 if s.batch > 1 else 2e-3)
    estimate = info["n"] * per_sample * (2.0 if info["d"] > 100 else 1.0)
    return min(estimate, peer_seconds) if s.family not in UNCAPPED and peer_seconds else estimate


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    # MOA runs in a JVM inside the job's process: one processor, serial garbage collection.
    env["JAVA_TOOL_OPTIONS"] = "-XX:ActiveProcessorCount=1 -XX:+UseSerialGC"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_one(job: dict[str, Any], python: str, timeout: float, tmp: Path) -> dict[str, Any]:
    """Run a job in a fresh process; its figures, or a "not run" record saying why."""
    tag = f"{job['stream']}-{job['learner']}-{json.dumps(job['extra'])}".replace(" ", "_")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
    job_file, out_file = tmp / f"{safe}.job.json", tmp / f"{safe}.out.json"
    job_file.write_text(json.dumps(job))
    base = {k: job[k] for k in ("stream", "learner", "extra", "limit")}
    cached = Path(job["cache"]) / f"{safe}.out.json" if job.get("cache") else None
    if cached is not None and job.get("resume") and cached.exists():
        return {**base, "status": "ok", "resumed": True, **json.loads(cached.read_text())}
    if job.get("only_cached"):
        return {
            **base,
            "status": "not run",
            "reason": "unfinished when the run was cut (machine loaded)",
        }
    try:
        res = subprocess.run(
            [python, "-m", "benchmarks.loop", str(job_file), str(out_file)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=_child_env(),
        )
    except subprocess.TimeoutExpired:
        return {**base, "status": "not run", "reason": f"over the job limit of {timeout:.0f} s"}
    if res.returncode != 0 or not out_file.exists():
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit {res.returncode}"
        return {**base, "status": "not run", "reason": f"failed: {why[:300]}"}
    figures = out_file.read_text()
    if cached is not None:  # a later --resume starts from here
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(figures)
    return {**base, "status": "ok", **json.loads(figures)}


def execute(
    jobs: list[dict[str, Any]],
    pythons: dict[str, str],
    unavailable: dict[str, str],
    parallel: int,
    timeout: float,
) -> list[dict[str, Any]]:
    """Run every job (``parallel`` at a time: 1 for throughput figures that compare)."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    started = time.perf_counter()
    done = 0

    def work(i: int) -> None:
        nonlocal done
        job = jobs[i]
        peer = spec(job["learner"]).peer
        if peer is not None and peer in unavailable:
            r = {k: job[k] for k in ("stream", "learner", "extra", "limit")}
            r.update(status="not run", reason=unavailable[peer])
        else:
            python = pythons.get(peer or "", sys.executable)
            t0 = time.perf_counter()
            r = run_one(job, python, timeout, Path(job["tmp"]))
            r["job_wall_s"] = time.perf_counter() - t0
        results[i] = r
        done += 1
        what = f"{job['stream']} / {job['learner']}" + (
            f" lr {job['extra']['lr']}" if job["extra"] and "lr" in job["extra"] else ""
        )
        if r["status"] == "ok":
            figs = f"acc {r['accuracy']:.4f}, {r['samples_per_s']:.0f} samples/s"
        else:
            figs = f"not run: {r['reason']}"
        elapsed = time.perf_counter() - started
        log(f"[{done}/{len(jobs)} {elapsed:.0f}s] {what}: {figs}")

    if parallel <= 1:
        for i in range(len(jobs)):
            work(i)
    else:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(work, range(len(jobs))))
    return [r for r in results if r is not None]


def mark_best(results: list[dict[str, Any]]) -> None:
    """Flag, per stream and learner, the result shown in the tables: the best learning rate of a
    backprop grid, the only result otherwise."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["stream"], r["learner"]), []).append(r)
    for rows in groups.values():
        ok = [r for r in rows if r["status"] == "ok"]
        best = max(ok, key=lambda r: r["accuracy"]) if ok else rows[0]
        for r in rows:
            r["shown"] = r is best
        if len(rows) > 1 and len(ok) < len(rows):  # a grid cut short: say which rates ran
            best["grid_ran"] = [r["extra"]["lr"] for r in ok]


# ---------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _java() -> str:
    try:
        res = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = res.stderr.strip().splitlines()
    return lines[0] if lines else "unknown"


def machine(pythons: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads_per_learner": 1,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "java": _java(),
        "load_average_start": list(os.getloadavg()),
        "versions": versions(sys.executable, ("numpy", "torch", "river", "spela-stream")),
    }
    for peer in ("vowpalwabbit", "capymoa"):
        if peer in pythons:
            info["versions"].update(versions(pythons[peer], (peer,)))
    if "deep-river" in pythons:
        info["deep_river_venv_versions"] = versions(
            pythons["deep-river"], ("deep-river", "river", "torch")
        )
    return info


# ---------------------------------------------------------------------------- rendering


def _shown(report: dict[str, Any], stream: str) -> list[dict[str, Any]]:
    order = {s["name"]: i for i, s in enumerate(report["learners"])}
    rows = [r for r in report["results"] if r["stream"] == stream and r.get("shown")]
    return sorted(rows, key=lambda r: order.get(r["learner"], 99))


def _rate(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 10_000 else f"{v:,.0f}"


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "n/a"
    return f"{nbytes / 2**20:.1f} MB" if nbytes >= 2**20 else f"{nbytes / 1024:.0f} kB"


def _note(r: dict[str, Any], n: int) -> str:
    parts = []
    if r.get("extra") and "lr" in r["extra"]:
        ran = r.get("grid_ran")
        parts.append(
            f"lr {r['extra']['lr']:g}"
            + (f", best of {'/'.join(f'{v:g}' for v in ran)} only" if ran else "")
        )
    if r.get("status") == "ok" and r["n"] < n:
        parts.append(f"first {r['n']:,} samples only")
    return ", ".join(parts)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for the defaults, each met or missed, with the figures."""
    streams = [s for s in report["streams"] if not report["streams"][s].get("same_as")]
    rows: list[dict[str, Any]] = []
    river_wins = 0
    river_streams = 0

    def best(stream: str, family: str, shape: str | None = None) -> dict[str, Any] | None:
        cands = [
            r
            for r in _shown(report, stream)
            if r["status"] == "ok"
            and spec(r["learner"]).family == family
            and (shape is None or r["learner"].endswith(shape))
        ]
        return max(cands, key=lambda r: r["accuracy"]) if cands else None

    def who(r: dict[str, Any]) -> str:  # a peer cut short is compared over its prefix: say so
        n = report["streams"][r["stream"]]["n"]
        return r["learner"] + (f", first {r['n']:,} samples" if r["n"] < n else "")

    for stream in streams:
        mine = next((r for r in _shown(report, stream) if r["learner"] == SPELA_DEFAULT), None)
        if mine is None or mine["status"] != "ok":
            continue
        for family in ("torch backprop", "deep-river"):
            same = best(stream, family, "2x1024")  # the "same shape"
            if same is None:
                continue
            rows.append(
                {
                    "target": f"accuracy >= {family} (same shape)",
                    "stream": stream,
                    "spela": mine["accuracy"],
                    "other": same["accuracy"],
                    "who": who(same),
                    "met": mine["accuracy"] >= same["accuracy"],
                }
            )
            ratio = mine["samples_per_s"] / same["samples_per_s"]
            rows.append(
                {
                    "target": f"samples/s >= 1.5x {family} (same shape)",
                    "stream": stream,
                    "spela": mine["samples_per_s"],
                    "other": same["samples_per_s"],
                    "who": who(same),
                    "ratio": ratio,
                    "met": ratio >= 1.5,
                }
            )
            other = best(stream, family)
            if other is not None and other is not same:  # not a target: the other shape won
                rows.append(
                    {
                        "target": f"(also) accuracy >= best {family} of any shape",
                        "stream": stream,
                        "spela": mine["accuracy"],
                        "other": other["accuracy"],
                        "who": who(other),
                        "met": mine["accuracy"] >= other["accuracy"],
                    }
                )
        river = best(stream, "River")
        if river is not None:
            river_streams += 1
            river_wins += mine["accuracy"] >= river["accuracy"]
            rows.append(
                {
                    "target": "accuracy >= best River model",
                    "stream": stream,
                    "spela": mine["accuracy"],
                    "other": river["accuracy"],
                    "who": who(river),
                    "met": mine["accuracy"] >= river["accuracy"],
                }
            )
            for r in _shown(report, stream):
                if r["status"] != "ok" or spec(r["learner"]).family != "River":
                    continue
                if mine["accuracy"] >= r["accuracy"]:
                    rows.append(
                        {
                            "target": "faster than each River model it beats on accuracy",
                            "stream": stream,
                            "spela": mine["samples_per_s"],
                            "other": r["samples_per_s"],
                            "who": who(r),
                            "met": mine["samples_per_s"] >= r["samples_per_s"],
                        }
                    )
    if river_streams:
        rows.append(
            {
                "target": "accuracy >= best River model on at least 3 of 4 streams",
                "stream": "all",
                "spela": river_wins,
                "other": river_streams,
                "who": "",
                "met": river_wins >= min(3, river_streams),
            }
        )
    return rows


def _target_line(t: dict[str, Any]) -> str:
    mark = "met" if t["met"] else "**missed**"
    if t["stream"] == "all":
        return f"- {t['target']}: {mark} ({t['spela']} of {t['other']})"
    title = STREAM_TITLES.get(t["stream"], t["stream"])
    if "samples/s" in t["target"] or "faster" in t["target"]:
        extra = f" = {t['ratio']:.2f}x" if "ratio" in t else ""
        figs = f"{_rate(t['spela'])} vs {_rate(t['other'])}/s{extra}"
    else:
        gap = t["spela"] - t["other"]
        figs = f"{t['spela']:.4f} vs {t['other']:.4f} ({gap * 100:+.1f} points)"
    return f"- {title}, {t['target']} ({t['who']}): {mark}, {figs}"


def _header(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    load = (
        f"load average {m['load_average_start'][0]:.1f} at start, "
        f"{m.get('load_average_end', [0.0])[0]:.1f} at end"
    )
    when = (
        f"tabulated {report['finished']} from the jobs earlier runs finished (`--only-cached`)"
        if report.get("only_cached")
        else f"{report['started']} to {report['finished']} ({report['wall_s'] / 60:.0f} min), "
        f"jobs run {report['parallel']} at a time"
    )
    earlier = report.get("updated_from")
    if earlier:  # an --update run: its own rows, then where the others came from
        fresh = report["updated_learners"]
        span = (
            earlier["finished"]
            if earlier["started"] == earlier["finished"]
            else f"{earlier['started']} to {earlier['finished']}"
        )
        when = (
            f"rows of {', '.join(fresh)} run {report['started']} to {report['finished']} "
            f"({report['wall_s'] / 60:.0f} min, {report['parallel']} at a time, `--update`; "
            f"load average {m['load_average_start'][0]:.1f} at start, "
            f"{m.get('load_average_end', [0.0])[0]:.1f} at end); every other row from earlier "
            f"runs, {span}"
            + (f" on {earlier['cpu']}" if earlier.get("cpu") not in ("", m["cpu"]) else "")
            + (f" ({earlier['load_note'].rstrip('.')})" if earlier.get("load_note") else "")
        )
        load = ""
    return [
        f"Mode **{report['mode']}**, {when}. {m['cpu']}, {m['cores']} cores, one thread per "
        f"learner"
        + (". " if report.get("only_cached") or not load else f"; {load}. ")
        + (
            f"River, VW and MOA learners stop after {report['peer_seconds']:.0f} s of learning "
            "(their figures then cover the samples they learned, as noted). "
            if report.get("peer_seconds")
            else ""
        )
        + (report.get("load_note") or ""),
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """Every table of a run: per stream all learners, then SPELA's own figures, then targets."""
    lines = [f"# Benchmark suite ({report['mode']})", ""] + _header(report) + [""]
    v = report["machine"]["versions"]
    dr = report["machine"].get("deep_river_venv_versions", {})
    lines.append(
        "Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + (f"; deep-river venv: {', '.join(f'{k} {x}' for k, x in dr.items())}" if dr else "")
        + f"; {report['machine']['java']}."
    )
    lines.append("")
    for stream, info in report["streams"].items():
        title = STREAM_TITLES.get(stream, stream)
        if info.get("same_as"):
            lines += [
                f"## {title}",
                "",
                f"Byte-identical to the shared {STREAM_TITLES[info['same_as']]} stream "
                "(checked by the suite): its figures are that stream's.",
                "",
            ]
            continue
        lines += [
            f"## {title} (n {info['n']:,}, {info['d']} features, {info['classes']} classes)",
            "",
            "| learner | accuracy | kappa | rolling (last window) | samples/s | peak RSS | "
            "model | note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in _shown(report, stream):
            if r["status"] != "ok":
                lines.append(f"| {r['learner']} | not run: {r['reason']} | | | | | | |")
                continue
            lines.append(
                f"| {r['learner']} | {r['accuracy']:.4f} | {r['kappa']:.4f} | "
                f"{r['final_rolling']:.4f} | {_rate(r['samples_per_s'])} | "
                f"{r['peak_rss_mb']:.0f} MB | {_size(r['model_bytes'])} | {_note(r, info['n'])} |"
            )
        lines.append("")
    lines += [
        "## spela-stream: layers, early exit, checkpoints",
        "",
        "| stream | learner | per-layer accuracy | early exit: stopped at layer 1 / accuracy / "
        "predict time saved | checkpoint save (median) / share of a run at one per 60 s |",
        "|---|---|---|---|---|",
    ]
    for stream in report["streams"]:
        for r in _shown(report, stream):
            if r["status"] != "ok" or spec(r["learner"]).family != "spela-stream":
                continue
            ee = r.get("early_exit")
            ee_txt = (
                f"{ee['stopped_early']:.0%} / {ee['accuracy']:.4f} / {ee['predict_time_saved']:.0%}"
                if ee
                else "one layer"
            )
            ck = r.get("checkpoint")
            ck_txt = (
                f"{ck['save_s_median'] * 1000:.0f} ms / {ck['share_at_default_interval']:.2%}"
                if ck
                else ""
            )
            layers = " / ".join(f"{a:.4f}" for a in r["layer_accuracy"])
            lines.append(
                f"| {STREAM_TITLES.get(stream, stream)} | {r['learner']} | {layers} | {ee_txt} "
                f"| {ck_txt} |"
            )
    lines += ["", "## Targets for spela-stream's defaults", ""]
    lines += [_target_line(t) for t in report["targets"]] or ["- (no SPELA results)"]
    lines += ["", "## Configurations", ""]
    for s in report["learners"]:
        lines.append(f"- **{s['name']}** ({s['family']}): {s['config']}")
    return "\n".join(lines) + "\n"


def render_readme_block(report: dict[str, Any], source: str) -> str:
    """The README's results block: accuracy and speed of every learner on every stream, the
    targets, and one learning curve; generated from ``source`` (a suite JSON)."""
    streams = [s for s in report["streams"] if not report["streams"][s].get("same_as")]
    titles = [STREAM_TITLES.get(s, s) for s in streams]
    lines = [
        BEGIN,
        f"<!-- generated by `python -m benchmarks.suite` from {source}; do not edit by hand -->",
        "",
        *_header(report),
        "",
        "Each cell: prequential accuracy over the whole stream, then samples per second "
        "(learning and predicting).",
        "",
        "| learner | " + " | ".join(titles) + " |",
        "|---|" + "---|" * len(streams),
    ]
    for s in report["learners"]:
        cells = []
        for stream in streams:
            r = next((x for x in _shown(report, stream) if x["learner"] == s["name"]), None)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(f"not run: {r['reason']}")
            else:
                note = _note(r, report["streams"][stream]["n"])
                cells.append(
                    f"{r['accuracy']:.4f} · {_rate(r['samples_per_s'])}/s"
                    + (f" ({note})" if note else "")
                )
        lines.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Targets for the defaults (`spela 2x1024`):", ""]
    lines += [_target_line(t) for t in report["targets"]]
    curve = report.get("readme_curve")
    if curve:
        lines += ["", f"![rolling accuracy of every learner on {curve}]({curve})"]
    lines.append(END)
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """The suite's block of a README (markers included); ValueError if it has none."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"README has no {BEGIN} ... {END} block")
    start = text.index(BEGIN)
    return text[start : text.index(END, start) + len(END)]


def write_readme(block: str, path: Path = README) -> None:
    text = path.read_text()
    path.write_text(text.replace(readme_block(text), block))


def plot_curves(report: dict[str, Any], outdir: Path) -> list[str]:
    """One PNG per stream: the rolling accuracy of every learner that ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    cmap = plt.get_cmap("tab20")
    for stream, info in report["streams"].items():
        if info.get("same_as"):
            continue
        rows = [r for r in _shown(report, stream) if r["status"] == "ok"]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(10, 5.2), dpi=80)
        for i, r in enumerate(rows):
            is_spela = spec(r["learner"]).family == "spela-stream"
            ax.plot(
                r["curve"]["samples"],
                r["curve"]["rolling"],
                lw=2.2 if r["learner"] == SPELA_DEFAULT else (1.4 if is_spela else 1.0),
                color="black" if r["learner"] == SPELA_DEFAULT else cmap(i % 20),
                label=f"{r['learner']} ({r['accuracy']:.3f})",
            )
        ax.set_title(
            f"{STREAM_TITLES.get(stream, stream)}: rolling prequential accuracy "
            f"(window {report['window']})"
        )
        ax.set_xlabel("samples")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
        fig.tight_layout()
        suffix = "" if report["mode"] == "full" else f"-{report['mode']}"
        path = outdir / f"curve-{stream}{suffix}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
    return written


# ---------------------------------------------------------------------------- main


def _previous(path: Path) -> dict[str, Any]:
    """The report an ``--update`` run refreshes: this mode's last JSON, which must exist."""
    if not path.exists():
        raise SystemExit(f"suite: --update needs {path}: run the suite in this mode once first")
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def _provenance(previous: dict[str, Any]) -> dict[str, Any]:
    """What an updated report keeps of the run(s) its other rows came from."""
    earlier = previous.get("updated_from") or {}
    m = previous["machine"]
    return {
        "started": earlier.get("started", previous["started"]),
        "finished": earlier.get("finished", previous["finished"]),
        "load_average_start": earlier.get("load_average_start", m["load_average_start"]),
        "load_note": earlier.get("load_note", previous.get("load_note") or ""),
        "cpu": earlier.get("cpu", m.get("cpu", "")),
    }


def _merge(
    previous: dict[str, Any],
    results: list[dict[str, Any]],
    learners: Sequence[Spec],
    stream_info: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
    """``results`` in place of the previous report's rows of the same stream and learner; the
    learners and streams of both, the previous order first."""
    fresh = {(r["stream"], r["learner"]) for r in results}
    kept = [r for r in previous["results"] if (r["stream"], r["learner"]) not in fresh]
    for r in kept:
        r.setdefault("run", previous["started"])
    names = [x["name"] for x in previous["learners"]]
    order = names + [s.name for s in learners if s.name not in names]
    by_name = {s.name: s for s in learners}
    merged = [by_name.get(n) or spec(n) for n in order]
    streams = dict(previous["streams"]) | stream_info
    return kept + results, merged, streams


def run_suite(
    *,
    mode: str,
    streams: Sequence[str],
    learners: Sequence[Spec],
    limit: int | None,
    limits: dict[tuple[str, str], int],
    window: int,
    grid: Sequence[float],
    parallel: int = 1,
    timeout: float = 1800.0,
    install: bool = True,
    outdir: Path = RESULTS,
    load_note: str = "",
    peer_seconds: float | None = None,
    resume: bool = False,
    only_cached: bool = False,
    update: bool = False,
) -> dict[str, Any]:
    """Run the suite and write its JSON, markdown and curves into ``outdir``; the report.

    With ``update`` the jobs run replace their rows (same stream and learner) in the report this
    mode last wrote, and every other row is kept from the run that produced it: how to refresh
    spela-stream's rows after a change to its defaults without the hours the peers take (their
    figures do not depend on this code). The report then says which rows came from which run.
    """
    previous = _previous(outdir / f"suite-{mode}.json") if update else None
    t_start = time.perf_counter()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pythons: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for peer in dict.fromkeys(s.peer for s in learners if s.peer):
        try:
            pythons[peer] = ensure(peer, install=install)
        except (PeerUnavailable, OSError, subprocess.SubprocessError) as exc:
            unavailable[peer] = f"{peer} unavailable: {exc}"
            log(f"suite: {unavailable[peer]}")
    info = machine(pythons)
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spela-suite-") as tmp:
        stream_info = prepare_streams(streams, limit, Path(tmp))
        jobs = plan(stream_info, learners, limits, window, grid, peer_seconds)
        for job in jobs:
            job.update(
                tmp=tmp,
                cache=str(outdir / f".cache-{mode}"),
                resume=resume or only_cached,
                only_cached=only_cached,
            )
        log(f"suite: {len(jobs)} jobs on {', '.join(stream_info)}")
        results = execute(jobs, pythons, unavailable, parallel, timeout)
    for r in results:
        r.setdefault("run", started)
    fresh_rows = list(results)
    if previous is not None:
        results, learners, stream_info = _merge(previous, results, learners, stream_info)
    stream_order = {name: i for i, name in enumerate(stream_info)}
    learner_order = {s.name: i for i, s in enumerate(learners)}
    results.sort(
        key=lambda r: (
            stream_order.get(r["stream"], 99),
            learner_order.get(r["learner"], 99),
            (r.get("extra") or {}).get("lr", 0.0),
        )
    )
    mark_best(results)
    for s in stream_info.values():
        s.pop("path", None)
    info["load_average_end"] = list(os.getloadavg())
    report: dict[str, Any] = {
        "format": "spela-stream.suite/1",
        "mode": mode,
        "started": started,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.perf_counter() - t_start,
        "parallel": parallel,
        "window": window,
        "limit": limit,
        "peer_seconds": peer_seconds,
        "load_note": load_note,
        "resumed_jobs": sum(bool(r.get("resumed")) for r in results),
        "only_cached": only_cached,
        "machine": info,
        "updated_from": None if previous is None else _provenance(previous),
        # named, not told by the rows' run times: those have a minute's resolution
        "updated_learners": None
        if previous is None
        else sorted({r["learner"] for r in fresh_rows}),
        "streams": stream_info,
        "learners": [
            {"name": s.name, "family": s.family, "config": s.config, "batch": s.batch}
            for s in learners
        ],
        "backprop_grid": list(grid),
        "unavailable": unavailable,
        "results": results,
    }
    report["targets"] = targets(report)
    curves = plot_curves(report, outdir)
    wanted = [c for c in curves if f"curve-{README_CURVE}" in c]
    report["readme_curve"] = wanted[0] if wanted else (curves[0] if curves else None)
    (outdir / f"suite-{mode}.json").write_text(json.dumps(report, indent=1) + "\n")
    (outdir / f"suite-{mode}.md").write_text(render_markdown(report))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"first {QUICK_LIMIT:,} samples of each stream, {len(QUICK_LEARNERS)} learners",
    )
    ap.add_argument("--limit", type=int, default=None, help="first N samples of each stream")
    ap.add_argument("--streams", default="optdigits,letter,elec2,mnist,embedded")
    ap.add_argument("--learners", default="", help="comma-separated names (default: all)")
    ap.add_argument(
        "--grid",
        default=",".join(map(str, GRID)),
        help="learning rates of the backprop baselines (the best is shown)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="jobs at a time (1 for fair speed)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per job")
    ap.add_argument(
        "--peer-seconds",
        type=float,
        default=PEER_SECONDS,
        help="full mode: River, VW and MOA learners stop after this many seconds of learning",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="reuse the figures of jobs an earlier run of this mode finished (results/.cache-MODE)",
    )
    ap.add_argument(
        "--only-cached",
        action="store_true",
        help="run nothing: tabulate what an interrupted run finished, the rest as not run",
    )
    ap.add_argument(
        "--update",
        action="store_true",
        help="run only these learners/streams and replace their rows in results/suite-MODE.json, "
        "keeping every other row from the run that produced it",
    )
    ap.add_argument("--no-install", action="store_true", help="do not pip-install peers")
    ap.add_argument("--no-readme", action="store_true", help="full mode: leave README.md alone")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--load-note", default="", help="a sentence on the machine's load")
    a = ap.parse_args(argv)
    names = [n for n in a.learners.split(",") if n.strip()]
    mode = "quick" if a.quick else "full"
    if not names:
        names = list(QUICK_LEARNERS) if a.quick else [s.name for s in LEARNERS]
    learners = [spec(n.strip()) for n in names]
    streams = available_streams([s for s in a.streams.split(",") if s])
    report = run_suite(
        mode=mode,
        streams=streams,
        learners=learners,
        limit=a.limit or (QUICK_LIMIT if a.quick else None),
        limits={} if a.quick else FULL_LIMITS,
        window=200 if a.quick else 1000,
        grid=tuple(float(v) for v in a.grid.split(",")),
        parallel=a.jobs,
        timeout=a.timeout or (600.0 if a.quick else 2400.0),
        install=not a.no_install,
        outdir=a.out,
        load_note=a.load_note,
        peer_seconds=QUICK_PEER_SECONDS if a.quick else a.peer_seconds,
        resume=a.resume,
        only_cached=a.only_cached,
        update=a.update,
    )
    if mode == "full" and not a.no_readme and a.out == RESULTS:
        write_readme(render_readme_block(report, f"benchmarks/results/suite-{mode}.json"))
        log(f"suite: README.md block rewritten from benchmarks/results/suite-{mode}.json")
    print(render_markdown(report))
    log(f"suite: done in {report['wall_s'] / 60:.1f} min; results in {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
