"""spela_stream.features.backbone_spec and spela_stream.display.announced, used from Python."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from spela_stream.display import announced
from spela_stream.errors import ConfigError
from spela_stream.features import backbone_spec
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential
from spela_stream.sources import Sample
from spela_stream.sources.labels import FixedLabel, LabelChannel, LabelTrack, label_policy
from storage.records import RunInfo


def _run(config: dict[str, object]) -> RunInfo:
    return RunInfo(name="c", config=config, source="camera:0", created="", updated="",
                   samples=0, checkpoints=1, summary=None)  # fmt: skip


def test_backbone_spec_keeps_a_runs_own_and_refuses_another() -> None:
    run = _run({"frames": {"backbone": "b", "size": 96}})
    assert backbone_spec(run) == {"backbone": "b", "size": 96}
    assert backbone_spec(run, "b", 96) == {"backbone": "b", "size": 96}
    with pytest.raises(ConfigError, match="--size 64: run 'c' embeds frames with b at 96 px"):
        backbone_spec(run, size=64)
    with pytest.raises(ConfigError, match="not from frames"):
        backbone_spec(_run({}))


def test_announced_writes_predictions_of_unlabelled_samples_only() -> None:
    loop = Prequential(SpelaMLP(hidden=(8,), seed=0))
    x = np.zeros(4, dtype=np.float32)
    samples = [Sample(x, 1, 0, "a"), Sample(x, None, 1, "b"), Sample(x, None, 2, "c")]
    out = io.StringIO()
    for _ in loop.run(announced(samples, loop, out=out), every=100):
        pass
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["index"] for r in rows] == [1, 2]
    assert {r["kind"] for r in rows} == {"prediction"} and rows[0]["label"] == 1


def test_label_policy_takes_one_way_of_labelling(tmp_path: Path) -> None:
    assert label_policy() is None
    fixed = label_policy(label="cat")
    assert isinstance(fixed, FixedLabel) and fixed(0) == fixed(9) == "cat"
    track = tmp_path / "t.txt"
    track.write_text("0,2,a\n2,4,b\n")
    read = label_policy(labels=track)
    assert isinstance(read, LabelTrack) and [read(i) for i in range(4)] == ["a", "a", "b", "b"]
    with pytest.raises(ConfigError, match=r"^`label` and `label_port`: give one way"):
        label_policy(label="cat", label_port=0)
    with pytest.raises(ConfigError, match=r"^`label` and `labels` and `label_port`: give one way"):
        label_policy("cat", track, 0)
    notes: list[str] = []
    channel = label_policy(label_port=0, log=notes.append)
    try:
        assert isinstance(channel, LabelChannel) and channel.port > 0
        assert notes == [f"label channel on 127.0.0.1:{channel.port}: send a line NAME to teach "
                         f"NAME, - to stop (e.g. nc 127.0.0.1 {channel.port})"]  # fmt: skip
    finally:
        channel.close()
