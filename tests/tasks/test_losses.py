"""The loss x ignore_index x class_weights matrix, combinations and the no-valid-pixel guard."""

from __future__ import annotations

import itertools

import pytest
import torch

from terramind_ft.errors import ConfigError
from terramind_ft.tasks.losses import SEGMENTATION_LOSSES, build_loss

C = 3


def data(ignore_index):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, C, 8, 8, generator=g)
    target = torch.randint(0, C, (2, 8, 8), generator=g)
    if ignore_index is not None:
        target[:, :3] = ignore_index  # the top rows are ignored
    return logits, target


@pytest.mark.parametrize("name,ignore_index,class_weights",
                         list(itertools.product(SEGMENTATION_LOSSES, [None, -1, 255], [None, [0.2, 1.0, 3.0]])))
def test_segmentation_loss_matrix(name, ignore_index, class_weights):
    loss_fn = build_loss(name, "segmentation", ignore_index, class_weights, num_classes=C)
    logits, target = data(ignore_index)
    logits.requires_grad_(True)
    loss, parts = loss_fn(logits, target)
    assert torch.isfinite(loss) and loss > 0 and list(parts) == [name]
    loss.backward()
    if ignore_index is not None:
        # ignored pixels get no gradient and changing the prediction there changes nothing
        assert logits.grad[:, :, :3].abs().max() == 0
        other = logits.detach().clone()
        other[:, :, :3] = torch.randn_like(other[:, :, :3]) * 10
        torch.testing.assert_close(loss_fn(other, target)[0], loss.detach())
    if class_weights is not None:
        unweighted = build_loss(name, "segmentation", ignore_index, None)(logits.detach(), target)[0]
        assert not torch.isclose(unweighted, loss.detach()), "class_weights must change the loss"


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_all_ignored_batch_gives_zero_not_nan(name):
    loss_fn = build_loss(name, "segmentation", -1, [1.0, 2.0, 1.0])
    logits = torch.randn(1, C, 4, 4, requires_grad=True)
    loss, _ = loss_fn(logits, torch.full((1, 4, 4), -1))
    assert loss.item() == 0.0
    loss.backward()


def test_weighted_lovasz_equals_smp_with_equal_weights():
    logits, target = data(-1)
    ours = build_loss("lovasz", "segmentation", -1, [2.0, 2.0, 2.0])(logits, target)[0]
    smp = build_loss("lovasz", "segmentation", -1, None)(logits, target)[0]
    torch.testing.assert_close(ours, smp)


def test_combined_losses_list_and_weights():
    logits, target = data(-1)
    ce = build_loss("ce", "segmentation", -1)(logits, target)[0]
    dice = build_loss("dice", "segmentation", -1)(logits, target)[0]
    total, parts = build_loss(["ce", "dice"], "segmentation", -1)(logits, target)
    torch.testing.assert_close(total, ce + dice)
    total, parts = build_loss({"ce": 1.0, "dice": 0.5}, "segmentation", -1)(logits, target)
    torch.testing.assert_close(total, ce + 0.5 * dice)
    assert set(parts) == {"ce", "dice"}


def test_loss_config_errors():
    with pytest.raises(ConfigError, match=r"loss\.dic.*Did you mean 'dice'"):
        build_loss("dic", "segmentation")
    with pytest.raises(ConfigError, match="2 class_weights for 3 classes"):
        build_loss("ce", "segmentation", None, [1.0, 2.0], num_classes=3)
    with pytest.raises(ConfigError, match="unknown regression loss 'dice'"):
        build_loss("dice", "regression")


def test_classification_and_regression_losses_honour_ignore_index():
    logits = torch.randn(4, C)
    target = torch.tensor([0, 1, -1, 2])
    for name in ("ce", "focal"):
        loss_fn = build_loss(name, "classification", -1, [1.0, 2.0, 1.0])
        changed = logits.clone()
        changed[2] = 100.0
        torch.testing.assert_close(loss_fn(logits, target)[0], loss_fn(changed, target)[0])
    pred = torch.zeros(2, 4, 4)
    tgt = torch.ones(2, 4, 4)
    tgt[0, 0, 0] = float("nan")
    tgt[1, 0, 0] = -9999
    for name, expected in (("mse", 1.0), ("mae", 1.0), ("rmse", 1.0)):
        torch.testing.assert_close(build_loss(name, "regression", -9999)(pred, tgt)[0], torch.tensor(expected))
