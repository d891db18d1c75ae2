"""The local rule: loss values and the closed-form gradient against torch autograd (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from spela_stream.rule import (
    LEAKY_SLOPE,
    contrastive_grad,
    cosine,
    leaky_relu,
    leaky_relu_grad,
    local_grad,
    local_grad_one,
    local_loss,
)


def _unit_rows(b: int, d: int, gen: torch.Generator) -> torch.Tensor:
    v = torch.randn(b, d, generator=gen, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


@pytest.mark.parametrize(("batch", "dim"), [(1, 2), (1, 17), (5, 3), (8, 64)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_local_grad_equals_autograd(batch: int, dim: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, dim, generator=gen, dtype=torch.float64) * 3.0
    v = _unit_rows(batch, dim, gen)
    y_auto = y.clone().requires_grad_(True)
    local_loss(y_auto, v).sum().backward()
    assert y_auto.grad is not None
    closed = local_grad(y, v)
    assert closed.shape == (batch, dim)
    torch.testing.assert_close(closed, y_auto.grad, rtol=1e-10, atol=1e-13)


def test_local_grad_rows_are_independent() -> None:
    """A batched call gives each row the gradient it would get alone."""
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    v = _unit_rows(6, 9, gen)
    batched = local_grad(y, v)
    for i in range(6):
        torch.testing.assert_close(batched[i : i + 1], local_grad(y[i : i + 1], v[i : i + 1]))


def test_local_loss_values() -> None:
    v = torch.tensor([[0.6, 0.8, 0.0]], dtype=torch.float64)
    aligned = local_loss(2.5 * v, v)
    opposite = local_loss(-0.1 * v, v)
    orthogonal = local_loss(torch.tensor([[0.0, 0.0, 4.0]], dtype=torch.float64), v)
    torch.testing.assert_close(aligned, torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(opposite, torch.full((1,), math.log(3.0), dtype=torch.float64))
    torch.testing.assert_close(orthogonal, torch.full((1,), math.log(2.0), dtype=torch.float64))


def test_local_grad_vanishes_when_aligned_and_scales_as_one_over_norm() -> None:
    gen = torch.Generator().manual_seed(3)
    v = _unit_rows(1, 5, gen)
    torch.testing.assert_close(local_grad(7.0 * v, v), torch.zeros(1, 5, dtype=torch.float64))
    y = torch.randn(1, 5, generator=gen, dtype=torch.float64)
    # The loss depends on the direction of y only, so the gradient scales as 1/|y|.
    torch.testing.assert_close(local_grad(10.0 * y, v), local_grad(y, v) / 10.0)
    # ... and is orthogonal to y (moving along y does not change the cosine).
    assert abs(float((local_grad(y, v) * y).sum())) < 1e-12


def test_gradient_step_raises_cosine() -> None:
    gen = torch.Generator().manual_seed(4)
    y = torch.randn(4, 10, generator=gen, dtype=torch.float64)
    v = _unit_rows(4, 10, gen)
    before = cosine(y, v)
    after = cosine(y - 0.05 * local_grad(y, v), v)
    assert bool((after > before).all())


def test_cosine_matches_torch() -> None:
    gen = torch.Generator().manual_seed(6)
    y = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    v = _unit_rows(7, 4, gen)
    torch.testing.assert_close(cosine(y, v), torch.nn.functional.cosine_similarity(y, v, dim=1))


def test_leaky_relu_and_its_grad_match_torch() -> None:
    z = torch.linspace(-3.0, 3.0, 61, dtype=torch.float64)
    z = z[z != 0]  # the derivative at exactly 0 is a convention
    torch.testing.assert_close(leaky_relu(z), torch.nn.functional.leaky_relu(z, LEAKY_SLOPE))
    z_auto = z.clone().requires_grad_(True)
    torch.nn.functional.leaky_relu(z_auto, LEAKY_SLOPE).sum().backward()
    assert z_auto.grad is not None
    torch.testing.assert_close(leaky_relu_grad(z), z_auto.grad)
    assert LEAKY_SLOPE == pytest.approx(1e-3)  # the authors' slope (SPELA.md)


def test_single_sample_gradient_equals_batched() -> None:
    gen = torch.Generator().manual_seed(7)
    y = torch.randn(1, 40, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 40, generator=gen, dtype=torch.float64)
    v = v / v.norm()
    torch.testing.assert_close(local_grad_one(y[0], v[0]), local_grad(y, v)[0])


@pytest.mark.parametrize(("batch", "dim", "n_classes"), [(1, 2, 2), (1, 17, 5), (6, 8, 3)])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_contrastive_grad_equals_autograd(
    batch: int, dim: int, n_classes: int, temperature: float
) -> None:
    gen = torch.Generator().manual_seed(batch + dim)
    y = (torch.randn(batch, dim, generator=gen, dtype=torch.float64) * 3.0).requires_grad_()
    v = _unit_rows(n_classes, dim, gen)
    k = torch.randint(0, n_classes, (batch,), generator=gen)
    cos = (y / y.norm(dim=1, keepdim=True)) @ v.T
    # T * CE summed over rows: the per-row gradient, as local_grad gives it
    loss = temperature * torch.nn.functional.cross_entropy(cos / temperature, k, reduction="sum")
    loss.backward()
    assert y.grad is not None
    assert torch.allclose(contrastive_grad(y.detach(), v, k, temperature), y.grad, atol=1e-12)


def test_contrastive_grad_vanishes_on_a_sample_right_by_a_margin() -> None:
    v = torch.eye(3, dtype=torch.float64)
    right = torch.tensor([[5.0, 0.0, 0.0]], dtype=torch.float64)
    wrong = torch.tensor([[0.0, 5.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([0])
    assert float(contrastive_grad(right, v, k, 0.1).norm()) < 1e-4  # p_other ~ e^-10
    assert float(contrastive_grad(wrong, v, k, 0.1).norm()) > 0.1
    # the paper's loss keeps pulling an aligned-but-not-exact output; this one has let go
    half = torch.tensor([[4.0, 1.0, 0.0]], dtype=torch.float64)
    pulled = float(local_grad(half, v[k]).norm())
    assert pulled > 10 * float(contrastive_grad(half, v, k, 0.1).norm())
