"""Boundary losses (docs/method.md#boundary-network-and-loss)."""
from __future__ import annotations

import math

import pytest
import torch

from salmask.boundary.labels import (BG, BOUNDARY_FG_BG, BOUNDARY_FG_FG, CERTAIN_BOUNDARY, FG,
                                     IGNORE)
from salmask.boundary.loss import boundary_loss


def small_example():
    prob = torch.tensor([[[0.1, 0.2, 0.9], [0.5, 0.8, 0.6]]])
    labels = torch.tensor([[[BG, FG, BOUNDARY_FG_BG], [CERTAIN_BOUNDARY, BOUNDARY_FG_FG, IGNORE]]],
                          dtype=torch.uint8)
    sal = torch.tensor([[[0.0, 0.5, 0.7], [0.0, 0.0, 1.0]]])
    return prob, labels, sal


def bd(p: float) -> float:
    return -math.log(p) * math.sqrt(p)


def test_sbe_loss_by_hand():
    prob, labels, sal = small_example()
    loss, parts = boundary_loss(prob, labels, sal, mode="sbe")
    expected = {"bg": -math.log(0.9) / 2, "fg": -math.log(0.8) / 2,
                "bd_sal": bd(0.9) / 2, "bd_nonsal": (bd(0.5) + bd(0.8)) / 3}
    for key, value in expected.items():
        assert parts[key].item() == pytest.approx(value, rel=1e-5)
    assert loss.item() == pytest.approx(sum(expected.values()), rel=1e-5)


def test_sqrt_weight_is_detached():
    prob, labels, sal = small_example()
    prob.requires_grad_()
    boundary_loss(prob, labels, sal, mode="sbe")[0].backward()
    # d/dp of -log(p)·sqrt(p̄) is -sqrt(p̄)/p: the weight carries no gradient.
    assert prob.grad[0, 0, 2].item() == pytest.approx(-math.sqrt(0.9) / 0.9 / 2, rel=1e-5)
    assert prob.grad[0, 0, 0].item() == pytest.approx(1 / 0.9 / 2, rel=1e-5)
    assert prob.grad[0, 1, 2].item() == 0.0


def test_bes_loss_by_hand_and_differs_from_sbe():
    prob, labels, sal = small_example()
    loss, parts = boundary_loss(prob, labels, None, mode="bes")
    ground = (-math.log(0.9) / 2 - math.log(0.8) / 2) / 2
    boundary = (bd(0.9) + bd(0.5) + bd(0.8)) / 4
    assert parts["bd"].item() == pytest.approx(boundary, rel=1e-5)
    assert loss.item() == pytest.approx(ground + boundary, rel=1e-5)
    sbe, sbe_parts = boundary_loss(prob, labels, sal, mode="sbe")
    assert (sbe_parts["bd_sal"] + sbe_parts["bd_nonsal"]).item() != pytest.approx(boundary, rel=1e-3)
    assert sbe.item() != pytest.approx(loss.item(), rel=1e-3)


def test_clamping_keeps_saturated_probabilities_finite():
    prob = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[[BG, BOUNDARY_FG_BG]]], dtype=torch.uint8)
    loss, parts = boundary_loss(prob, labels, torch.ones(1, 1, 2), mode="sbe")
    assert parts["bg"].item() == pytest.approx(-math.log(1e-4) / 2, rel=1e-4)
    assert parts["bd_sal"].item() == pytest.approx(bd(1e-4) / 2, rel=1e-4)
    loss.backward()
    assert torch.isfinite(prob.grad).all()


@pytest.mark.parametrize("mode", ["sbe", "bes"])
def test_gradients_finite_and_channel_dim_optional(mode):
    torch.manual_seed(0)
    logits = (torch.randn(2, 1, 8, 8) * 20).requires_grad_()
    codes = torch.tensor([BG, FG, BOUNDARY_FG_FG, BOUNDARY_FG_BG, IGNORE, CERTAIN_BOUNDARY],
                         dtype=torch.uint8)
    labels = codes[torch.randint(0, 6, (2, 8, 8))]
    sal = (torch.rand(2, 8, 8) > 0.5).float() * torch.rand(2, 8, 8)
    loss, parts = boundary_loss(torch.sigmoid(logits), labels, sal, mode=mode)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert all(not v.requires_grad for v in parts.values())
    flat, _ = boundary_loss(torch.sigmoid(logits.detach())[:, 0], labels, sal, mode=mode)
    assert flat.item() == pytest.approx(loss.item(), rel=1e-6)


def test_sums_are_pooled_over_the_batch():
    torch.manual_seed(1)
    prob = torch.rand(2, 4, 5)
    labels = torch.full((2, 4, 5), IGNORE, dtype=torch.uint8)
    labels[0, :, :4] = BG
    labels[1, 0, 0] = BG
    labels[1, 2:, :] = BOUNDARY_FG_BG
    sal = torch.rand(2, 4, 5)
    sal[:, :, 2] = 0
    batch, _ = boundary_loss(prob, labels, sal)
    side_by_side, _ = boundary_loss(torch.cat(list(prob), 1)[None], torch.cat(list(labels), 1)[None],
                                    torch.cat(list(sal), 1)[None])
    assert batch.item() == pytest.approx(side_by_side.item(), rel=1e-6)
    per_image = sum(boundary_loss(prob[i:i + 1], labels[i:i + 1], sal[i:i + 1])[0] for i in range(2)) / 2
    assert batch.item() != pytest.approx(per_image.item(), rel=1e-3)


def test_half_precision_input_stays_finite():
    prob = torch.tensor([[[1.0, 0.0, 0.5]]], dtype=torch.float16)
    labels = torch.tensor([[[BG, CERTAIN_BOUNDARY, FG]]], dtype=torch.uint8)
    loss, _ = boundary_loss(prob, labels, torch.ones(1, 1, 3, dtype=torch.float16))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bad_arguments_raise():
    prob, labels, sal = small_example()
    with pytest.raises(ValueError, match="saliency"):
        boundary_loss(prob, labels, None, mode="sbe")
    with pytest.raises(ValueError, match="mode"):
        boundary_loss(prob, labels, sal, mode="irn")
    with pytest.raises(ValueError, match="labels shape"):
        boundary_loss(prob, labels[:, :1], sal)
    with pytest.raises(ValueError, match="saliency shape"):
        boundary_loss(prob, labels, sal[:, :, :2])
    with pytest.raises(ValueError, match="prob"):
        boundary_loss(prob[0], labels[0], sal[0])
