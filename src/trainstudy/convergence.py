"""How fast a run converges: the per-step loss, validation at a fixed step interval, and the conv/* metrics.

Step k means "after k optimizer updates": train/loss at step k is the loss of the k-th batch, the
validation at step k is taken after k updates (step 0 = at init). The per-step losses stay on the
device and are read back every ``flush_every`` steps, so training pays no host sync per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_helpers import is_overridden

from trainstudy.loggers import log_scalars
from trainstudy.targets import best_key, best_value, reached


@dataclass
class ConvergenceState:
    """Everything the tracker has measured; a plain dict of it goes into checkpoints and metrics.json."""

    losses: list[float] = field(default_factory=list)       # train/loss at steps 1..n
    samples: list[int] = field(default_factory=list)        # samples seen after steps 1..n
    curve: list[dict[str, float]] = field(default_factory=list)  # {step, val/loss, val/acc}
    train_time_s: float = 0.0                               # training wall time, validation excluded
    reached_step: int | None = None
    reached_samples: int | None = None
    reached_time_s: float | None = None
    diverged_step: int | None = None

    def plain(self) -> dict[str, Any]:
        """dataclasses.asdict's result at a hundredth of its cost (~16 us against 1.6 ms at 1,266 steps; it deep-
        copies number by number, at every checkpoint): the lists copied, the curve's points too."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["losses"], out["samples"] = self.losses[:], self.samples[:]
        out["curve"] = [dict(point) for point in self.curve]
        return out


class ConvergenceRecord:
    """The tracker's bookkeeping without Lightning: losses and validations in, the conv/* metrics out.

    ConvergenceTracker feeds it from Lightning's hooks; the vectorized sweep feeds one per member.
    """

    def __init__(self, classification: bool, target_metric: str, target_value: float, stop_on_reach: bool = False):
        self.classification, self.metric, self.target = classification, target_metric, target_value
        self.stop_on_reach = stop_on_reach
        self.state = ConvergenceState()

    @property
    def diverged(self) -> bool:
        return self.state.diverged_step is not None

    def add_losses(self, values: list[float]) -> list[tuple[int, float]]:
        """Append the next steps' training losses up to the first non-finite one, where the run diverged.

        Returns the (step, loss) pairs kept, for the logger; nothing once the run has diverged.
        """
        if self.diverged:
            return []
        first = len(self.state.losses) + 1
        for i, value in enumerate(values):
            if not math.isfinite(value):
                self.state.diverged_step = first + i
                del self.state.samples[first + i - 1:]
                break
            self.state.losses.append(value)
        return list(enumerate(self.state.losses[first - 1:], start=first))

    def add_validation(self, point: dict[str, float]) -> bool:
        """Append a validation point ({step, val/loss, val/acc or val/mse}); True when the run should stop."""
        self.state.curve.append(point)
        step, value = point["step"], point[self.metric]
        if not math.isfinite(value) and self.state.diverged_step is None:
            self.state.diverged_step = step
            return True
        if self.state.reached_step is None and reached(self.metric, value, self.target):
            self.state.reached_step = step
            self.state.reached_samples = self.state.samples[step - 1] if step else 0
            self.state.reached_time_s = self.state.train_time_s
            return self.stop_on_reach
        return False

    def summary(self) -> dict[str, float | int | None]:
        """The conv/* metrics. A target never reached is None (reported as such), never a fake number."""
        s = self.state
        steps = len(s.losses) if s.diverged_step is None else s.diverged_step
        out: dict[str, float | int | None] = {
            "conv/reached": int(s.reached_step is not None),
            "conv/steps_to_target": s.reached_step,
            # a censored observation every run has: steps to target where reached, else the steps it made
            "conv/steps_observed": s.reached_step if s.reached_step is not None else steps,
            "conv/samples_to_target": s.reached_samples,
            "conv/time_to_target_s": s.reached_time_s,
            "conv/loss_auc": sum(s.losses) / len(s.losses) if s.losses else None,
            "conv/final_val_loss": s.curve[-1]["val/loss"] if s.curve else None,
            "conv/diverged": int(s.diverged_step is not None),
            "conv/diverged_step": s.diverged_step,
            "conv/steps": steps,
            "conv/train_time_s": s.train_time_s,
        }
        # the best of every validation metric, the target's among them (conv/best_val_acc, ..._loss, ..._mse)
        for metric in ("val/acc", "val/loss") if self.classification else ("val/loss", "val/mse"):
            out[best_key(metric)] = best_value(s.curve, metric)
        if self.classification:
            out["conv/final_val_acc"] = s.curve[-1]["val/acc"] if s.curve else None
        return out


