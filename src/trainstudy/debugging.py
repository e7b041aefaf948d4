"""Lightning's debugging flags, counted in optimizer steps (``conf/debug`` sets them; ``+trainer.<flag>=`` too).

Lightning counts ``fast_dev_run``, ``overfit_batches`` and ``limit_*_batches`` in Lightning batches, and a
Lightning batch here is a group of up to 64 steps (see StudyModule); its validation loop never runs (the
tracker validates). Passed through, they would count groups or do nothing. So the run takes them out of the
Trainer's arguments and does them itself, in steps: ``fast_dev_run=N`` trains N steps with no logger and no
checkpoints; ``overfit_batches=N`` trains on the first N batches of epoch 0's order every epoch and validates
on those samples; ``limit_train_batches`` is steps per epoch; ``limit_val_batches`` is the part of the
validation split each validation uses, in batches of ``data.batch_size``. ``profiler`` goes to Lightning with
a file to write to. A flag that can't apply stops before any data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.profilers import AdvancedProfiler, Profiler, SimpleProfiler
from omegaconf import DictConfig, OmegaConf, open_dict

from trainstudy.errors import UserError

FLAGS = ("fast_dev_run", "overfit_batches", "limit_train_batches", "limit_val_batches", "profiler")
PROFILERS = ("simple", "advanced")
# Trainer arguments that fit() sets itself: given with +trainer., they would be silently replaced
OWNED = {
    "val_check_interval": "use val_every_n_steps=N",
    "check_val_every_n_epoch": "use val_every_n_steps=N",
    "num_sanity_val_steps": "validation at step 0 measures the init",
    "log_every_n_steps": "use log_every_n_steps=N (train/loss is logged for every step)",
    "enable_progress_bar": "use progress_bar=true|false",
    "enable_checkpointing": "use callbacks=model_checkpoint or checkpoint.every_n_steps=N",
    "enable_model_summary": "the run's first lines name the model and its size",
    "limit_test_batches": "the test split is evaluated once, whole, at the end",
    "limit_predict_batches": "a run does not predict",
}


@dataclass(frozen=True)
class DebugPlan:
    """The debugging flags of a run, checked; every number is Lightning's (an int counts, a float is a part)."""

    fast_dev_run: int = 0                 # steps; 0: off
    overfit_batches: int | float = 0      # 0: off
    limit_train_batches: int | float | None = None  # None: every batch (Lightning's 1.0)
    limit_val_batches: int | float | None = None
    profiler: str | None = None

    @property
    def active(self) -> bool:
        return self != DebugPlan()

    def train_steps_per_epoch(self, full: int) -> int:
        """Steps in an epoch of ``full`` batches: Lightning's rule (an int counts, a float is a part, at least 1)."""
        limit = self.overfit_batches or self.limit_train_batches
        if limit is None:
            return full
        return min(full, limit) if isinstance(limit, int) else max(1, int(limit * full))

    def val_samples(self, n_val: int, batch_size: int) -> int:
        """How many of the validation split's first samples each validation uses (the split is a seeded draw)."""
        limit = self.limit_val_batches
        if limit is None:
            return n_val
        return min(n_val, limit * batch_size) if isinstance(limit, int) else max(1, round(limit * n_val))

    def trainer_node(self, trainer: DictConfig) -> DictConfig:
        """The Trainer's config without these flags; ``fast_dev_run=N`` sets its length to N steps."""
        node = OmegaConf.create(OmegaConf.to_container(trainer))
        with open_dict(node):
            for flag in FLAGS:
                node.pop(flag, None)
            if self.fast_dev_run:
                node.max_steps, node.max_epochs = self.fast_dev_run, -1
        return node

    def build_profiler(self, out_dir: Path) -> Profiler | None:
        """Lightning's profiler, writing its report to ``<out_dir>/fit-profile.txt`` (Lightning's name for it):
        without a file it would log the report at INFO, which a run does not show."""
        if self.profiler is None:
            return None
        cls = SimpleProfiler if self.profiler == "simple" else AdvancedProfiler
        return cls(dirpath=str(out_dir), filename="profile")


def _count_or_part(flag: str, value: object, zero_means: str | None = None) -> int | float | None:
    """An int >= 0 (batches) or a float in [0, 1] (a part of them), as Lightning takes them; None for 1.0 (all)."""
    ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or \
         (isinstance(value, float) and 0.0 <= value <= 1.0)
    if not ok:
        raise UserError(f"trainer.{flag} must be a whole number of batches or a fraction in [0, 1], got {value!r} "
                        f"(e.g. trainer.{flag}=10 or trainer.{flag}=0.25)")
    if value == 0 and zero_means:
        raise UserError(f"trainer.{flag}=0 {zero_means}")
    return None if value == 1.0 and isinstance(value, float) else value


def debug_plan(trainer: DictConfig) -> DebugPlan:
    """Check the Trainer's debugging flags and what fit() sets itself; one line for one that can't apply."""
    for key, instead in OWNED.items():
        if key in trainer:
            raise UserError(f"trainer.{key} is set by the run itself and can't be given: {instead}")
    fdr = trainer.get("fast_dev_run", False)
    if not (isinstance(fdr, int) and fdr >= 0):
        raise UserError(f"trainer.fast_dev_run must be true, false or a number of steps >= 0, got {fdr!r}")
    profiler = trainer.get("profiler")
    if profiler is not None and profiler not in PROFILERS:
        raise UserError(f"trainer.profiler must be one of {', '.join(PROFILERS)} (or null), got {profiler!r}")
    plan = DebugPlan(
        fast_dev_run=int(fdr),  # True is 1 step
        overfit_batches=_count_or_part("overfit_batches", trainer.get("overfit_batches", 0)),
        limit_train_batches=_count_or_part("limit_train_batches", trainer.get("limit_train_batches", 1.0),
                                           "trains nothing; give a number of steps per epoch >= 1"),
        limit_val_batches=_count_or_part("limit_val_batches", trainer.get("limit_val_batches", 1.0),
                                         "can't apply: validation is how a run measures convergence; "
                                         "validate less often with val_every_n_steps=N"),
        profiler=profiler)
    length_flags = [f for f in ("overfit_batches", "limit_train_batches", "limit_val_batches") if getattr(plan, f)]
    if plan.fast_dev_run and length_flags:
        raise UserError(f"trainer.fast_dev_run sets the run's steps by itself: drop trainer.{length_flags[0]}")
    if plan.overfit_batches and len(length_flags) > 1:
        raise UserError(f"trainer.overfit_batches trains and validates on the same batches: drop "
                        f"trainer.{length_flags[1]}")
    return plan
