"""The progress bar of a run, in optimizer steps: total, rate, ETA, the current train/loss and the last validation.

Lightning's own bar counts Lightning batches, which here are groups of up to 64 steps (see StudyModule), and
has no total since the batches have no len(). This one hears of every step (StudyModule calls its
``on_train_step_end``) and lets tqdm decide when to redraw. Its numbers come from the tracker's record as the
tracker reads them back (every log_every_n_steps, and at each validation): the bar adds no host sync.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm

from trainstudy.convergence import ConvergenceRecord


class StepProgressBar(ProgressBar):
    """``train: 37%|███▋   | 370/1000 [00:02<00:04, 150step/s, train/loss=0.412, val/acc=0.871]``.

    ``total``: the run's planned steps (None: no planned end); ``stream``: where it draws (None: stderr).
    """

    def __init__(self, total: int | None, record: ConvergenceRecord, stream: TextIO | None = None):
        super().__init__()
        self.total, self.record, self.stream = total, record, stream
        self.bar: tqdm | None = None
        self._enabled = True
        self._shown = (-1, -1)  # (losses, validations) of the record when the postfix was last set

    # ProgressBar's interface: the Trainer turns the bar off on ranks other than 0
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        tqdm.write(" ".join(map(str, args)), file=self.stream or sys.stderr, **kwargs)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self._enabled:
            return
        self.bar = tqdm(total=self.total, initial=trainer.global_step, desc="train", unit="step",
                        file=self.stream or sys.stderr, dynamic_ncols=True, leave=True)
        self._show()

    def on_train_step_end(self, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor,
                          samples: int) -> None:
        bar = self.bar
        if bar is None:
            return
        bar.update()  # tqdm redraws at most every 0.1 s: in between, a few attribute reads
        state = self.record.state
        if len(state.losses) != self._shown[0] or len(state.curve) != self._shown[1]:
            self._show()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not getattr(module, "reports_steps", False):  # automatic optimization: one step per batch
            self.on_train_step_end(trainer, module, outputs, 0)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    def _show(self) -> None:
        """The postfix from what the tracker has read back: the latest train/loss, the latest validation."""
        state = self.record.state
        self._shown = (len(state.losses), len(state.curve))
        postfix = {}
        if state.losses:
            postfix["train/loss"] = f"{state.losses[-1]:.4g}"
        if state.curve:
            postfix[self.record.metric] = f"{state.curve[-1][self.record.metric]:.4g}"
        self.bar.set_postfix(postfix, refresh=False)

    def _close(self) -> None:
        if self.bar is not None:
            self._show()  # the tracker's last flush and validation come at train end, before this callback's
            self.bar.close()
            self.bar = None
