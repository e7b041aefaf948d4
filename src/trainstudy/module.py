"""The LightningModule of a study: a model, a task-shaped loss and a partial optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn

from trainstudy.losses import StudyLoss


Step = tuple[torch.Tensor, torch.Tensor]  # the (x, y) batch of one optimizer step


class StudyModule(L.LightningModule):
    """Trains ``model`` on ``loss``; ``optimizer`` is a partial that takes the parameters.

    A training batch is a list of steps (see DeviceBatches), taken here one after the other through
    Lightning's optimizer and ``manual_backward``: its hooks, precision plugin and step count work as in
    automatic optimization, at a fraction of its cost per step. ``automatic=True`` leaves the one step of each
    batch to Lightning, as Trainer-side gradient clipping and accumulation require. ``compile`` compiles the
    model's forward with torch.compile (layers and their names stay as they are).
    """

    _plain_backward = False  # see plain_backward(); decided when training starts

    def __init__(self, model: nn.Module, loss: StudyLoss,
                 optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 automatic: bool = False, compile: bool = False):
        super().__init__()
        self.model, self.loss, self.optimizer_factory = model, loss, optimizer
        self.automatic_optimization = automatic
        if compile:
            self.model.compile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        self._plain_backward = plain_backward(self.trainer)

    def training_step(self, batch: list[Step], batch_idx: int) -> torch.Tensor:
        """The loss of each step, on the device (the tracker reads them back in bulk)."""
        if self.automatic_optimization:
            (x, y), = batch
            return self.loss(self.model(x), y)
        optimizer = self.optimizers()
        losses = []
        for x, y in batch:
            loss = self.loss(self.model(x), y)
            optimizer.zero_grad()
            if self._plain_backward:
                loss.backward()
            else:
                self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> tuple[float, float]:
        """(mean loss, accuracy) over a whole split held on the device, in chunks; one host sync."""
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device, dtype=torch.long)
        # in the training's precision (bf16-mixed: autocast), as the training loss is computed
        with self._trainer.precision_plugin.forward_context() if self._trainer else nullcontext():
            for start in range(0, len(x), chunk):
                out = self.model(x[start:start + chunk])
                yc = y[start:start + chunk]
                loss_sum += self.loss(out, yc).float() * len(yc)
                if self.loss.task != "regression":
                    correct += self.loss.correct(out, yc)
        self.model.train(was_training)
        loss, acc = torch.stack([loss_sum / len(x), correct.float() / len(x)]).tolist()
        return loss, acc


def plain_backward(trainer: L.Trainer) -> bool:
    """Whether ``manual_backward(loss)`` would do nothing but ``loss.backward()``: a strategy that adds nothing
    around the backward pass (one device: no DDP synchronization), a precision without loss scaling (32-bit or
    bf16-mixed) and no callback or module hook on either side of it. Lightning's dispatch of those hooks costs
    ~300 Python calls a step, as much as the rest of the step's framework work together."""
    strategy, precision, module = trainer.strategy, trainer.precision_plugin, trainer.lightning_module
    hooks = ("on_before_backward", "on_after_backward")
    return (all(getattr(type(strategy), name) is getattr(Strategy, name)
                for name in ("backward", "pre_backward", "post_backward"))
            and type(precision) in (Precision, MixedPrecision) and getattr(precision, "scaler", None) is None
            and not any(is_overridden(hook, callback, Callback) for callback in trainer.callbacks for hook in hooks)
            and not any(is_overridden(hook, module, L.LightningModule) for hook in (*hooks, "backward")))
