"""A fixed non-linear expansion of low-dimensional inputs: random Fourier features.

SPELA's first layer must make the classes separable by cosine to fixed class vectors on its own,
from its own local loss; on a low-dimensional, non-linear tabular stream (RandomRBF's 10 features,
a mixture of Gaussian centroids) it fits less well than a backprop network does (issue 11:
prequential 0.818 against 0.903). Random Fourier features (Rahimi and Recht 2007) of the
standardised input, ``sqrt(2) cos(z Omega + phase)`` with ``Omega ~ N(0, 2 gamma / d)``, give the
first layer an approximately Gaussian-kernel view of the input for a fixed price; they are drawn
once from the model's seed and never trained. The standardised input itself is kept next to them
(``[features | z]``), so that a linear rule stays as easy to learn as before, and dict features
that appear later are appended as plain columns.

>>> f = FourierFeatures(n_features=3, n_out=4, seed=0)
>>> f.transform(np.zeros((1, 3))).shape
(1, 7)
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ModelError

FOURIER_MAX_FEATURES = 32  # inputs of at most this many features are expanded
FOURIER_GAMMA = 1.0  # kernel width on standardised inputs: exp(-gamma |z - z'|^2 / d)


class FourierFeatures:
    """``[sqrt(2) cos(z[:, :d] Omega + phase) | z]`` for a standardised batch ``z`` (B, >= d)."""

    def __init__(
        self, n_features: int, n_out: int, seed: int = 0, gamma: float = FOURIER_GAMMA
    ) -> None:
        rng = np.random.default_rng(seed)
        scale = math.sqrt(2.0 * gamma / n_features)
        self.omega = rng.normal(size=(n_features, n_out)) * scale  # (d, D)
        self.phase = rng.uniform(0.0, 2.0 * math.pi, size=n_out)  # (D,)

    @property
    def n_features(self) -> int:
        """Input features the expansion reads (later ones pass through)."""
        return int(self.omega.shape[0])

    @property
    def n_out(self) -> int:
        """Fourier features added in front of the input."""
        return int(self.omega.shape[1])

    def transform(self, z: np.ndarray) -> np.ndarray:
        """(B, D + d') for z (B, d'), d' >= d: the features, then z unchanged."""
        d = self.n_features
        feats = np.cos(z[:, :d] @ self.omega + self.phase) * math.sqrt(2.0)  # (B, D), var 1
        return np.concatenate([feats, z], axis=1)

    def nbytes(self) -> int:
        return int(self.omega.nbytes + self.phase.nbytes)

    def state(self) -> dict[str, np.ndarray]:
        return {"omega": self.omega.copy(), "phase": self.phase.copy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> FourierFeatures:
        """Rebuild from ``state`` (the drawn matrices, not the seed: exact on every machine)."""
        omega = np.asarray(state["omega"], dtype=np.float64)
        phase = np.asarray(state["phase"], dtype=np.float64)
        if omega.ndim != 2 or phase.shape != (omega.shape[1],):
            raise ModelError(
                f"expansion state has omega {omega.shape} and phase {phase.shape}; "
                "expected (d, D) and (D,)"
            )
        out = cls.__new__(cls)
        out.omega, out.phase = omega.copy(), phase.copy()
        return out
