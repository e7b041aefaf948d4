"""Learning-rate schedules: ``conf/scheduler`` holds a partial torch scheduler, stepped after every optimizer step.

A schedule is composed like the optimizer: ``instantiate(cfg.scheduler)`` is a partial that StudyModule calls
with its optimizer. Lengths left ``null`` in the config (``T_max``, ``total_steps``) are the run's planned
steps, known once the data is (steps per epoch); a run with no planned end can't have them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trainstudy.errors import UserError, check_arguments

# The arguments of a schedule that mean "the run's length in steps"; null in a config fills them in.
LENGTH_ARGUMENTS = ("T_max", "total_steps")

SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def planned_steps(trainer: DictConfig, steps_per_epoch: int) -> float:
    """The steps Lightning would train for (its defaults: max_epochs=None means 1000 unless max_steps is set)."""
    max_steps = trainer.get("max_steps", -1)
    max_steps = -1 if max_steps is None else max_steps
    max_epochs = trainer.get("max_epochs")
    if max_epochs is None:
        max_epochs = 1000 if max_steps == -1 else -1
    by_epochs = math.inf if max_epochs == -1 else max_epochs * steps_per_epoch
    return min(by_epochs, math.inf if max_steps == -1 else max_steps)


def scheduler_name(cfg: DictConfig) -> str:
    """``none``, or the schedule's class or function name (CosineAnnealingLR, warmup_cosine)."""
    target = (cfg.get("scheduler") or {}).get("_target_")
    return target.rsplit(".", 1)[-1] if target else "none"


def validate_scheduler(cfg: DictConfig) -> None:
    """Stop a schedule that can't be built before any data is loaded: an unknown target, an argument it does
    not take, a length to fill in on a run without a planned end."""
    node = cfg.get("scheduler")
    if not node or "_target_" not in node:
        return
    try:
        check_arguments(node, "scheduler")
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"scheduler._target_={node._target_} cannot be imported ({type(e).__name__}); "
                        "give a torch.optim.lr_scheduler class (e.g. torch.optim.lr_scheduler.StepLR)") from None
    unfilled = [key for key in LENGTH_ARGUMENTS if key in node and node[key] is None]
    if unfilled and math.isinf(planned_steps(cfg.trainer, 1)):
        raise UserError(f"scheduler.{unfilled[0]}=null means the run's length, but trainer.max_steps=-1 with "
                        f"trainer.max_epochs=-1 never ends; set trainer.max_steps=N or scheduler.{unfilled[0]}=N")


def build_scheduler(cfg: DictConfig, steps_per_epoch: int) -> SchedulerFactory | None:
    """The configured schedule as a partial that takes the optimizer (None: a constant lr)."""
    node = cfg.get("scheduler")
    if not node or "_target_" not in node:
        return None
    node = OmegaConf.to_container(node, resolve=True)
    total = planned_steps(cfg.trainer, steps_per_epoch)
    for key in LENGTH_ARGUMENTS:
        if key in node and node[key] is None:
            node[key] = int(total)
    return instantiate(node)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  last_epoch: int = -1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then cosine decay to 0: after k updates the lr is ``lr * factor(k)`` with

        factor(k) = (k + 1) / warmup_steps                                   for k < warmup_steps
        factor(k) = (1 + cos(pi * (k - warmup_steps) / (total_steps - warmup_steps))) / 2   up to total_steps

    (the first update already takes lr / warmup_steps: a zero first step would waste it).
    """
    if not 0 <= warmup_steps < total_steps:
        raise UserError(f"scheduler.warmup_steps={warmup_steps} must lie in [0, the run's {total_steps} steps)")
    # a partial, not a closure: LambdaLR's state_dict then holds no function, and a checkpoint stays loadable
    # with weights_only=True
    factor = functools.partial(_warmup_cosine_factor, warmup_steps, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=last_epoch)


def _warmup_cosine_factor(warmup_steps: int, total_steps: int, k: int) -> float:
    if k < warmup_steps:
        return (k + 1) / warmup_steps
    progress = min(1.0, (k - warmup_steps) / (total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def configure(optimizer: torch.optim.Optimizer, factory: SchedulerFactory | None,
              automatic: bool) -> Any:
    """What configure_optimizers returns. Lightning checkpoints a returned scheduler's state either way (so
    resume= restores it); it steps it itself only in automatic optimization ("interval": "step"), and in manual
    optimization StudyModule steps it after each update."""
    if factory is None:
        return optimizer
    scheduler = factory(optimizer)
    return {"optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"} if automatic else scheduler}
