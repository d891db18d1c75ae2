"""Benchmark of the learning core against the baselines the core issue names.

Prequential (predict, then learn, one pass, in stream order) on the four shared streams, with
spela-stream's default hyper-parameters on every stream; a per-sample backprop MLP of the same
shape (torch, SGD, softmax output, best learning rate of a small grid, standardised input); River's
SoftmaxRegression on standardised input. Then throughput, the memory-bandwidth bound of a rank-1
update, peak memory learning vs predicting, and learn_many against learn_one.

    python -m benchmarks.core_bench            # full streams (about 30 minutes on 2 cores)
    python -m benchmarks.core_bench --quick    # first 2,000 samples of each stream
    python -m benchmarks.core_bench --per-sample   # predict_learn_one per shape, both paths,
                                                   # and River beside 8-64-64
    python -m benchmarks.core_bench --per-sample --small --no-save   # 8-64-64 alone, no json

Figures go to stdout as markdown and to benchmarks/results/core_bench.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.baselines import best_backprop, prequential_river_softmax, throughput_backprop
from benchmarks.streams import STREAMS, load_stream
from spela_stream import SpelaMLP
from spela_stream.prequential import prequential

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prequential_spela(X: np.ndarray, y: list[Any], **params: Any) -> dict[str, Any]:
    """One pass of the package's own prequential loop; accuracy over every sample (the first,
    which has nothing to predict from, counts as wrong, as it does for the baselines)."""
    model = SpelaMLP(**params)
    last = list(prequential(model, zip(X, y, strict=True), every=len(y)))[-1]
    share = last.scored / last.samples
    return {
        "accuracy": last.accuracy * share,
        "layer_accuracy": [round(a * share, 4) for a in last.layer_accuracy],
        "samples_per_s": last.samples_per_s,
        "config": model.config(),
    }


def accuracy_table(
    streams: list[str],
    limit: int | None,
    grid: tuple[float, ...],
    spela_params: dict[str, Any],
    spela_only: bool = False,
) -> list[dict]:
    rows = []
    for name in streams:
        X, y = load_stream(name, limit=limit)
        spela = prequential_spela(X, y, **spela_params)
        log(f"{name}: spela {spela['accuracy']:.4f} ({spela['samples_per_s']:.0f}/s)")
        if spela_only:
            print(
                f"{name} {json.dumps(spela_params)}: {spela['accuracy']:.4f} "
                f"layers {spela['layer_accuracy']}"
            )
            continue
        hidden = tuple(spela["config"]["hidden"])
        bp = best_backprop(X, y, hidden=hidden, grid=grid)
        log(f"{name}: backprop {bp['accuracy']:.4f} at lr {bp['lr']}")
        river = prequential_river_softmax(X, y)
        log(f"{name}: river softmax {river['accuracy']:.4f}")
        rows.append({"stream": name, "n": len(y), "spela": spela, "backprop": bp, "river": river})
    return rows


def _spela_learn_rate(d_in: int, hidden: tuple[int, ...], n: int, batch: int = 1) -> float:
    gen = np.random.default_rng(0)
    X = gen.standard_normal((n, d_in)).astype(np.float32)
    y = gen.integers(0, 10, n).tolist()
    model = SpelaMLP(hidden=hidden)
    model.learn_many(X[:batch], y[:batch])  # build and warm up
    t0 = time.perf_counter()
    if batch == 1:
        for xi, yi in zip(X, y, strict=True):
            model.learn_one(xi, yi)
    else:
        for i in range(0, n, batch):
            model.learn_many(X[i : i + batch], y[i : i + batch])
    return n / (time.perf_counter() - t0)


def bandwidth_bound(
    d_in: int, hidden: tuple[int, ...], reps: int = 200, trials: int = 5
) -> dict[str, float]:
    """Time the memory traffic a per-sample SPELA step cannot avoid, on the same matrices: one
    read of W for the forward product and one read+write of W for the rank-1 update (in torch
    ops: for small shapes, whose weights sit in cache, the ops' dispatch dominates it)."""
    widths = (d_in, *hidden)
    mats = [torch.randn(widths[i + 1], widths[i]) for i in range(len(hidden))]
    vecs = [torch.randn(w) for w in widths[:-1]]
    outs = [torch.randn(w) for w in widths[1:]]
    for _ in range(10):
        for w, v, o in zip(mats, vecs, outs, strict=True):
            torch.mv(w, v)
            w.addr_(o, v, alpha=1e-9)
    rw = rd = math.inf
    for _ in range(trials):  # the best of a few: a floor, not an average (the first trial of
        t0 = time.perf_counter()  # a process measured 147 us on 8-64-64 where later ones, 22)
        for _ in range(reps):
            for w in mats:
                w.add_(1e-9)  # pure streaming read+write of the matrix
        rw = min(rw, (time.perf_counter() - t0) / reps)
        t0 = time.perf_counter()
        for _ in range(reps):
            for w, v in zip(mats, vecs, strict=True):
                torch.mv(w, v)
        rd = min(rd, (time.perf_counter() - t0) / reps)
    nbytes = sum(w.numel() * 4 for w in mats)
    return {
        "weight_bytes": nbytes,
        "read_write_s": rw,
        "read_s": rd,
        "bound_samples_per_s": 1.0 / (rw + rd),
        "stream_gb_per_s": 3 * nbytes / (rw + rd) / 1e9,
    }


PER_SAMPLE_SHAPES = ((8, (64, 64)), (8, (256, 256)), (8, (1024, 1024)), (784, (1024, 1024)))


def _per_sample_us(d_in: int, hidden: tuple[int, ...], n: int, compiled: bool) -> float:
    """Microseconds per ``predict_learn_one`` (the default model of that shape, 10 classes), the
    best of three passes over n samples after a warm-up (the compiled kernels load then)."""
    gen = np.random.default_rng(0)
    X = gen.standard_normal((n, d_in))
    y = gen.integers(0, 10, n).tolist()
    model = SpelaMLP(hidden=hidden, compiled=compiled)
    for xi, yi in zip(X[:50], y[:50], strict=True):
        model.predict_learn_one(xi, yi)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for xi, yi in zip(X, y, strict=True):
            model.predict_learn_one(xi, yi)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def _river_stream(d_in: int, n: int) -> tuple[list[dict[int, float]], list[int]]:
    """The per-sample stream of ``_per_sample_us`` (same seed, same values) as River's dicts."""
    gen = np.random.default_rng(0)
    X = gen.standard_normal((n, d_in))
    y = gen.integers(0, 10, n).tolist()
    return [dict(enumerate(row)) for row in X.tolist()], y


def _river_us(d_in: int, n: int) -> float:
    """Microseconds per River ``StandardScaler() | SoftmaxRegression()`` sample, predict_one then
    learn_one on the stream of ``_per_sample_us``, the best of three passes after a 50-sample
    warm-up (the dicts are built before the clock starts: River's own input)."""
    from river import linear_model, preprocessing

    X, y = _river_stream(d_in, n)
    model = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
    for xi, yi in zip(X[:50], y[:50], strict=True):
        model.predict_one(xi)
        model.learn_one(xi, yi)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for xi, yi in zip(X, y, strict=True):
            model.predict_one(xi)
            model.learn_one(xi, yi)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def _spela_dict_us(d_in: int, hidden: tuple[int, ...], n: int) -> float:
    """``_per_sample_us`` of the default path fed River's dicts of the same stream."""
    X, y = _river_stream(d_in, n)
    model = SpelaMLP(hidden=hidden)
    for xi, yi in zip(X[:50], y[:50], strict=True):
        model.predict_learn_one(xi, yi)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for xi, yi in zip(X, y, strict=True):
            model.predict_learn_one(xi, yi)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


RIVER_SHAPE = (8, (64, 64))


def per_sample_table(n: int, small: bool = False) -> list[dict[str, Any]]:
    """Per shape: us/sample on the compiled and the torch path, and the share of the
    memory-bandwidth bound (``bandwidth_bound``, the same shapes, this run) each reaches; beside
    8-64-64, River's SoftmaxRegression on the same stream and spela fed the same dicts."""
    from spela_stream import compiled as compiled_step

    rows = []
    for d_in, hidden in PER_SAMPLE_SHAPES[:1] if small else PER_SAMPLE_SHAPES:
        reps = max(20, min(200, int(2e8 / (4 * (d_in * hidden[0] + sum(hidden))))))
        bound_us = 1e6 / bandwidth_bound(d_in, hidden, reps=reps)["bound_samples_per_s"]
        row: dict[str, Any] = {"shape": [d_in, *hidden], "bound_us": bound_us}
        for path in ("torch", "compiled"):
            if path == "compiled" and not compiled_step.AVAILABLE:
                continue
            us = _per_sample_us(d_in, hidden, n, compiled=path == "compiled")
            row[f"{path}_us"] = us
            row[f"{path}_bound_pct"] = 100 * bound_us / us
        if (d_in, hidden) == RIVER_SHAPE:
            row["river_us"] = _river_us(d_in, n)
            row["spela_dict_us"] = _spela_dict_us(d_in, hidden, n)
        row["load_avg"] = os.getloadavg()[0]
        log(f"{row}")
        rows.append(row)
    return rows


def render_per_sample(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| shape | torch us/sample | compiled us/sample | speed-up | bound us | compiled % of "
        "bound | torch % of bound | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        comp = r.get("compiled_us", math.nan)
        lines.append(
            f"| {'-'.join(map(str, r['shape']))} | {r['torch_us']:.0f} | {comp:.0f} | "
            f"{r['torch_us'] / comp:.1f}x | {r['bound_us']:.0f} | "
            f"{r.get('compiled_bound_pct', math.nan):.0f}% | {r['torch_bound_pct']:.0f}% | "
            f"{r['load_avg']:.2f} |"
        )
    for r in rows:
        if "river_us" not in r:
            continue
        shape = "-".join(map(str, r["shape"]))
        default = r.get("compiled_us", r["torch_us"])
        lines += [
            "",
            f"side by side on the same {r['shape'][0]}-feature stream, predict then learn, "
            f"load avg {r['load_avg']:.2f}:",
            "",
            "| learner | input | us/sample | samples/s |",
            "|---|---|---|---|",
            f"| River StandardScaler \\| SoftmaxRegression | dict | {r['river_us']:.0f} | "
            f"{1e6 / r['river_us']:.0f} |",
            f"| spela {shape} (default path) | vector | {default:.0f} | {1e6 / default:.0f} |",
            f"| spela {shape} (default path) | dict | {r['spela_dict_us']:.0f} | "
            f"{1e6 / r['spela_dict_us']:.0f} |",
        ]
    return "\n".join(lines)


def batch_gemm_bound(d_in: int, hidden: tuple[int, ...], batch: int = 32, reps: int = 100) -> dict:
    """Time the two matrix products a learn_many step cannot avoid per layer (forward X W^T and
    update dZ^T X) on the same shapes: the compute bound of the batched path."""
    widths = (d_in, *hidden)
    mats = [torch.randn(widths[i + 1], widths[i]) for i in range(len(hidden))]
    xs = [torch.randn(batch, w) for w in widths[:-1]]
    gs = [torch.randn(batch, w) for w in widths[1:]]

    def step() -> None:
        for w, x, g in zip(mats, xs, gs, strict=True):
            torch.mm(x, w.T)
            w.addmm_(g.T, x, alpha=-1e-9)

    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    seconds = (time.perf_counter() - t0) / reps
    flops = sum(4 * batch * w.numel() for w in mats)
    return {"bound_samples_per_s": batch / seconds, "gflop_per_s": flops / seconds / 1e9}


_MEM_CHILD = r"""
import sys, numpy as np, torch
torch.set_num_threads(1)
mode, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
X = rng.standard_normal((n, 784)).astype(np.float32)
y = rng.integers(0, 10, n).tolist()
if mode.startswith("spela"):
    from spela_stream import SpelaMLP
    m = SpelaMLP(hidden=(1024, 1024))
    m.learn_one(X[0], y[0])
    m.predict_one(X[0])
    step = m.learn_one if mode == "spela_learn" else (lambda x, _y: m.predict_one(x))
else:
    from benchmarks.baselines import make_mlp
    net = make_mlp(784, (1024, 1024), 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    def step(x, label):
        xt = torch.from_numpy(x)[None, :]
        if mode == "backprop_learn":
            loss = loss_fn(net(xt), torch.tensor([label]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                net(xt).argmax()
    step(X[0], y[0])
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(key)) * 1024
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current RSS: measure the loop alone
for xi, yi in zip(X, y):
    step(xi, yi)
print(before, status("VmHWM:"), status("VmRSS:"))
"""


def peak_memory(n: int = 2000) -> dict[str, float]:
    """Peak RSS during a loop of learning vs only predicting (784-1024-1024), in a fresh process
    each; the kernel's peak counter is reset just before the loop, so the figure is the loop's."""
    out = {}
    for mode in ("spela_predict", "spela_learn", "backprop_predict", "backprop_learn"):
        res = subprocess.run(
            [sys.executable, "-c", _MEM_CHILD, mode, str(n)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        before, peak, after = (int(v) for v in res.stdout.split())
        out[f"{mode}_rss_before_mb"] = before / 2**20
        out[f"{mode}_peak_mb"] = peak / 2**20
        out[f"{mode}_rss_after_mb"] = after / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first 2,000 samples of each stream")
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--grid", default="0.003,0.01,0.03,0.1", help="backprop learning rates")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true", help="no throughput or memory figures")
    ap.add_argument("--spela", default="{}", help="JSON overrides of SpelaMLP's defaults")
    ap.add_argument(
        "--spela-only", action="store_true", help="accuracy of SPELA alone, no baselines, no speed"
    )
    ap.add_argument(
        "--per-sample",
        action="store_true",
        help="only predict_learn_one per shape, compiled and torch paths, against the bound",
    )
    ap.add_argument("--small", action="store_true", help="--per-sample: only 8-64-64 and River")
    ap.add_argument(
        "--no-save",
        action="store_true",
        help="--per-sample: print only, leave benchmarks/results alone (a loaded machine)",
    )
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.per_sample:
        rows = per_sample_table(1000 if a.quick else 3000, small=a.small)
        if not a.no_save:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "core_bench_per_sample.json").write_text(json.dumps(rows, indent=1))
        print(render_per_sample(rows))
        return
    limit = 2000 if a.quick else None
    grid = tuple(float(v) for v in a.grid.split(","))
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"1 thread",
        "defaults": SpelaMLP().config(),
    }
    if not a.skip_accuracy:
        params = json.loads(a.spela)
        if "hidden" in params:
            params["hidden"] = tuple(params["hidden"])
        if a.spela_only:
            accuracy_table(a.streams.split(","), limit, grid, params, spela_only=True)
            return
        report["accuracy"] = accuracy_table(a.streams.split(","), limit, grid, params)
    RESULTS.mkdir(exist_ok=True)
    name = "core_bench_quick" if a.quick else "core_bench"
    if a.skip_speed:
        (RESULTS / f"{name}_accuracy.json").write_text(json.dumps(report, indent=1, default=str))
        print(render(report))
        return
    shape = (1024, 1024)
    n = 1000 if a.quick else 3000
    log("throughput ...")
    spela_rates, bp_rates = [], []
    for _ in range(3):  # interleaved, so that both see the same machine state
        spela_rates.append(_spela_learn_rate(784, shape, n))
        bp_rates.append(throughput_backprop(784, shape, 10, n=n // 2))
    report["throughput"] = {
        "shape": [784, *shape],
        "spela_learn_one_per_s": max(spela_rates),
        "backprop_learn_one_per_s": max(bp_rates),
        "ratio": max(spela_rates) / max(bp_rates),
        "spela_learn_many_32_per_s": max(
            _spela_learn_rate(784, shape, n * 4, 32) for _ in range(3)
        ),
        "bandwidth": bandwidth_bound(784, shape),
        "batch_gemm": batch_gemm_bound(784, shape),
    }
    t = report["throughput"]
    t["learn_many_speedup"] = t["spela_learn_many_32_per_s"] / t["spela_learn_one_per_s"]
    t["fraction_of_bound"] = t["spela_learn_one_per_s"] / t["bandwidth"]["bound_samples_per_s"]
    log("peak memory ...")
    report["memory"] = peak_memory(1000 if a.quick else 3000)
    if a.skip_accuracy:
        name += "_speed"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
    print(render(report))


def render(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['machine']}", f"spela defaults: {json.dumps(r['defaults'])}", ""]
    if "accuracy" in r:
        lines += [
            "| stream | n | spela-stream | per layer | backprop same shape (best lr) "
            "| River SoftmaxRegression | spela /s | backprop /s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in r["accuracy"]:
            s, b, v = row["spela"], row["backprop"], row["river"]
            lines.append(
                f"| {row['stream']} | {row['n']} | {s['accuracy']:.4f} | "
                f"{' / '.join(f'{a:.3f}' for a in s['layer_accuracy'])} | "
                f"{b['accuracy']:.4f} (lr {b['lr']}) | {v['accuracy']:.4f} | "
                f"{s['samples_per_s']:.0f} | {b['samples_per_s']:.0f} |"
            )
        lines.append("")
    if "throughput" not in r:
        return "\n".join(lines)
    t = r["throughput"]
    bw = t["bandwidth"]
    lines += [
        f"learn_one {'-'.join(map(str, t['shape']))}, 1 thread: spela "
        f"{t['spela_learn_one_per_s']:.0f}/s, backprop {t['backprop_learn_one_per_s']:.0f}/s, "
        f"ratio {t['ratio']:.2f}x",
        f"bandwidth bound (read W once, read+write W once; {bw['weight_bytes'] / 1e6:.1f} MB of "
        f"weights, {bw['stream_gb_per_s']:.1f} GB/s measured): {bw['bound_samples_per_s']:.0f}/s; "
        f"spela reaches {t['fraction_of_bound']:.0%} of it",
        f"learn_many(32): {t['spela_learn_many_32_per_s']:.0f}/s = "
        f"{t['learn_many_speedup']:.1f}x learn_one per sample; its two matrix products per layer "
        f"alone (at {t['batch_gemm']['gflop_per_s']:.0f} GFLOP/s) bound it at "
        f"{t['batch_gemm']['bound_samples_per_s']:.0f}/s",
    ]
    m = r["memory"]
    for who in ("spela", "backprop"):
        parts = []
        for mode in ("predict", "learn"):
            start, peak = m[f"{who}_{mode}_rss_before_mb"], m[f"{who}_{mode}_peak_mb"]
            parts.append(f"{mode} {start:.1f} -> peak {peak:.1f} MB ({peak - start:+.1f})")
        lines.append(f"RSS over the loop, {who} 784-1024-1024: " + "; ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
