"""A run's learning curve as a PNG: cumulative and rolling prequential accuracy, per layer, with
drift points marked; below it, when the rows carry them, per-class rolling curves (at most
``MAX_CLASS_CURVES``: those lowest at the end, where a slipping class shows). Drawn with
matplotlib's Agg backend (no display needed). ``run`` is any record with a ``name``, ``source``
and ``config`` (``storage.records.RunInfo``: ``CheckpointStore.run``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .display import NamedRun, shape_text
from .errors import CheckpointError, ConfigError

MAX_CLASS_CURVES = 10  # more lines than this are not readable in one panel


@dataclass(frozen=True)
class CurveView:
    """What to draw: the x axis (``auto``: log when the samples span 100x), a window of samples,
    which layers (None: all), and how many per-class curves (the lowest at the end)."""

    axis: str = "auto"
    start: int | None = None
    end: int | None = None
    layers: tuple[int, ...] | None = None
    classes: int = MAX_CLASS_CURVES

    def within(self, samples: int) -> bool:
        """Whether a row at ``samples`` lies in the window."""
        return (self.start is None or samples >= self.start) and (
            self.end is None or samples <= self.end
        )


def source_name(source: str) -> str:
    """How a run's source reads in a title: ``-`` is stdin."""
    return "stdin" if source == "-" else source


def learning_curve(
    history: list[dict[str, Any]], run: NamedRun, output: Path, view: CurveView | None = None
) -> None:
    """Draw ``history`` (the rows a run checkpointed) into ``output``: a point per report row,
    joined by lines (the rows are what the run kept; there is nothing between them)."""
    view = view or CurveView()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency; this names the fix
        raise ConfigError("plot needs matplotlib: pip install matplotlib") from None
    every = [h for h in history if h.get("kind") == "report"]
    if not every:
        raise CheckpointError(
            f"run {run.name!r} has no metric history yet (it is written with each checkpoint)"
        )
    reports = [h for h in every if view.within(h["samples"])]
    if not reports:
        raise ConfigError(
            f"no rows of run {run.name!r} between samples {view.start or 0} and "
            f"{view.end or 'the end'} (it has rows from {every[0]['samples']} to "
            f"{every[-1]['samples']})"
        )
    depth = max(len(h["layer_rolling"]) for h in reports)
    shown = range(depth) if view.layers is None else view.layers
    missing = [i for i in shown if i >= depth]
    if missing:
        raise ConfigError(f"layer {missing[0]}: run {run.name!r} has layers 0 to {depth - 1}")
    drifts = [
        h["samples"] for h in history if h.get("kind") == "drift" and view.within(h["samples"])
    ]
    xs = [h["samples"] for h in reports]
    per_class = [h for h in reports if h.get("class_rolling")] if view.classes else []
    if per_class:
        fig, (ax, ax_c) = plt.subplots(2, 1, figsize=(9, 8), dpi=100, sharex=True,
                                       gridspec_kw={"height_ratios": [5, 3]})  # fmt: skip
    else:
        fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    dot = {"marker": "o", "ms": 2.5}  # a dot per row: the points are the data
    ax.plot(xs, [h["accuracy"] for h in reports], color="black", lw=2, label="cumulative", **dot)
    ax.plot(xs, [h["rolling"] for h in reports], color="black", lw=1, ls="--", label="rolling")
    for i in shown:
        points = [
            (h["samples"], h["layer_rolling"][i]) for h in reports if i < len(h["layer_rolling"])
        ]
        ax.plot(*zip(*points, strict=True), lw=1, alpha=0.8, label=f"layer {i} rolling", **dot)
    for j, at in enumerate(drifts):
        ax.axvline(at, color="red", lw=0.8, alpha=0.6, label="drift (ADWIN)" if j == 0 else None)
    ax.set_xscale(axis_scale(view.axis, xs))
    ax.set_ylim(0, 1)
    ax.set_xlabel("samples")
    ax.set_ylabel("prequential accuracy")
    hidden = shape_text(run.config.get("hidden", []))
    ax.set_title(f"{run.name}: SPELA {hidden} on {source_name(run.source)}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if per_class:
        _class_panel(ax_c, per_class, view.classes)
    fig.tight_layout()
    try:
        fig.savefig(output, format="png")
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write the plot: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def axis_scale(axis: str, xs: list[int]) -> str:
    """``linear`` or ``log``; ``auto`` is log when the samples span more than 100x."""
    if axis != "auto":
        return axis
    return "log" if xs[-1] > 100 * max(xs[0], 1) else "linear"


def _class_panel(ax: Any, rows: list[dict[str, Any]], most: int) -> None:
    """Rolling accuracy per class over the rows; labels keep their type in ``[label, v]`` pairs."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for h in rows:
        for label, v in h["class_rolling"]:
            curves.setdefault(str(label), []).append((h["samples"], v))
    last = {str(label): v for label, v in rows[-1]["class_rolling"]}
    shown = sorted(curves, key=lambda c: last.get(c, 1.0))[:most]
    for c in sorted(shown):
        ax.plot(*zip(*curves[c], strict=True), lw=1, label=f"class {c}")
    f = rows[-1].get("forgetting")
    more = f" ({most} lowest of {len(curves)})" if len(curves) > len(shown) else ""
    forget = "" if f is None else f"; average forgetting now {f:.3f}"
    ax.set_title(f"rolling accuracy per class{more}{forget}", fontsize=10)
    ax.set_ylim(0, 1)
    ax.set_xlabel("samples")
    ax.set_ylabel("per-class rolling")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=7, ncol=5)
