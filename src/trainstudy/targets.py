"""What reaching a target and "best" mean, as pure functions over a validation curve, and which metric a config
targets; light (no torch), so the report and the command line use the very same definitions as the tracker
without importing it."""

from __future__ import annotations

import math

from omegaconf import DictConfig


def reached(metric: str, value: float, target: float) -> bool:
    """val/acc reaches a target from below, val/loss from above."""
    return value >= target if metric == "val/acc" else value <= target


def steps_to_target(curve: list[dict[str, float]], metric: str, target: float) -> int | None:
    """First validation step whose metric reaches the target, or None."""
    return next((p["step"] for p in curve if reached(metric, p[metric], target)), None)


def best_value(curve: list[dict[str, float]], metric: str) -> float | None:
    """The best finite value of ``metric`` the training reached (highest acc, lowest loss or mse), or None.

    Step 0 is left out: it measures the init, not learning (a zero init's argmax ties all pick class 0, which
    scores one class's share of the split without anything having been learned).
    """
    values = [p[metric] for p in curve
              if p.get("step", 0) > 0 and p.get(metric) is not None and math.isfinite(p[metric])]
    if not values:
        return None
    return max(values) if metric == "val/acc" else min(values)


def best_key(metric: str) -> str:
    """The metrics.json key of a validation metric's best value: val/mse -> conv/best_val_mse."""
    return "conv/best_" + metric.replace("/", "_")


def task_of(data_cfg: DictConfig) -> str:
    """The task a data config declares (binary when it names positive classes)."""
    if data_cfg.get("task") == "regression":
        return "regression"
    return "binary" if data_cfg.get("positive_classes") else "multiclass"


def target_metric(cfg: DictConfig) -> str:
    """val/acc for classification, val/loss for regression, unless target.metric says otherwise."""
    return cfg.target.get("metric") or ("val/loss" if task_of(cfg.data) == "regression" else "val/acc")
