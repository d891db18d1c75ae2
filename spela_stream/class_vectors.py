"""Fixed class vectors on the unit hypersphere, spread by Coulomb repulsion (Thomson problem).

Each SPELA layer owns one set. The set is generated for a *capacity* up front by a full Thomson
solve and grows, when a class beyond it appears, by a cheap bounded construction (``grow``): while
the dimension has room a new vector is a seeded random one made orthogonal to all before it;
after that it is the best of a few seeded random candidates, scored by its largest cosine against
a bounded subset of the set (the first and the most recent vectors). Vectors already in use never
move, and each new one costs O(dim * subset), so 10,000 new labels do not stall the learner.

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


# Growth beyond the Thomson capacity (see ``grow``).
ORTHO_LIMIT = 128  # orthogonalise while the set is smaller than min(dim, ORTHO_LIMIT)
FIRST_M = 64  # candidates are scored against the first FIRST_M vectors ...
RECENT_M = 32  # ... and the RECENT_M vectors just before the new one
REFINE_DIM = 16  # in spaces this narrow, random candidates collide: refine the chosen one ...
REFINE_STEPS = 20  # ... by this many bounded repulsion steps
RNG_BLOCK = 64  # candidates for indices [64 b, 64 b + 64): one rng seeded (seed, dim, b, 1)
MIN_CHUNK = 16  # the set grows by max(MIN_CHUNK, len // 4) vectors at a time (amortised)


def _chunk_end(n_have: int, dim: int) -> int:
    """The fixed growth schedule: where the chunk that starts at ``n_have`` ends. The orthogonal
    phase is one chunk of its own, so a chunk never mixes the two constructions."""
    end = n_have + max(MIN_CHUNK, n_have // 4)
    room = min(dim, ORTHO_LIMIT)
    return min(end, room) if n_have < room else end


def _candidates(dim: int) -> int:
    """Random candidates per new vector: many in narrow spaces, where random points collide; one
    from width 512 up, where random unit vectors are near-orthogonal already (cos ~ 3/sqrt(d))."""
    return int(min(64, max(1, 512 // dim)))


def grow(vectors: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Return ``vectors`` with unit rows appended up to ``n`` rows; the given rows are unmoved."""
    return grow_counted(vectors, n, seed=seed)[0]


def grow_counted(vectors: np.ndarray, n: int, *, seed: int) -> tuple[np.ndarray, int]:
    """``grow``, and how many vector-by-vector products it took (a bound on its work).

    Vector ``i`` depends only on (seed, dim, i) and the vectors before it, so growing one class at
    a time or all at once gives the same set. Its candidates come from the rng seeded by
    (seed, dim, i // RNG_BLOCK, 1) and its bits
    come from elementwise numpy only (no BLAS), except the *choice* among candidates, whose scores
    use a matrix product: a different BLAS could pick another candidate only if two scores tie
    within rounding (about 1e-16), and either pick is an equally good vector.
    """
    old = np.asarray(vectors, dtype=np.float64)
    n_old, dim = old.shape
    if n <= n_old:
        return old.copy(), 0
    out = np.empty((n, dim))
    products = 0
    out[:n_old] = old
    k = _candidates(dim)
    room = min(dim, ORTHO_LIMIT)
    basis = _orthonormal(old) if n_old < room else np.zeros((0, dim))
    block, block_id = np.zeros((0, k, dim)), -1
    for i in range(n_old, n):
        if i // RNG_BLOCK != block_id:  # candidates come in fixed blocks of indices
            block_id = i // RNG_BLOCK
            rng = np.random.default_rng([seed, dim, block_id, 1])
            block = rng.standard_normal((RNG_BLOCK, k, dim))
        raw = block[i % RNG_BLOCK]  # (k, dim)
        if i < room:
            x = raw[0]
            for _ in range(2):  # Gram-Schmidt twice: orthogonal to rounding
                x = x - ((basis * x).sum(axis=1)[:, None] * basis).sum(axis=0)
            x = x / np.sqrt((x * x).sum())
            products += 2 * basis.shape[0]
            basis = np.concatenate([basis, x[None, :]])
            out[i] = x
            continue
        cand = _project(raw)
        first = out[: min(FIRST_M, i)]
        recent = out[max(min(FIRST_M, i), i - RECENT_M) : i]
        if k == 1:
            out[i] = cand[0]
            continue
        products += k * (first.shape[0] + recent.shape[0])
        score = (cand @ first.T).max(axis=1)  # (k,) largest cosine to the subset
        if recent.shape[0]:
            score = np.maximum(score, (cand @ recent.T).max(axis=1))
        best = cand[int(np.argmin(score))]
        if dim <= REFINE_DIM:
            others = np.concatenate([first, recent])
            best = _refine(best, others)
            products += (2 * REFINE_STEPS + 1) * others.shape[0]
        out[i] = best
    return out, products


def _refine(x: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Push ``x`` away from its nearest neighbours among ``others`` (bounded, elementwise): a few
    steps of steep repulsion (1/r^6), each kept only if it raises the distance to the nearest."""
    worst = float((others * x).sum(axis=1).max())
    step = 0.2
    for _ in range(REFINE_STEPS):
        diff = x[None, :] - others  # (m, dim)
        r2 = np.maximum((diff * diff).sum(axis=1), _MIN_DIST**2)
        push = (diff / (r2**4)[:, None]).sum(axis=0)
        push = push - (push * x).sum() * x  # along the sphere
        size = float(np.sqrt((push * push).sum()))
        if size == 0.0:
            break
        trial = x + step * push / size
        trial = trial / np.sqrt((trial * trial).sum())
        trial_worst = float((others * trial).sum(axis=1).max())
        if trial_worst < worst:
            x, worst = trial, trial_worst
        else:
            step *= 0.5
    return x


def _orthonormal(points: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the rows' span (modified Gram-Schmidt, elementwise, no BLAS)."""
    basis: list[np.ndarray] = []
    for p in points:
        x = p.copy()
        for _ in range(2):
            for q in basis:
                x = x - (q * x).sum() * q
        norm = float(np.sqrt((x * x).sum()))
        if norm > 1e-8:  # a simplex's last vertex lies in the span of the others
            basis.append(x / norm)
    if not basis:
        return np.zeros((0, points.shape[1]))
    return np.stack(basis)


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
        self.grow_products = 0  # vector-by-vector products spent on growth (bounded per class)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def ensure(self, n: int) -> None:
        """Make room for ``n`` classes, a chunk at a time; existing vectors never move."""
        if n <= len(self):
            return
        target = len(self)
        while target < n:
            target = _chunk_end(target, self.dim)
        self.vectors, products = grow_counted(self.vectors, target, seed=self.seed)
        self.grow_products += products

    @classmethod
    def from_array(cls, vectors: np.ndarray, seed: int) -> ClassVectors:
        """Rebuild from saved vectors (no regeneration)."""
        obj = cls.__new__(cls)
        obj.vectors = np.asarray(vectors, dtype=np.float64).copy()
        obj.dim = int(obj.vectors.shape[1])
        obj.seed = seed
        obj.grow_products = 0
        return obj