class ConvergenceTracker(Callback):
    """Validates every ``val_every_n_steps``, logs train/loss per step, detects divergence and the target.

    Lightning sees each validation as its own: the values go into ``trainer.callback_metrics`` at their step,
    then every other callback's ``on_validation_end`` runs (EarlyStopping, ModelCheckpoint act there), from
    step 1 on (step 0 measures the init). With a scheduler, the lr after each step is logged as train/lr.
    """

    def __init__(self, x_val: torch.Tensor, y_val: torch.Tensor, classification: bool, target_metric: str,
                 target_value: float, val_every_n_steps: int, flush_every: int = 50, stop_on_reach: bool = False):
        self.x_val, self.y_val = x_val, y_val
        self.record = ConvergenceRecord(classification, target_metric, target_value, stop_on_reach)
        self.metric, self.classification = target_metric, classification
        self.val_every = val_every_n_steps
        self.flush_every = flush_every
        self._pending: list[torch.Tensor] = []
        self._pending_samples: list[int] = []
        self._pending_lr: list[float] = []
        self._lr_group: dict[str, Any] | None = None  # the optimizer's first param group, when the lr changes
        self._validation_end: tuple[Any, ...] = ()
        self._samples = 0
        self._clock: float | None = None

    # --- timing: training wall time only ------------------------------------------------------------
    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def _pause(self, module: L.LightningModule) -> None:
        self._sync(module)
        if self._clock is not None:
            self.state.train_time_s += time.perf_counter() - self._clock
            self._clock = None

    def _resume(self) -> None:
        self._clock = time.perf_counter()

    @contextmanager
    def untimed(self, module: L.LightningModule) -> Iterator[None]:
        """Work during training that is not training (the diagnostics' weight histograms): off the clock."""
        running = self._clock is not None
        self._pause(module)
        try:
            yield
        finally:
            if running:
                self._resume()

    # --- Lightning hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.x_val, self.y_val = self.x_val.to(module.device), self.y_val.to(module.device)
        self._validation_end = tuple(cb.on_validation_end for cb in trainer.callbacks
                                     if cb is not self and is_overridden("on_validation_end", cb, Callback))
        self._lr_group = trainer.optimizers[0].param_groups[0] if trainer.lr_scheduler_configs else None
        self._samples = self.state.samples[-1] if self.state.samples else 0
        if not self.state.curve:
            self._validate(trainer, module, step=0)
        self._resume()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if getattr(module, "reports_steps", False):
            return  # StudyModule called on_train_step_end after each of the batch's steps
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        (x, _), = batch  # automatic optimization: one step per batch
        self.on_train_step_end(trainer, module, loss.detach(), len(x))

    def on_train_step_end(self, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor,
                          samples: int) -> None:
        """After each optimizer step (trainer.global_step counts it): its loss, still on the device, and batch
        size. Validates at every ``val_every_n_steps``, reads the losses back every ``flush_every``."""
        self._pending.append(loss)  # a 0-d tensor per step
        self._pending_samples.append(samples)
        if self._lr_group is not None:
            self._pending_lr.append(self._lr_group["lr"])  # a float: no sync
        step = trainer.global_step
        if step % self.val_every == 0:
            self._pause(module)
            if self._flush(trainer):
                self._validate(trainer, module, step)
            self._resume()
        elif len(self._pending) >= self.flush_every:
            self._flush(trainer)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._pause(module)
        if self._flush(trainer) and self.state.curve[-1]["step"] != trainer.global_step:
            self._validate(trainer, module, trainer.global_step)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._pause(module)
        self.flush(trainer)  # an interrupted run keeps every loss it computed (and its checkpoint has them)

    @property
    def state(self) -> ConvergenceState:
        return self.record.state

    def state_dict(self) -> dict[str, Any]:
        """The state for a checkpoint, its per-step lists as one float64 and one int64 tensor: pickled as lists,
        each number is an object of its own (~0.5 us each, at every save: a run's saves would cost it O(steps^2)).
        float64 holds every loss exactly (each was a float32 before)."""
        state = self.state.plain()
        state["losses"] = torch.tensor(state["losses"], dtype=torch.float64)
        state["samples"] = torch.tensor(state["samples"], dtype=torch.int64)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        for key in ("losses", "samples"):  # a tensor, or a list (a checkpoint from before they were tensors)
            if isinstance(state[key], torch.Tensor):
                state[key] = state[key].tolist()
        self.record.state = ConvergenceState(**state)

    # --- the work -------------------------------------------------------------------------------------
    def flush(self, trainer: L.Trainer) -> bool:
        """Log the losses still on the device (see _flush); before a checkpoint so both agree on the step."""
        return self._flush(trainer)

    def _flush(self, trainer: L.Trainer) -> bool:
        """Read the pending losses back (one sync), log them, stop at the first non-finite one.

        Returns False once the run has diverged.
        """
        if self.record.diverged:
            self._pending.clear()
            self._pending_samples.clear()
            self._pending_lr.clear()
            return False
        if not self._pending:
            return True
        losses, counts = self._global(trainer, torch.stack(self._pending).float(), self._pending_samples)
        for n in counts:
            self._samples += n
            self.state.samples.append(self._samples)
        first = len(self.state.losses) + 1
        lrs = self._pending_lr[:]
        self._pending.clear()
        self._pending_samples.clear()
        self._pending_lr.clear()
        for step, value in self.record.add_losses(losses):
            scalars = {"train/loss": value}
            if lrs:
                scalars["train/lr"] = lrs[step - first]  # after this step's update (step k: after k)
            log_scalars(trainer.loggers, scalars, step)
        if self.record.diverged:
            trainer.should_stop = True
            return False
        return True

    @staticmethod
    def _global(trainer: L.Trainer, losses: torch.Tensor, counts: list[int]) -> tuple[list[float], list[int]]:
        """Each step's loss and samples over every device: one device's as they are; under DDP, where each rank
        took its share of the batch, the sample-weighted mean loss and the summed count (one all-reduce per
        flush, at the same steps on every rank). Every rank then holds the same record, and, since DDP keeps the
        weights equal, validates to the same numbers and stops at the same step."""
        if trainer.world_size == 1:
            return losses.tolist(), list(counts)  # a copy: the caller clears its pending list
        n = torch.tensor(counts, dtype=losses.dtype, device=losses.device)
        total = trainer.strategy.reduce(torch.stack([losses * n, n]), reduce_op="sum")
        return (total[0] / total[1]).tolist(), [round(c) for c in total[1].tolist()]

    def _validate(self, trainer: L.Trainer, module: L.LightningModule, step: int) -> None:
        loss, acc = module.evaluate(self.x_val, self.y_val)
        point = {"step": step, "val/loss": loss}
        if self.classification:
            point["val/acc"] = acc
        else:  # val/loss is each run's own loss: regression losses compare on the clean-data MSE
            point["val/mse"] = self._mse(module)
        values = {k: v for k, v in point.items() if k != "step"}
        log_scalars(trainer.loggers, values, step)
        if self.record.add_validation(point):
            trainer.should_stop = True
        self._publish(trainer, module, values, step)

    def _publish(self, trainer: L.Trainer, module: L.LightningModule, values: dict[str, float], step: int) -> None:
        """Lightning's view of a validation: its metrics in callback_metrics (float64, so 475/500 stays 0.95
        exactly), then the on_validation_end hooks. Validation time, as the clock sees it."""
        metrics = trainer.callback_metrics
        for key, value in values.items():
            metrics[key] = torch.tensor(value, dtype=torch.float64)
        if self.state.losses:
            metrics["train/loss"] = torch.tensor(self.state.losses[-1], dtype=torch.float64)
        if step == 0:
            return
        for hook in self._validation_end:
            hook(trainer, module)

    @torch.no_grad()
    def _mse(self, module: L.LightningModule) -> float:
        """Mean squared error of the model on the validation split, whatever loss it trains on."""
        was_training = module.training
        module.eval()
        mse = torch.nn.functional.mse_loss(module(self.x_val).float(), self.y_val.float()).item()
        module.train(was_training)
        return mse

    def summary(self) -> dict[str, float | int | None]:
        return self.record.summary()
