"""The progress bar counts optimizer steps to the planned total, with train/loss and the last validation."""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import make_cfg

from trainstudy.convergence import ConvergenceRecord
from trainstudy.progress import StepProgressBar
from trainstudy.train import train


class Terminal(io.StringIO):
    """A captured stderr that says it is a terminal, so the run shows its bar."""

    def isatty(self) -> bool:
        return True


def test_the_bar_counts_steps_and_shows_what_was_read_back() -> None:
    record = ConvergenceRecord(classification=True, target_metric="val/acc", target_value=0.9)
    stream = io.StringIO()
    bar = StepProgressBar(total=20, record=record, stream=stream)
    trainer, loss = SimpleNamespace(global_step=0), torch.tensor(0.5)
    bar.on_train_start(trainer, None)
    for step in range(1, 21):
        if step == 10:  # what a flush and a validation leave in the record
            record.add_losses([1.0] * 9 + [0.25])
            record.add_validation({"step": 10, "val/loss": 0.3, "val/acc": 0.875})
        bar.on_train_step_end(trainer, None, loss, 64)
    assert bar.bar.n == bar.bar.total == 20
    bar.on_train_end(trainer, None)
    out = stream.getvalue()
    assert "20/20" in out and "train/loss=0.25" in out and "val/acc=0.875" in out


def test_a_run_on_a_terminal_shows_its_steps_to_the_planned_total(tmp_path: Path, data_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    cfg = make_cfg(["data=digits", f"data_dir={data_dir}", "trainer.max_epochs=2", "diagnostics=false"], tmp_path)
    result = train(cfg)
    out = stderr.getvalue()
    steps = len(result["train_loss"])
    assert steps == 46  # 2 epochs of 23 steps
    assert f"{steps}/{steps}" in out and "step/s" in out
    assert re.search(r"train/loss=[0-9.]+", out) and re.search(r"val/acc=[0-9.]+", out)


def test_the_bar_costs_little_per_step() -> None:
    record = ConvergenceRecord(classification=True, target_metric="val/acc", target_value=0.9)
    bar = StepProgressBar(total=5000, record=record, stream=io.StringIO())
    trainer, loss = SimpleNamespace(global_step=0), torch.tensor(0.5)
    bar.on_train_start(trainer, None)
    t0 = time.perf_counter()
    for _ in range(5000):
        bar.on_train_step_end(trainer, None, loss, 64)
    per_step = (time.perf_counter() - t0) / 5000
    bar.on_train_end(trainer, None)
    assert per_step < 20e-6  # a step of the smallest model here takes ~300 us on this CPU
