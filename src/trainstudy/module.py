"""The LightningModule of a study: a model, a task-shaped loss and a partial optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn

from trainstudy.losses import StudyLoss


class StudyModule(L.LightningModule):
    """Trains ``model`` on ``loss``; ``optimizer`` is a partial that takes the parameters."""

    def __init__(self, model: nn.Module, loss: StudyLoss,
                 optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]):
        super().__init__()
        self.model, self.loss, self.optimizer_factory = model, loss, optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.loss(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> tuple[float, float]:
        """(mean loss, accuracy) over a whole split held on the device, in chunks; one host sync."""
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device, dtype=torch.long)
        for start in range(0, len(x), chunk):
            out = self.model(x[start:start + chunk])
            yc = y[start:start + chunk]
            loss_sum += self.loss(out, yc).float() * len(yc)
            if self.loss.task != "regression":
                correct += self.loss.correct(out, yc)
        self.model.train(was_training)
        loss, acc = torch.stack([loss_sum / len(x), correct.float() / len(x)]).tolist()
        return loss, acc
