"""SPELA's local rule as pure functions: the loss ``log(2 - cos)`` and its closed-form gradient.

No autograd: these are the equations of SPELA.md, batched over rows. Shapes: ``y`` is (B, d),
the targets ``v`` are (B, d) unit vectors (the class vector of each row's label).
"""

from __future__ import annotations

import torch

LEAKY_SLOPE = 1e-3  # LeakyReLU negative slope, as the authors use
_EPS = 1e-12


def leaky_relu(z: torch.Tensor) -> torch.Tensor:
    """phi(z) = z where z > 0, else LEAKY_SLOPE * z."""
    return torch.where(z > 0, z, z * LEAKY_SLOPE)


def leaky_relu_grad(z: torch.Tensor) -> torch.Tensor:
    """phi'(z): 1 where z > 0, else LEAKY_SLOPE."""
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, LEAKY_SLOPE))


def leaky_relu_backward(grad: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """grad * phi'(z) (1 where z > 0, else LEAKY_SLOPE) in one fused kernel.

    This is ATen's own LeakyReLU derivative called directly (no autograd involved); it is the
    same arithmetic as ``torch.where(z > 0, grad, grad * LEAKY_SLOPE)`` at a fraction of the cost.
    """
    out: torch.Tensor = torch.ops.aten.leaky_relu_backward(grad, z, LEAKY_SLOPE, False)
    return out


def cosine(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise cos(y, v) for unit ``v``: (B,)."""
    cos: torch.Tensor = (y * v).sum(dim=1) / y.norm(dim=1).clamp_min(_EPS)
    return cos


def local_loss(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """L = log(2 - cos(y, v)) per row: 0 when aligned, log 3 when opposite. (B,)"""
    loss: torch.Tensor = torch.log(2.0 - cosine(y, v))
    return loss


def local_grad(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """dL/dy = -(v - c * y_hat) / (|y| (2 - c)), with y_hat = y / |y| and c = y_hat . v. (B, d)"""
    n = y.norm(dim=1, keepdim=True).clamp_min(_EPS)  # (B, 1)
    y_hat = y / n
    c = (y_hat * v).sum(dim=1, keepdim=True)  # (B, 1)
    grad: torch.Tensor = -(v - c * y_hat) / (n * (2.0 - c))
    return grad


def local_grad_one(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``local_grad`` for one sample, y and v of shape (d,), in four tensor operations.

    The per-sample path is bound by per-operation overhead, not arithmetic, so the scalars
    (|y|, c) are taken out once and the vector is built as ``(c / n) y - v`` scaled by
    ``1 / (n (2 - c))``.
    """
    n = max(float(y.norm()), _EPS)
    c = float(torch.dot(y, v)) / n
    return torch.add(v, y, alpha=-c / n).mul_(-1.0 / (n * (2.0 - c)))


def contrastive_grad(
    y: torch.Tensor, vectors: torch.Tensor, k: torch.Tensor, temperature: float
) -> torch.Tensor:
    """dL/dy of the contrastive local loss ``T * CE(softmax(cos(y, v_j) / T), k)`` over the
    class vectors given (the known classes'), (B, d): ``sum_j (p_j - [j = k]) (v_j - c_j y_hat)
    / |y|``. It pulls towards the label's vector and pushes from the others' by their
    probability, and vanishes on a sample already right by a margin, where ``log(2 - cos)``
    keeps pulling (issue 11, round 7: the fit of non-linear low-dimensional streams)."""
    n = y.norm(dim=1, keepdim=True).clamp_min(_EPS)  # (B, 1)
    y_hat = y / n
    cos = y_hat @ vectors.T  # (B, C)
    q = torch.softmax(cos / temperature, dim=1)
    q[torch.arange(len(k), device=q.device), k] -= 1.0  # p - onehot
    grad: torch.Tensor = (q @ vectors - (q * cos).sum(dim=1, keepdim=True) * y_hat) / n
    return grad
