"""Shared fixtures: a single torch thread, a small labelled stream, state comparison."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
import torch

# One thread: the suite is sized for 2 cores, and float sums then repeat bit for bit.
torch.set_num_threads(1)


def _blobs(n: int = 300, d: int = 6, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, list]:
    """Gaussian blobs: ``n`` rows of width ``d``, labels 0..classes-1, well separated."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(classes, d))
    labels = rng.integers(0, classes, size=n)
    X = centres[labels] + rng.normal(size=(n, d))
    return X, [int(k) for k in labels]


@pytest.fixture
def blobs() -> Callable[..., tuple[np.ndarray, list]]:
    """Factory for a small separable stream: ``blobs(n=300, d=6, classes=3, seed=0)``."""
    return _blobs


def _states_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when two ``state_dict``s hold the same keys, bit-identical arrays and equal values."""
    if set(a) != set(b):
        return False
    for key in a:
        va, vb = a[key], b[key]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if not (
                isinstance(va, np.ndarray)
                and isinstance(vb, np.ndarray)
                and va.dtype == vb.dtype
                and va.shape == vb.shape
                and va.tobytes() == vb.tobytes()  # bit for bit, NaN (a missing input) included
            ):
                return False
        elif va != vb:
            return False
    return True


@pytest.fixture
def states_equal() -> Callable[[Mapping[str, Any], Mapping[str, Any]], bool]:
    """Compare two ``SpelaMLP.state_dict()`` results bit for bit."""
    return _states_equal
