"""Losses and the task × loss table: which losses fit which task, and how outputs and targets are shaped.

The criterion itself is torch's (instantiated from ``conf/loss``); this module only knows, per loss,
which tasks it fits, how many outputs the model needs, how targets are shaped and how accuracy is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from trainstudy.errors import UserError

TASKS = ("multiclass", "binary", "regression")


@dataclass(frozen=True)
class LossRule:
    tasks: tuple[str, ...]
    target: str            # "index": class indices; "one_hot": one-hot (multiclass) or {0,1} (binary)
    log_softmax: bool = False  # nll takes log-probabilities
    logit: bool = True     # a binary output is a logit (threshold 0) or a score for {0,1} (threshold 0.5)


RULES: dict[str, LossRule] = {
    "ce": LossRule(("multiclass", "binary"), "index"),
    "nll": LossRule(("multiclass", "binary"), "index", log_softmax=True),
    "bce": LossRule(("multiclass", "binary"), "one_hot"),
    "mse": LossRule(TASKS, "one_hot", logit=False),
    "mae": LossRule(TASKS, "one_hot", logit=False),
    "huber": LossRule(TASKS, "one_hot", logit=False),
}


def validate_loss(loss_name: str, task: str, data_name: str = "") -> None:
    """Stop an impossible task × loss pair with one line naming it and the losses that fit."""
    if loss_name not in RULES:
        raise UserError(f"unknown loss {loss_name!r}; choose one of: {', '.join(RULES)}")
    if task not in RULES[loss_name].tasks:
        fits = ", ".join(n for n, r in RULES.items() if task in r.tasks)
        where = f" of data={data_name}" if data_name else ""
        raise UserError(f"loss={loss_name} does not fit the {task} task{where}; losses that fit: {fits} "
                        f"(e.g. loss={fits.split(',')[0]})")


def out_features(loss_name: str, task: str, num_classes: int | None, target_dim: int = 1) -> int:
    """How many outputs the model needs for this loss on this task."""
    if task == "regression":
        return target_dim
    if task == "binary":
        return 2 if RULES[loss_name].target == "index" else 1
    return int(num_classes)


class StudyLoss(nn.Module):
    """A torch criterion plus the shaping of this task × loss pair; also reads accuracy off the outputs."""

    def __init__(self, name: str, criterion: nn.Module, task: str, num_classes: int | None):
        super().__init__()
        validate_loss(name, task)
        self.name, self.criterion, self.task, self.num_classes = name, criterion, task, num_classes
        self.rule = RULES[name]

    def forward(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.rule.log_softmax:
            outputs = F.log_softmax(outputs, dim=1)
        return self.criterion(outputs, self.targets(y, outputs.dtype))

    def targets(self, y: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Targets shaped for the criterion: indices, one-hot, a {0,1} column, or real values."""
        if self.task == "regression" or self.rule.target == "index":
            return y
        if self.task == "binary":
            return y.to(dtype).unsqueeze(1)
        return F.one_hot(y, self.num_classes).to(dtype)

    def correct(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Number of correct predictions (a device tensor: no host sync). Argmax, or a threshold for 1 output."""
        if outputs.shape[1] > 1:
            return (outputs.argmax(dim=1) == y).sum()
        threshold = 0.0 if self.rule.logit else 0.5
        return ((outputs[:, 0] > threshold).long() == y).sum()


def build_loss(cfg: Mapping[str, Any], task: str, num_classes: int | None) -> StudyLoss:
    """The loss of ``conf/loss/<name>.yaml`` for a task."""
    return StudyLoss(cfg["name"], instantiate(cfg["criterion"]), task, num_classes)
