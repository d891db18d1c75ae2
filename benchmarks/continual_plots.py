"""PNG curves of the continual benchmark (matplotlib's Agg backend, as the suite's plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.continual_report import CI_TITLES, DRIFT_TITLES, LEARNER_TITLES, rows


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(name: str, i: int, cmap: Any) -> dict[str, Any]:
    """One colour per learner across every panel (the roster's order), spela in black."""
    if name == "spela":
        return {"color": "black", "lw": 2.2}
    order = list(LEARNER_TITLES)
    k = order.index(name) if name in order else len(order) + i
    return {"color": cmap(k % 10), "lw": 1.2 if name.startswith("spela") else 1.0}


def plot_stages(results: dict[str, Any], out: Path) -> str | None:
    """Held-out accuracy on the classes seen so far, after every stage, per part and learner."""
    parts = [p for p in CI_TITLES if p in results["parts"]]
    if not parts:
        return None
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 3.8), dpi=80, squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        for i, (name, r) in enumerate(rows(results, part).items()):
            m = np.array(r["stage_matrix"])  # (stages, classes)
            per = int(np.ceil(m.shape[1] / m.shape[0]))
            seen = [m[s, : min(m.shape[1], (s + 1) * per)].mean() for s in range(m.shape[0])]
            ax.plot(range(1, len(seen) + 1), seen, marker=".", label=LEARNER_TITLES.get(name, name),
                    **_style(name, i, cmap))  # fmt: skip
        ax.set_title(CI_TITLES[part], fontsize=9)
        ax.set_xlabel("stage")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out acc., classes so far")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab, strict=True):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    ncol = max(2, min(5, len(parts) + 1))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * (1 + 9 // ncol), 1, 1))
    path = out / "continual-stages.png"
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def plot_drift(results: dict[str, Any], out: Path) -> str | None:
    """Rolling prequential accuracy (500 samples) on every drift stream, the change marked."""
    parts = [p for p in DRIFT_TITLES if p in results["parts"]]
    if not parts:
        return None
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    cols = min(3, len(parts))
    rows_n = int(np.ceil(len(parts) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.4 * rows_n), dpi=80,
                             squeeze=False)  # fmt: skip
    labels: dict[str, Any] = {}
    for k, part in enumerate(parts):
        ax = axes[k // cols][k % cols]
        part_rows = rows(results, part)
        for i, (name, r) in enumerate(part_rows.items()):
            (line,) = ax.plot(r["curve"]["samples"], r["curve"]["rolling"],
                              **_style(name, i, cmap))  # fmt: skip
            labels.setdefault(LEARNER_TITLES.get(name, name), line)
        first = next(iter(part_rows.values()))
        n = first["n"]
        if "recovery" in first:
            ax.axvline(n // 2, color="grey", ls="--", lw=0.8)
        elif "blocks" in first:
            block = n // len(first["blocks"])
            for b in range(1, len(first["blocks"])):
                ax.axvline(b * block, color="grey", ls=":", lw=0.6)
        ax.set_title(DRIFT_TITLES[part], fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for k in range(len(parts), rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=5, fontsize=8,
               frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05 + 0.05 / rows_n, 1, 1))
    path = out / "continual-drift.png"
    fig.savefig(path)
    plt.close(fig)
    return str(path)
