"""The LightningModule of a study: a model, a task-shaped loss and a partial optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import OmegaConf
from torch import nn

from trainstudy.losses import StudyLoss, build_loss
from trainstudy.models import build_model
from trainstudy.schedulers import SchedulerFactory, configure

Step = tuple[torch.Tensor, torch.Tensor]  # the (x, y) batch of one optimizer step


class StudyModule(L.LightningModule):
    """Trains ``model`` on ``loss``; ``optimizer`` is a partial that takes the parameters.

    A training batch is a group of steps (see DeviceBatches), taken here one after the other with manual
    optimization: each step is counted by Lightning's optimizer and runs the hooks around the update as in
    automatic optimization (through Lightning's whole optimizer path, or where that would add nothing, see
    plain_optimizer_step, by calling them directly), and Lightning's per-batch machinery is paid once per group. After every step, each callback with an ``on_train_step_end(trainer, module, loss,
    samples)`` method hears of it (the tracker validates there, at its exact step), and the group ends early
    once one of them sets ``trainer.should_stop``. ``automatic=True`` leaves the one step of each batch to
    Lightning, as Trainer-side gradient clipping and accumulation require. ``compile`` compiles the model's
    forward with torch.compile (layers and their names stay as they are). ``scheduler`` is a partial torch
    lr scheduler that takes the optimizer, stepped after every update.

    Given ``cfg`` (the run's configuration as a plain dict) and ``shapes`` (what the model's size came from:
    task, input_shape, num_classes, out_features), the module saves them as its hyperparameters, so that
    ``StudyModule.load_from_checkpoint(path)`` rebuilds the same model, loss and optimizer from them (Lightning
    calls ``StudyModule(**hyperparameters)``, without model, loss and optimizer) and loads the weights; it
    is rebuilt to be evaluated, without the lr schedule.
    """

    # decided when training starts: see plain_backward() and plain_optimizer_step()
    _plain_backward = False
    _plain_step = False
    _before_step: tuple[Callable[..., Any], ...] = ()
    _step_end: tuple[Callable[..., Any], ...] = ()
    _scheduler: Any = None

    def __init__(self, model: nn.Module | None = None, loss: StudyLoss | None = None,
                 optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
                 automatic: bool = False, compile: bool = False, eval_chunk: int = 1024,
                 scheduler: SchedulerFactory | None = None,
                 cfg: dict[str, Any] | None = None, shapes: dict[str, Any] | None = None):
        super().__init__()
        if cfg is not None:
            # logger=False: the run fills TensorBoard's HParams tab itself (train.log_hparams), with its metrics
            self.save_hyperparameters({"cfg": cfg, "shapes": shapes, "automatic": automatic, "compile": compile,
                                       "eval_chunk": eval_chunk}, logger=False)
        if model is None:
            if cfg is None or shapes is None:
                raise TypeError("StudyModule needs model, loss and optimizer, or the cfg and shapes to build them")
            model, loss, optimizer = _components(cfg, shapes)
        self.model, self.loss, self.optimizer_factory = model, loss, optimizer
        self.scheduler_factory = scheduler
        self.eval_chunk = eval_chunk
        self.automatic_optimization = automatic
        if compile:
            self.model.compile()

    @property
    def reports_steps(self) -> bool:
        """Whether on_train_step_end listeners hear of every step from here (else: a step per batch, after it)."""
        return not self.automatic_optimization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        trainer = self.trainer
        self._plain_backward = plain_backward(trainer)
        self._plain_step = plain_optimizer_step(trainer, self.optimizers())
        # the on_before_optimizer_step hooks the precision plugin would call, called directly on a plain step
        self._before_step = tuple(cb.on_before_optimizer_step for cb in trainer.callbacks
                                  if is_overridden("on_before_optimizer_step", cb, Callback))
        if is_overridden("on_before_optimizer_step", self, L.LightningModule):
            self._before_step += (lambda _trainer, module, optimizer: module.on_before_optimizer_step(optimizer),)
        self._step_end = tuple(cb.on_train_step_end for cb in trainer.callbacks if hasattr(cb, "on_train_step_end"))
        # in manual optimization stepping the scheduler is ours (Lightning restored its state on resume)
        self._scheduler = None if self.automatic_optimization else self.lr_schedulers()

    def training_step(self, batch: Iterable[Step], batch_idx: int) -> torch.Tensor:
        """The loss of each step taken, on the device (the tracker reads them back in bulk)."""
        if self.automatic_optimization:
            (x, y), = batch
            return self.loss(self.model(x), y)
        trainer, optimizer = self.trainer, self.optimizers()
        plain, scheduler = self._plain_step, self._scheduler
        inner = optimizer.optimizer
        losses = []
        for x, y in batch:
            loss = self.loss(self.model(x), y)
            if plain:
                inner.zero_grad()
                loss.backward()
                # what LightningOptimizer.step -> Strategy -> Precision.optimizer_step do on one device at this
                # precision, without ~100 Python calls of dispatch: count the step, call the hooks, update
                optimizer._on_before_step()
                for hook in self._before_step:
                    hook(trainer, self, inner)  # as Lightning does: the torch optimizer
                inner.step()
                optimizer._on_after_step()
            else:
                optimizer.zero_grad()
                if self._plain_backward:
                    loss.backward()
                else:
                    self.manual_backward(loss)
                optimizer.step()
            if scheduler is not None:  # before the listeners: a stop after them still leaves both in step
                scheduler.step()
            loss = loss.detach()
            losses.append(loss)
            for listener in self._step_end:
                listener(trainer, self, loss, len(x))
            if trainer.should_stop:
                break
        return torch.stack(losses)

    def configure_optimizers(self) -> Any:
        return configure(self.optimizer_factory(self.model.parameters()), self.scheduler_factory,
                         self.automatic_optimization)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> tuple[float, float]:
        """(mean loss, accuracy as correct / total in float64; for regression the MSE) over a whole split held on
        the device, in chunks of ``eval_chunk`` samples (train builds it with 4 training batches: a validation
        pass then needs about the memory of a training step, and a CNN's pass over Fashion-MNIST's 6,000
        validation images takes ~40% less time than in one chunk, with ~250 MB less memory); one host sync."""
        chunk = chunk or self.eval_chunk
        was_training = self.model.training
        self.model.eval()
        # in the training's precision (bf16-mixed: autocast), as the training loss is computed
        with self._trainer.precision_plugin.forward_context() if self._trainer else nullcontext():
            sums = self._split_sums(x, y, chunk)
        self.model.train(was_training)
        return self._means(sums, x, y)

    def _split_sums(self, x: torch.Tensor, y: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of loss * samples, correct predictions or, for regression, squared errors) over x in chunks, on
        the device: the one arithmetic of evaluate, validation_step and test_step, so all three agree."""
        regression = self.loss.task == "regression"
        loss_sum = torch.zeros((), device=x.device)
        second = torch.zeros((), device=x.device, dtype=torch.float32 if regression else torch.long)
        for start in range(0, len(x), chunk):
            out = self.model(x[start:start + chunk])
            yc = y[start:start + chunk]
            loss_sum += self.loss(out, yc).float() * len(yc)
            second += (out.float() - yc.float()).pow(2).sum() if regression else self.loss.correct(out, yc)
        return loss_sum, second

    def _means(self, sums: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(mean loss, accuracy or MSE) from _split_sums, in one host sync."""
        # the count comes back whole and is divided in float64: 475/500 is 0.95 exactly as a float64 threshold
        # reads it, where float32's 0.94999999 would miss a target of 0.95 (float64 holds counts up to 2**53)
        loss_sum, second = torch.stack([s.double() for s in sums]).tolist()
        return loss_sum / len(x), second / (y.numel() if self.loss.task == "regression" else len(x))

    # trainer.validate(module, datamodule) and trainer.test(...): the datamodule's loaders yield a whole split as
    # one batch, which is summed in evaluate's chunks; Lightning logs the means (as float32, its logging dtype)
    def validation_step(self, batch: Step, batch_idx: int) -> None:
        self._log_split("val", *batch)

    def test_step(self, batch: Step, batch_idx: int) -> None:
        self._log_split("test", *batch)

    def _log_split(self, split: str, x: torch.Tensor, y: torch.Tensor) -> None:
        loss, second = self._means(self._split_sums(x, y, self.eval_chunk), x, y)
        self.log(f"{split}/loss", loss, batch_size=len(x))
        self.log(f"{split}/{'mse' if self.loss.task == 'regression' else 'acc'}", second, batch_size=len(x))


def _components(cfg: dict[str, Any], shapes: dict[str, Any]) -> tuple[nn.Module, StudyLoss, Callable]:
    """The model, loss and optimizer partial a run's config and data shapes describe (weights not initialized:
    a checkpoint's are loaded over them)."""
    conf = OmegaConf.create(cfg)
    loss = build_loss(conf.loss, shapes["task"], shapes["num_classes"])
    model = build_model(conf.model, tuple(shapes["input_shape"]), shapes["out_features"])
    return model, loss, instantiate(conf.optim)


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


def plain_optimizer_step(trainer: L.Trainer, optimizer: Any) -> bool:
    """Whether ``optimizer.step()`` (a LightningOptimizer in manual optimization) would do nothing but count the
    step, call the on_before_optimizer_step hooks and step the torch optimizer: a plain backward (see
    plain_backward: one device, 32-bit or bf16-mixed precision, no loss scaling), a strategy whose optimizer_step
    is Strategy's own, no closure-taking optimizer (LBFGS), and a Lightning whose optimizer counts steps through
    the two callables its manual-optimization loop sets (Lightning 2.x). Otherwise the full path runs."""
    return (plain_backward(trainer)
            and type(trainer.strategy).optimizer_step is Strategy.optimizer_step
            and not isinstance(getattr(optimizer, "optimizer", None), torch.optim.LBFGS)
            and callable(getattr(optimizer, "_on_before_step", None))
            and callable(getattr(optimizer, "_on_after_step", None)))
