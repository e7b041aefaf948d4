"""A trained module on one split: the test split at the end of a run, and ``scripts/evaluate.py`` on a run folder.

The test split is measured here and nowhere else: once, at the end, on the weights a run ends with (and on
any other weights a caller hands over, such as a best-by-validation checkpoint). Nothing selects on it: the
target, early stopping and the report's "best" read validation metrics only.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from trainstudy.data import DataSplits
from trainstudy.errors import UserError
from trainstudy.module import StudyModule
from trainstudy.resume import CHECKPOINT, checksum_matches

SPLITS = ("train", "val", "test")


def split_tensors(splits: DataSplits, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) of one split, by name."""
    if split not in SPLITS:
        raise UserError(f"split={split} is not a split; use split=<one of {', '.join(SPLITS)}>")
    return getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")


def evaluate_split(module: StudyModule, splits: DataSplits, split: str = "test",
                   precision: AbstractContextManager | None = None) -> dict[str, float]:
    """``{split}/acc`` (``{split}/mse`` for regression) and ``{split}/loss`` of the module's weights as they
    are, on the module's device, by StudyModule.evaluate (the validation's own arithmetic). ``precision``: a
    context to evaluate in where the module has no trainer (see precision_context)."""
    x, y = split_tensors(splits, split)
    with precision or nullcontext():
        loss, second = module.evaluate(x.to(module.device), y.to(module.device))
    return {f"{split}/{'mse' if splits.task == 'regression' else 'acc'}": second, f"{split}/loss": loss}


def metrics_line(metrics: dict[str, float], samples: int) -> str:
    """``test/acc 0.9530 · test/loss 0.1612 · 10,000 samples``"""
    return " · ".join([*(f"{name} {value:.4f}" for name, value in metrics.items()), f"{samples:,} samples"])


def precision_context(trainer_cfg: DictConfig, device: torch.device) -> AbstractContextManager:
    """The autocast a run's Lightning precision applied to its forward passes (none at 32-bit), so that an
    evaluation outside the trainer computes what the run computed."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    if precision.startswith("bf16") and "mixed" in precision:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16") and "mixed" in precision:
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def load_run(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[StudyModule, DictConfig]:
    """A run's module with its final weights (``checkpoints/last.ckpt``, checked against its checksum) and the
    run's own configuration, which the checkpoint carries."""
    ckpt = Path(run_dir) / CHECKPOINT
    if not ckpt.is_file():
        if not (Path(run_dir) / ".hydra").is_dir():
            raise UserError(f"{run_dir} is not a run folder (no .hydra/); give the folder a run printed at its end, "
                            "e.g. outputs/runs/<date>/<time>")
        raise UserError(f"{run_dir} has no {CHECKPOINT}: the run saved none (checkpoint.every_n_steps=0, or it "
                        "stopped before its first); train it again with checkpoints on to evaluate it")
    try:
        payload: dict[str, Any] = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same problem for the user
        raise UserError(f"cannot read {ckpt} ({type(e).__name__}); it is damaged") from None
    if not checksum_matches(payload):
        raise UserError(f"checkpoint {ckpt} is damaged (checksum mismatch); its weights can't be trusted")
    if "cfg" not in payload.get("hyper_parameters", {}):
        raise UserError(f"{ckpt} was written before checkpoints carried their run's configuration; "
                        "train the run again to evaluate it")
    module = StudyModule.load_from_checkpoint(ckpt, map_location=map_location, weights_only=True)
    return module, OmegaConf.create(module.hparams["cfg"])


def evaluate_run(run_dir: Path, split: str = "test", data_dir: str | None = None) -> tuple[dict[str, float], int]:
    """A run's final weights on one of its splits, as the run computed its own: its config, data, threads,
    device and precision. Returns the metrics and the split's sample count."""
    from trainstudy.data import load_data
    from trainstudy.train import set_threads
    from trainstudy.vectorized import training_device

    if split not in SPLITS:  # before the checkpoint and the data are read
        raise UserError(f"split={split} is not a split; use split=<one of {', '.join(SPLITS)}>")
    module, cfg = load_run(run_dir)
    device = training_device(cfg.trainer)
    set_threads(cfg.get("threads", 1))  # float sums depend on the thread count: the run's own
    splits = load_data(cfg.data, data_dir or cfg.data_dir)
    module.to(device)
    metrics = evaluate_split(module, splits, split, precision_context(cfg.trainer, device))
    return metrics, len(split_tensors(splits, split)[1])
