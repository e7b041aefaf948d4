"""The run's loggers: built from conf/logger, each writing where a person looks for it; every scalar to each.

conf/logger holds one logger (``_target_`` at its top) or, for ``logger=many``, several under names of their own
(Hydra merges mappings, not lists); either way a run gets a list. Where each one writes:

    TensorBoard  the run's tb/ (a sweep's: <sweep>/tb/<run name>)
    CSV          <run>/csv/metrics.csv
    MLflow       a local store, outputs/mlruns by default: an experiment per sweep (named by its folder), one
                 experiment "runs" for single runs; the run's name as MLflow's run name
    W&B          offline (logger.offline=false syncs), files under <run>/wandb/; grouped by sweep like MLflow
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from trainstudy.errors import UserError
from trainstudy.paths import shown

# the package each heavy logger needs and the extra that installs it
EXTRAS = {"MLFlowLogger": ("mlflow", "mlflow"), "WandbLogger": ("wandb", "wandb")}


def logger_configs(cfg: DictConfig) -> list[DictConfig]:
    """The logger configs of a run: conf/logger's one, or each of logger=many's."""
    node = cfg.get("logger")
    if node is None:
        return []
    if "_target_" in node:
        return [node]
    return [sub for sub in node.values() if sub is not None]


def kind(logger_cfg: DictConfig) -> str:
    """The logger's class name: TensorBoardLogger, CSVLogger, MLFlowLogger, WandbLogger, ..."""
    return str(logger_cfg._target_).rsplit(".", 1)[-1]


def kinds(cfg: DictConfig) -> list[str]:
    return [kind(c) for c in logger_configs(cfg)]


def validate_loggers(cfg: DictConfig) -> None:
    """A heavy logger without its package: one line before any data is loaded."""
    for name in kinds(cfg):
        if name in EXTRAS:
            package, extra = EXTRAS[name]
            if importlib.util.find_spec(package) is None:
                raise UserError(f"{name} needs the {package} package, not installed here: "
                                f'pip install -e ".[{extra}]" (or choose logger=tensorboard)')


def run_label(cfg: DictConfig) -> str:
    """The run's name outside TensorBoard: a sweep job's TensorBoard run name, or a single run's folder."""
    if cfg.paths.get("multirun") and cfg.paths.get("tb_dir"):
        return Path(cfg.paths.tb_dir).name
    return shown(cfg.paths.output_dir)


def study_label(cfg: DictConfig) -> str:
    """What groups runs in MLflow and W&B: the sweep's folder (a job's folder is <sweep>/<n>), or "runs"."""
    return shown(Path(cfg.paths.output_dir).parent) if cfg.paths.get("multirun") else "runs"


def tracking_uri(location: str) -> str:
    """MLflow's tracking URI: a folder becomes a ``file:`` store (absolute: the run may chdir), a URI stays.

    MLflow 3 refuses file stores unless MLFLOW_ALLOW_FILE_STORE is set (it would have a database); a folder per
    run takes a sweep's parallel jobs without locking and needs no database package, so a folder sets it for
    this process (a user's own setting stays).
    """
    if "://" in location and not location.startswith("file:"):
        return location
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return location if location.startswith("file:") else Path(location).resolve().as_uri()


def arguments(logger_cfg: DictConfig, cfg: DictConfig, tb_dir: Path, purge_step: int | None) -> dict[str, Any]:
    """What a logger of this kind is given per run (the rest comes from its config)."""
    out_dir = Path(cfg.paths.output_dir)
    name = kind(logger_cfg)
    if name == "TensorBoardLogger":
        return {"save_dir": str(tb_dir), **({"purge_step": purge_step} if purge_step is not None else {})}
    if name == "CSVLogger":
        return {"save_dir": str(out_dir / "csv")}
    if name == "MLFlowLogger":
        return {"tracking_uri": tracking_uri(str(logger_cfg.get("tracking_uri") or "outputs/mlruns")),
                "experiment_name": logger_cfg.get("experiment_name") or study_label(cfg),
                "run_name": logger_cfg.get("run_name") or run_label(cfg)}
    if name == "WandbLogger":
        return {"save_dir": str(out_dir), "name": logger_cfg.get("name") or run_label(cfg),
                "group": logger_cfg.get("group") or study_label(cfg)}
    return {"save_dir": str(tb_dir)}  # another Lightning logger: where the run's logs have always gone


def build_loggers(cfg: DictConfig, tb_dir: Path, purge_step: int | None = None) -> list[Any]:
    """The run's Lightning loggers, in conf/logger's order (the first is what ``trainer.logger`` returns).

    ``purge_step``: a resumed run's TensorBoard drops the events a hard kill wrote past its checkpoint.
    """
    validate_loggers(cfg)
    return [instantiate(c, **arguments(c, cfg, tb_dir, purge_step)) for c in logger_configs(cfg)]


def log_scalars(loggers: Iterable[Any], values: dict[str, float], step: int) -> None:
    """The same scalars to every logger (Lightning's ``trainer.logger`` is only the first of several)."""
    for logger in loggers:
        logger.log_metrics(values, step=step)


def close(loggers: Iterable[Any], status: str) -> None:
    """End each logger's run. W&B keeps a run open until the process exits: the next job of a sweep in this
    process would otherwise start while it is still open."""
    for logger in loggers:
        logger.finalize(status)
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish(exit_code=0 if status == "success" else 1)
