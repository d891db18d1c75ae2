"""One SPELA layer: a fully connected layer with its own fixed class vectors and local loss.

The layer learns right after its forward step (SPELA.md): ``z = W x + b``, ``y = phi(z)``, loss
``log(2 - cos(y, v_k))``, closed-form gradient, plain SGD. It keeps nothing between calls but its
parameters: no graph, no stored activations.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .class_vectors import ClassVectors
from .rule import (
    LEAKY_SLOPE,
    contrastive_grad,
    leaky_relu_backward,
    local_grad,
    local_grad_one,
)
from .scaling import TensorStandardiser


class SpelaLayer:
    """A fully connected SPELA layer (weights, bias, class vectors) on one torch device.

    Parameters
    ----------
    d_in, d_out
        Input and output widths; ``d_out`` is also the class vectors' dimension.
    capacity
        Class vectors spread up front; the set grows beyond it without moving old vectors.
    seed
        Seeds the weights (CPU generator, so the same on every machine) and the class vectors.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        capacity: int = 16,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        normalise_input: bool = False,
        input_decay: float | None = None,
        input_slow_decay: float | None = None,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        bound = math.sqrt(6.0 / d_in)  # the authors' init: W ~ U(+-sqrt(6 / d_in))
        w = (torch.rand(d_out, d_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        b_bound = 1.0 / math.sqrt(d_in)  # bias as torch.nn.Linear initialises it
        b = (torch.rand(d_out, generator=gen, dtype=torch.float64) * 2 - 1) * b_bound
        self.device = torch.device(device)
        self.dtype = dtype
        self.weight = w.to(device=self.device, dtype=dtype)  # (d_out, d_in)
        self.bias = b.to(device=self.device, dtype=dtype)  # (d_out,)
        self.class_vectors = ClassVectors(d_out, capacity=capacity, seed=seed)
        self._sync_vectors()
        self.input_norm = (
            TensorStandardiser(d_in, self.device, decay=input_decay, slow_decay=input_slow_decay)
            if normalise_input
            else None
        )
        self.contrast = 0.0  # > 0: the contrastive local loss at this temperature (the model's)
        self.n_known = 0  # classes the contrastive loss pushes between (ensure_classes)

    @property
    def d_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.weight.shape[0])

    def _sync_vectors(self) -> None:
        self.vectors = torch.as_tensor(
            self.class_vectors.vectors, dtype=self.dtype, device=self.device
        )  # (n_alloc, d_out)

    def ensure_classes(self, n: int) -> None:
        """Make sure there are class vectors for ``n`` classes."""
        if n > len(self.class_vectors):
            self.class_vectors.ensure(n)
            self._sync_vectors()
        self.n_known = max(self.n_known, n)

    def grow_inputs(self, k: int, seed: int) -> None:
        """Add ``k`` input columns at the end, drawn as the first were (``U(+-sqrt(6 / d_in))``
        for the new width, from ``seed``); every other weight, the bias and the class vectors stay.
        Only for an input that is not normalised (the first layer's raw features)."""
        assert self.input_norm is None, "a normalised input keeps its width"
        gen = torch.Generator().manual_seed(seed)
        bound = math.sqrt(6.0 / (self.d_in + k))
        cols = (torch.rand(self.d_out, k, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        cols = cols.to(device=self.device, dtype=self.dtype)  # (d_out, k)
        self.weight = torch.cat([self.weight, cols], dim=1)  # (d_out, d_in + k)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's view of its raw input: standardised per unit when ``normalise_input``."""
        return x if self.input_norm is None else self.input_norm.transform(x)

    def observe(self, x: torch.Tensor) -> None:
        """Fold a raw input batch into the input statistics (after learning from it)."""
        if self.input_norm is not None:
            self.input_norm.update(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, y) for a batch x (B, d_in): pre-activation and LeakyReLU output, each (B, d_out)."""
        if x.shape[0] == 1:
            z = torch.addmv(self.bias, self.weight, x[0]).unsqueeze(0)
        else:
            z = torch.addmm(self.bias, x, self.weight.T)
        y = torch.nn.functional.leaky_relu(z, LEAKY_SLOPE)
        return z, y

    def scores(self, y: torch.Tensor, n_classes: int) -> np.ndarray:
        """cos(y, v_k) for the first ``n_classes`` class vectors: (B, n_classes), in numpy.

        Predictions end in Python anyway, and numpy's per-call cost on a few thousand numbers is
        a fraction of torch's: on CPU the tensors are viewed, not copied.
        """
        if y.device.type != "cpu":
            vt = self.vectors[:n_classes]
            cos = (y @ vt.T) / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
            on_host: np.ndarray = cos.cpu().numpy()
            return on_host
        yn = y.numpy()  # (B, d_out)
        v = self.vectors.numpy()[:n_classes]  # (C, d_out), a view
        if yn.shape[0] == 1:  # per sample: fewest calls (each costs ~5 us after a weight sweep)
            y0 = yn[0]
            one: np.ndarray = (v @ y0) / max(math.sqrt(float(y0 @ y0)), 1e-12)
            return one[None, :]
        norms = np.sqrt(np.einsum("bd,bd->b", yn, yn))[:, None]
        out: np.ndarray = (yn @ v.T) / np.maximum(norms, 1e-12)
        return out

    def update(
        self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, k: torch.Tensor, lr: float
    ) -> None:
        """One SGD step on the local loss for targets k (B,), averaged over the batch: the paper's
        ``log(2 - cos)``, or with ``contrast`` > 0 the contrastive loss over the known classes
        (``rule.contrastive_grad``)."""
        if self.contrast > 0:
            n_known = max(self.n_known, int(k.max()) + 1)
            g_c = contrastive_grad(y, self.vectors[:n_known], k, self.contrast)
            g_c = leaky_relu_backward(g_c, z)
            step_c = lr / x.shape[0]
            self.weight.addmm_(g_c.T, x, alpha=-step_c)
            self.bias.add_(g_c.sum(dim=0), alpha=-step_c)
            return
        if x.shape[0] == 1:  # the per-sample path, with as few tensor operations as it can
            g1 = local_grad_one(y[0], self.vectors[int(k[0])])  # dL/dy  (d_out,)
            g1 = leaky_relu_backward(g1, z[0])  # dL/dz = dL/dy * phi'(z)
            self.weight.addr_(g1, x[0], alpha=-lr)  # W -= lr * dz x^T (rank 1)
            self.bias.add_(g1, alpha=-lr)
            return
        g_y = local_grad(y, self.vectors[k])  # dL/dy, closed form (SPELA.md)  (B, d_out)
        g_z = leaky_relu_backward(g_y, z)  # dL/dz = dL/dy * phi'(z)
        step = lr / x.shape[0]
        self.weight.addmm_(g_z.T, x, alpha=-step)  # W -= lr/B * dZ^T X
        self.bias.add_(g_z.sum(dim=0), alpha=-step)

    def state(self) -> dict[str, np.ndarray]:
        """Parameters as numpy arrays."""
        state = {
            "weight": self.weight.detach().cpu().numpy().copy(),
            "bias": self.bias.detach().cpu().numpy().copy(),
            "vectors": self.class_vectors.vectors.copy(),
        }
        if self.input_norm is not None:
            for key, arr in self.input_norm.state().items():
                state[f"input_{key}"] = arr
        return state

    @classmethod
    def from_state(
        cls,
        state: dict[str, np.ndarray],
        *,
        seed: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        input_decay: float | None = None,
        input_slow_decay: float | None = None,
    ) -> SpelaLayer:
        """Rebuild a layer from ``state`` (no re-initialisation, no regeneration)."""
        layer = cls.__new__(cls)
        layer.device = torch.device(device)
        layer.dtype = dtype
        layer.weight = torch.as_tensor(np.array(state["weight"]), dtype=dtype, device=layer.device)
        layer.bias = torch.as_tensor(np.array(state["bias"]), dtype=dtype, device=layer.device)
        layer.class_vectors = ClassVectors.from_array(state["vectors"], seed=seed)
        layer._sync_vectors()
        layer.input_norm = None
        layer.contrast = 0.0
        layer.n_known = 0
        if "input_mean" in state:
            layer.input_norm = TensorStandardiser(
                layer.d_in, layer.device, decay=input_decay, slow_decay=input_slow_decay
            )
            layer.input_norm.load(
                {k.removeprefix("input_"): v for k, v in state.items() if k.startswith("input_")}
            )
        return layer
