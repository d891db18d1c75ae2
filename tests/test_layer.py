"""SpelaLayer: init, forward, the full dL/dW, dL/db of one update against autograd, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spela_stream.layer import SpelaLayer
from spela_stream.rule import LEAKY_SLOPE, leaky_relu_backward


def _autograd_step(
    layer: SpelaLayer, x: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dW and dL/db by autograd through z = W x + b, y = leaky_relu(z), mean log(2 - cos)."""
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    v = torch.as_tensor(layer.class_vectors.vectors, dtype=torch.float64)[k]  # (B, d_out)
    z = x @ w.T + b
    y = torch.nn.functional.leaky_relu(z, LEAKY_SLOPE)
    cos = torch.nn.functional.cosine_similarity(y, v, dim=1)
    torch.log(2.0 - cos).mean().backward()  # SPELA.md: the batch gradient is averaged
    assert w.grad is not None and b.grad is not None
    return w.grad, b.grad


@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_update_equals_minus_lr_times_autograd(batch: int, seed: int) -> None:
    layer = SpelaLayer(9, 6, capacity=4, seed=seed, dtype=torch.float64)
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(batch, 9, generator=gen, dtype=torch.float64)
    k = torch.randint(0, 4, (batch,), generator=gen)
    g_w, g_b = _autograd_step(layer, x, k)
    w0, b0 = layer.weight.clone(), layer.bias.clone()
    lr = 0.3
    z, y = layer.forward(x)
    layer.update(x, z, y, k, lr)
    # Some units must be negative, else the LeakyReLU slope branch goes untested.
    assert bool((z < 0).any()) and bool((z > 0).any())
    torch.testing.assert_close(layer.weight - w0, -lr * g_w, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(layer.bias - b0, -lr * g_b, rtol=1e-9, atol=1e-13)
    assert float((layer.weight - w0).abs().max()) > 1e-6  # the step did something


def test_forward_is_linear_then_leaky_relu() -> None:
    layer = SpelaLayer(5, 4, capacity=3, seed=2, dtype=torch.float64)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z, y = layer.forward(x)
    torch.testing.assert_close(z, x @ layer.weight.T + layer.bias)
    torch.testing.assert_close(y, torch.where(z > 0, z, LEAKY_SLOPE * z))
    # The single-row path gives the same numbers as the batched one.
    z1, y1 = layer.forward(x[1:2])
    torch.testing.assert_close(z1, z[1:2])
    torch.testing.assert_close(y1, y[1:2])


def test_init_bounds_and_seed() -> None:
    d_in = 50
    layer = SpelaLayer(d_in, 40, capacity=3, seed=7)
    assert layer.weight.shape == (40, d_in) and layer.bias.shape == (40,)
    assert (layer.d_in, layer.d_out) == (d_in, 40)
    assert layer.weight.dtype == torch.float32
    w_bound, b_bound = math.sqrt(6.0 / d_in), 1.0 / math.sqrt(d_in)
    assert float(layer.weight.abs().max()) <= w_bound
    assert float(layer.weight.abs().max()) > 0.9 * w_bound  # uniform over the whole range
    assert float(layer.bias.abs().max()) <= b_bound
    same = SpelaLayer(d_in, 40, capacity=3, seed=7)
    other = SpelaLayer(d_in, 40, capacity=3, seed=8)
    assert torch.equal(layer.weight, same.weight) and torch.equal(layer.bias, same.bias)
    assert not torch.equal(layer.weight, other.weight)


def test_scores_are_cosines_to_class_vectors() -> None:
    layer = SpelaLayer(4, 6, capacity=5, seed=0, dtype=torch.float64)
    y = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = layer.scores(y, 3)
    assert s.shape == (3, 3)
    v = torch.as_tensor(layer.class_vectors.vectors[:3])
    expected = torch.nn.functional.cosine_similarity(y[:, None, :], v[None, :, :], dim=2)
    assert isinstance(s, np.ndarray)
    np.testing.assert_allclose(s, expected.numpy(), rtol=1e-12)


def test_repeated_updates_align_output_with_its_class_vector() -> None:
    layer = SpelaLayer(8, 16, capacity=4, seed=3, dtype=torch.float64)
    x = torch.randn(1, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    k = torch.tensor([2])
    cos = []
    for _ in range(30):
        z, y = layer.forward(x)
        cos.append(float(layer.scores(y, 4)[0, 2]))
        layer.update(x, z, y, k, 0.5)
    # The cosine climbs step after step (measured: -0.44 -> 0.30; a LeakyReLU output is nearly
    # non-negative, so it cannot reach 1 for a class vector with negative entries).
    assert all(b >= a - 1e-12 for a, b in zip(cos, cos[1:], strict=False))
    assert cos[-1] - cos[0] > 0.5
    assert int(layer.scores(layer.forward(x)[1], 4).argmax()) == 2


def test_ensure_classes_grows_without_moving_old_vectors() -> None:
    layer = SpelaLayer(4, 8, capacity=2, seed=0)
    old = layer.class_vectors.vectors.copy()
    layer.ensure_classes(2)  # already there: no change
    assert np.array_equal(layer.class_vectors.vectors, old)
    layer.ensure_classes(3)
    assert len(layer.class_vectors) >= 3
    assert np.array_equal(layer.class_vectors.vectors[:2], old)
    # The torch copy used by update/scores follows the growth.
    assert layer.vectors.shape[0] == len(layer.class_vectors)
    np.testing.assert_array_equal(
        layer.vectors.numpy(), layer.class_vectors.vectors.astype(np.float32)
    )


def test_state_round_trip() -> None:
    layer = SpelaLayer(5, 7, capacity=3, seed=4)
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    z, y = layer.forward(x)
    layer.update(x, z, y, torch.tensor([0, 2]), 0.5)
    state = layer.state()
    assert all(isinstance(a, np.ndarray) for a in state.values())
    back = SpelaLayer.from_state(state, seed=4)
    assert torch.equal(back.weight, layer.weight) and torch.equal(back.bias, layer.bias)
    assert np.array_equal(back.class_vectors.vectors, layer.class_vectors.vectors)
    assert torch.equal(back.forward(x)[1], layer.forward(x)[1])
    # The state is a copy: changing the layer afterwards does not change it.
    layer.weight.add_(1.0)
    assert not np.array_equal(state["weight"], layer.weight.numpy())


def test_fused_leaky_relu_backward_is_the_derivative() -> None:
    g = torch.randn(7, 33, dtype=torch.float64)
    z = torch.randn(7, 33, dtype=torch.float64)
    expected = torch.where(z > 0, g, g * LEAKY_SLOPE)
    assert torch.equal(leaky_relu_backward(g, z), expected)
    assert torch.equal(leaky_relu_backward(g[0], z[0]), expected[0])
