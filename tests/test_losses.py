"""The tutorial's four loss numbers through the project's own loss configs, and the task × loss table."""

from __future__ import annotations

import pytest
import torch
from conftest import make_cfg

from trainstudy.errors import UserError
from trainstudy.losses import RULES, build_loss, out_features, validate_loss


def loss_for(name: str, task: str, num_classes: int | None = None):
    return build_loss(make_cfg([f"loss={name}"]).loss, task, num_classes)


def test_tutorial_mae() -> None:
    loss = loss_for("mae", "regression")
    value = loss(torch.tensor([0.4, 2.3]), torch.tensor([0.5, 2.2]))
    assert value.item() == 0.09999994933605194


def test_tutorial_mse() -> None:
    loss = loss_for("mse", "regression")
    assert loss(torch.tensor([0.9, 2.1]), torch.tensor([0.7, 2.2])).item() == 0.025000011548399925


def test_tutorial_cross_entropy() -> None:
    logits = torch.tensor([[1.5, 2.0, 0.5], [0.5, 1.0, 1.5]])
    labels = torch.tensor([1, 2])
    assert loss_for("ce", "multiclass", 3)(logits, labels).item() == 0.6422001123428345
    # CE = LogSoftmax + NLL: the nll config on the same logits gives the same number
    assert loss_for("nll", "multiclass", 3)(logits, labels).item() == pytest.approx(0.6422001123428345, abs=1e-7)


def test_tutorial_bce() -> None:
    probs = torch.tensor([[0.7], [0.2], [0.9], [0.7]])
    labels = torch.tensor([1, 0, 1, 0])
    bce = loss_for("bce", "binary", 2)
    assert bce(torch.logit(probs), labels).item() == 0.47228795289993286
    assert torch.nn.BCELoss()(probs, labels.float().unsqueeze(1)).item() == pytest.approx(0.47228795289993286, abs=1e-7)


def test_target_shapes_follow_the_table() -> None:
    y = torch.tensor([0, 2, 1])
    assert torch.equal(loss_for("ce", "multiclass", 3).targets(y), y)
    assert torch.equal(loss_for("mse", "multiclass", 3).targets(y), torch.eye(3)[[0, 2, 1]])
    assert torch.equal(loss_for("bce", "multiclass", 3).targets(y), torch.eye(3)[[0, 2, 1]])
    yb = torch.tensor([1, 0])
    assert torch.equal(loss_for("bce", "binary", 2).targets(yb), torch.tensor([[1.0], [0.0]]))
    assert out_features("ce", "binary", 2) == 2 and out_features("bce", "binary", 2) == 1
    assert out_features("mse", "multiclass", 10) == 10 and out_features("huber", "regression", None, 3) == 3


def test_accuracy_reads_argmax_or_threshold() -> None:
    y = torch.tensor([1, 0, 1])
    assert loss_for("bce", "binary", 2).correct(torch.tensor([[0.3], [-0.2], [-0.1]]), y).item() == 2  # logit > 0
    assert loss_for("mse", "binary", 2).correct(torch.tensor([[0.6], [0.4], [0.3]]), y).item() == 2  # score > 0.5
    assert loss_for("ce", "multiclass", 3).correct(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]),
                                                   torch.tensor([1, 1])).item() == 1


@pytest.mark.parametrize("name", ["ce", "nll", "bce"])
def test_classification_losses_refuse_regression(name: str) -> None:
    with pytest.raises(UserError, match=f"loss={name} does not fit the regression task.*mse, mae, huber") as err:
        validate_loss(name, "regression", "diabetes")
    assert "\n" not in str(err.value)


def test_every_loss_has_a_config() -> None:
    for name in RULES:
        assert make_cfg([f"loss={name}"]).loss.name == name
