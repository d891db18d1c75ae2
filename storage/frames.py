"""A frames run's backbone: the one kept in its config, so that ``--resume``, ``eval`` and
``predict`` embed frames the way the run learned them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spela_stream.errors import ConfigError
from spela_stream.features import BACKBONES, DEFAULT_SIZE

from .records import RunInfo


def backbone_spec(
    run: RunInfo | None, backbone: str | None = None, size: int | None = None
) -> dict[str, Any]:
    """The backbone a frames run embeds with: its own (asking another is an error), or for a new
    run (``run`` None) ``backbone`` (default: the first) at ``size`` (default: its own)."""
    asked = {"backbone": backbone, "size": size}
    if run is None:
        name = backbone or BACKBONES[0]
        return {"backbone": name, "size": size or DEFAULT_SIZE.get(name, 0)}
    saved = run.config.get("frames")
    if not isinstance(saved, Mapping):
        raise ConfigError(
            f"run {run.name!r} learned from {run.source}, not from frames through a backbone; "
            "learn a camera or images source into a new --run"
        )
    for key, value in asked.items():
        if value is not None and value != saved.get(key):
            raise ConfigError(
                f"--{key} {value}: run {run.name!r} embeds frames with {saved['backbone']} at "
                f"{saved['size']} px, and a run keeps its backbone (drop --{key}, or use a new "
                "--run)"
            )
    return dict(saved)
