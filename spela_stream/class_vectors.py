"""Fixed class vectors on the unit hypersphere, spread by Coulomb repulsion (Thomson problem).

Each SPELA layer owns one set. The set is generated for a *capacity* up front and grows when a
class beyond it appears: the new points repel from the old ones, which stay fixed, so vectors
already in use never move and learning goes on with no reset.

>>> cv = ClassVectors(dim=8, capacity=4, seed=0)
>>> cv.vectors.shape
(4, 8)
>>> bool(np.allclose(np.linalg.norm(cv.vectors, axis=1), 1.0))
True
>>> old = cv.vectors.copy()
>>> cv.ensure(6)
>>> bool(np.array_equal(cv.vectors[:4], old))
True
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

# The authors run 10,000 projected steps; the adaptive step usually converges in far fewer.
MAX_STEPS = 10_000
_MIN_STEP = 1e-10
_MIN_DIST = 1e-9


def _gram(points: np.ndarray) -> np.ndarray:
    """points @ points.T without BLAS: elementwise products and numpy's fixed-order pairwise
    sums give the same bits on every machine, where BLAS kernels differ by CPU."""
    out: np.ndarray = (points[:, None, :] * points[None, :, :]).sum(axis=2)
    return out


def _energy_and_grad(points: np.ndarray, n_fixed: int) -> tuple[float, np.ndarray]:
    """Coulomb energy of all pairs that involve a moving point, and its gradient on the movers."""
    gram = _gram(points)  # (n, n)
    dist2 = np.maximum(2.0 - 2.0 * gram, _MIN_DIST**2)  # unit vectors: |a-b|^2 = 2 - 2 a.b
    np.fill_diagonal(dist2, np.inf)
    inv = 1.0 / np.sqrt(dist2)  # (n, n)
    inv[:n_fixed, :n_fixed] = 0.0  # pairs of fixed points are constant
    energy = 0.5 * float(inv.sum())
    w = inv**3  # dE/dp_i = -sum_j (p_i - p_j) / r_ij^3
    movers = slice(n_fixed, None)
    pulled = (w[movers][:, :, None] * points[None, :, :]).sum(axis=1)  # w @ points, no BLAS
    grad = -(points[movers] * w[movers].sum(axis=1, keepdims=True) - pulled)
    return energy, grad


def _project(points: np.ndarray) -> np.ndarray:
    out: np.ndarray = points / np.sqrt((points * points).sum(axis=1, keepdims=True))
    return out


def thomson(
    n: int,
    dim: int,
    *,
    seed: int,
    fixed: np.ndarray | None = None,
    max_steps: int = MAX_STEPS,
) -> np.ndarray:
    """Return ``n`` unit vectors in R^dim spread by repulsion, the first ``len(fixed)`` unmoved.

    Projected gradient descent on the sphere with an adaptive step that doubles after a step that
    lowers the energy and halves (rejecting the step) after one that does not.
    """
    if dim < 1 or n < 1:
        raise ConfigError(f"class vectors need n >= 1 and dim >= 1, got n={n}, dim={dim}")
    old = np.zeros((0, dim)) if fixed is None else np.asarray(fixed, dtype=np.float64)
    n_fixed = old.shape[0]
    if n <= n_fixed:
        return old[:n].copy()
    rng = np.random.default_rng([seed, dim, n_fixed])
    new = _project(rng.standard_normal((n - n_fixed, dim)))
    points = np.concatenate([old, new])
    if n == 1:
        return points
    energy, grad = _energy_and_grad(points, n_fixed)
    step = 0.1 / max(n, 1)
    for _ in range(max_steps):
        movers = points[n_fixed:]
        tangent = grad - (grad * movers).sum(axis=1, keepdims=True) * movers
        trial = points.copy()
        trial[n_fixed:] = _project(movers - step * tangent)
        trial_energy, trial_grad = _energy_and_grad(trial, n_fixed)
        if trial_energy < energy:
            converged = energy - trial_energy <= 1e-13 * abs(energy)
            points, energy, grad = trial, trial_energy, trial_grad
            step *= 2.0
            if converged:
                break
        else:
            step *= 0.5
            if step < _MIN_STEP:
                break
    return points


class ClassVectors:
    """A growable set of fixed unit class vectors for one layer.

    Parameters
    ----------
    dim
        The layer's output width.
    capacity
        How many vectors to spread at the start. More classes than this is fine: the set grows.
    seed
        Same seed, same vectors.
    """

    def __init__(self, dim: int, capacity: int = 16, seed: int = 0) -> None:
        if capacity < 1:
            raise ConfigError(f"class-vector capacity must be >= 1, got {capacity}")
        self.dim = dim
        self.seed = seed
        self.vectors = thomson(capacity, dim, seed=seed)  # (capacity, dim) float64

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def ensure(self, n: int) -> None:
        """Make room for ``n`` classes, doubling the set; existing vectors never move."""
        if n <= len(self):
            return
        target = max(n, 2 * len(self))
        self.vectors = thomson(target, self.dim, seed=self.seed, fixed=self.vectors)

    @classmethod
    def from_array(cls, vectors: np.ndarray, seed: int) -> ClassVectors:
        """Rebuild from saved vectors (no regeneration)."""
        obj = cls.__new__(cls)
        obj.vectors = np.asarray(vectors, dtype=np.float64).copy()
        obj.dim = int(obj.vectors.shape[1])
        obj.seed = seed
        return obj
