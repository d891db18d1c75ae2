"""A run's learning curve as a PNG: cumulative and rolling prequential accuracy, per layer, with
drift points marked. Drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spela_stream.errors import CheckpointError, ConfigError
from storage.records import RunInfo


def learning_curve(history: list[dict[str, Any]], run: RunInfo, output: Path) -> None:
    """Draw ``history`` (the rows a run checkpointed) into ``output``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency; this names the fix
        raise ConfigError("plot needs matplotlib: pip install matplotlib") from None
    reports = [h for h in history if h.get("kind") == "report"]
    if not reports:
        raise CheckpointError(
            f"run {run.name!r} has no metric history yet (it is written with each checkpoint)"
        )
    drifts = [h["samples"] for h in history if h.get("kind") == "drift"]
    xs = [h["samples"] for h in reports]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    ax.plot(xs, [h["accuracy"] for h in reports], color="black", lw=2, label="cumulative")
    ax.plot(xs, [h["rolling"] for h in reports], color="black", lw=1, ls="--", label="rolling")
    depth = max(len(h["layer_rolling"]) for h in reports)
    for i in range(depth):
        points = [
            (h["samples"], h["layer_rolling"][i]) for h in reports if i < len(h["layer_rolling"])
        ]
        ax.plot(*zip(*points, strict=True), lw=1, alpha=0.8, label=f"layer {i} rolling")
    for j, at in enumerate(drifts):
        ax.axvline(at, color="red", lw=0.8, alpha=0.6, label="drift (ADWIN)" if j == 0 else None)
    ax.set_xscale("log" if xs[-1] > 100 * max(xs[0], 1) else "linear")
    ax.set_ylim(0, 1)
    ax.set_xlabel("samples")
    ax.set_ylabel("prequential accuracy")
    hidden = ",".join(str(w) for w in run.config.get("hidden", []))
    ax.set_title(f"{run.name}: SPELA {hidden} on {run.source}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(output, format="png")
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write the plot: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
