"""Lightning's own callbacks in a study: ``conf/callbacks`` (a dict of ``_target_`` nodes) built next to the
study's own (tracker, diagnostics, checkpointing).

They see the study's validation as Lightning's: the tracker puts val/loss, val/acc (val/mse) and train/loss
into ``trainer.callback_metrics`` at the step it measures them and then calls every callback's
``on_validation_end``, the hook Lightning calls when its own validation loop ends (EarlyStopping and
ModelCheckpoint act there). Lightning batches then end at every validation step (see fit), so a callback that
acts at a batch's end (``ModelCheckpoint(every_n_train_steps=...)``) sees each validation too.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import lightning as L
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from trainstudy.errors import UserError, check_arguments


def logged_metrics(classification: bool) -> tuple[str, ...]:
    """What a run puts into trainer.callback_metrics: what a callback may monitor."""
    return ("val/loss", "val/acc" if classification else "val/mse", "train/loss")


def monitor_mode(metric: str) -> str:
    """Better is higher for an accuracy, lower for a loss or an error."""
    return "max" if metric.endswith("acc") else "min"


def _nodes(cfg: DictConfig) -> dict[str, Any]:
    """The configured callbacks by name; ``callbacks.<name>=null`` drops one."""
    return {name: node for name, node in (cfg.get("callbacks") or {}).items() if node is not None}


def validate_callbacks(cfg: DictConfig, classification: bool) -> None:
    """Every check that needs no data: a target that imports, arguments it takes, a metric the run logs."""
    metrics = logged_metrics(classification)
    for name, node in _nodes(cfg).items():
        key = f"callbacks.{name}"
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise UserError(f"{key} is not a callback: give it a _target_ "
                            f"(+{key}._target_=lightning.pytorch.callbacks.<Class>) or choose callbacks=<option>")
        try:
            cls = get_object(node._target_)
        except (ImportError, AttributeError, ValueError) as e:
            raise UserError(f"{key}._target_={node._target_} cannot be imported ({str(e).splitlines()[0][:80]}); "
                            "give a class such as lightning.pytorch.callbacks.EarlyStopping") from None
        if not (isinstance(cls, type) and issubclass(cls, L.Callback)):
            raise UserError(f"{key}._target_={node._target_} is not a Lightning callback")
        check_arguments(node, key)
        monitor = node.get("monitor")
        if monitor is not None and monitor not in metrics:
            raise UserError(f"{key}.monitor={monitor} is a metric this run never logs; it logs: "
                            f"{', '.join(metrics)} (null: the run's target metric)")
        if node._target_.endswith("RichProgressBar") and importlib.util.find_spec("rich") is None:
            raise UserError(f"{key} needs the rich package: pip install rich (or leave the tqdm bar: drop it)")


def build_callbacks(cfg: DictConfig, target_metric: str, progress_bar: bool) -> list[L.Callback]:
    """Instantiate the configured callbacks. ``monitor: null`` is the run's target metric and ``mode: null``
    the direction its metric improves in; a progress bar is left out where none is shown (not a terminal)."""
    built = []
    for node in _nodes(cfg).values():
        node = OmegaConf.to_container(node, resolve=True)
        if "monitor" in node and node["monitor"] is None:
            node["monitor"] = target_metric
        if "mode" in node and node["mode"] is None:
            node["mode"] = monitor_mode(node.get("monitor") or target_metric)
        callback = instantiate(node)
        if isinstance(callback, ProgressBar) and not progress_bar:
            continue
        built.append(callback)
    return built


def checkpointing(callbacks: list[L.Callback]) -> bool:
    """Whether the Trainer must enable checkpointing: Lightning refuses a ModelCheckpoint otherwise (and adds
    one of its own when enabled without one)."""
    return any(isinstance(cb, ModelCheckpoint) for cb in callbacks)
