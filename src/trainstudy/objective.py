"""What ``main()`` hands a Hydra sweeper to optimize: one number per run, and the direction in which it is better.

``objective=steps_to_target`` (minimize): ``conv/steps_to_target``. Steps to target are censored: a run that
never reached it only says "more than it ran", so it scores +inf, below every run that reached. A finite
stand-in (its steps + 1) would be a made-up number, and a wrong one where a run stopped early (early stopping,
divergence) after fewer steps than another took to reach the target.

``objective=best``: the target metric's best value from step 1 on (``conv/best_val_acc`` maximized,
``conv/best_val_loss`` / ``conv/best_val_mse`` minimized), reached or not.

Either way a diverged run scores the worst (the value it held before it blew up would favour exactly the lrs
that blow up), and so does a failed job: never NaN, which hydra-optuna-sweeper 1.3 turns into an error that
ends the whole sweep; None would make Optuna mark the trial failed, but a study whose every trial failed then
ends in a traceback instead of the sweep's table of jobs (which says which failed, with a non-zero exit).
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig

from trainstudy.errors import UserError
from trainstudy.targets import best_key, target_metric

OBJECTIVES = ("steps_to_target", "best")


def validate_objective(cfg: DictConfig) -> None:
    """A typo in ``objective`` stops before any data is loaded, not after the run."""
    objective = cfg.get("objective")
    if objective not in OBJECTIVES:
        raise UserError(f"objective must be steps_to_target (fewest steps to the target) or best (the target "
                        f"metric's best value), got {objective!r} (e.g. objective=best)")


def direction(cfg: DictConfig) -> str:
    """``minimize`` or ``maximize``: which way the objective of this config gets better."""
    if cfg.objective == "best" and target_metric(cfg) == "val/acc":
        return "maximize"
    return "minimize"


def objective_value(cfg: DictConfig, result: dict[str, Any] | None) -> float:
    """The run's objective (see the module's docstring); ``result`` is what cli.run returned."""
    worst = math.inf if direction(cfg) == "minimize" else -math.inf
    result = result or {}
    metrics = result.get("metrics") or {}
    if result.get("status") != "ok" or metrics.get("conv/diverged"):
        return worst
    key = "conv/steps_to_target" if cfg.objective == "steps_to_target" else best_key(result["target"]["metric"])
    value = metrics.get(key)
    return worst if value is None else float(value)


def check_sweeper_direction(config: DictConfig) -> None:
    """At the start of a sweep: a sweeper that optimizes (it has a ``direction``) must go the objective's way,
    else it would look for the slowest lr and call it the best."""
    sweeper = config.hydra.get("sweeper") or {}
    if "direction" not in sweeper:
        return
    validate_objective(config)
    given = sweeper.direction
    given = [getattr(d, "name", d) for d in given] if isinstance(given, (list, ListConfig)) else getattr(given, "name", given)
    wanted = direction(config)
    if given != wanted:
        raise UserError(f"hydra.sweeper.direction={given} but objective={config.objective} of "
                        f"{target_metric(config)} is better {'smaller' if wanted == 'minimize' else 'larger'}: "
                        f"set hydra.sweeper.direction={wanted}")
