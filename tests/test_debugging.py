"""Lightning's debugging flags, counted in steps: fast_dev_run, overfit_batches, limit_*_batches, profiler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_cfg

from trainstudy import train as train_mod
from trainstudy.datamodule import DeviceBatches
from trainstudy.errors import UserError
from trainstudy.train import train

QUIET = ["data=digits", "progress_bar=false", "diagnostics=false", "val_every_n_steps=2"]


def run(overrides: list[str], tmp_path: Path, data_dir: Path) -> dict:
    return train(make_cfg([*QUIET, f"data_dir={data_dir}", *overrides], tmp_path))


def test_overfit_batches_repeats_the_first_batches_of_epoch_0() -> None:
    x, y = torch.arange(100).float(), torch.arange(100)
    epoch = [0]
    batches = DeviceBatches(x, y, batch_size=8, seed=3, epoch=lambda: epoch[0], batches_per_epoch=3,
                            same_batches=True)
    first = [idx.tolist() for group in batches for idx in group.indices]
    epoch[0] = 5
    again = [idx.tolist() for group in batches for idx in group.indices]
    assert first == again == batches.permutation(0)[:24].view(3, 8).tolist()


def test_overfit_batches_trains_on_the_same_batches(tmp_path: Path, data_dir: Path) -> None:
    plain = run(["trainer.max_steps=6"], tmp_path / "plain", data_dir)
    overfit = run(["debug=overfit", "trainer.overfit_batches=2", "trainer.max_epochs=3"], tmp_path / "o", data_dir)
    assert len(overfit["train_loss"]) == 6  # 2 steps an epoch, 3 epochs
    assert overfit["train_loss"][:2] == plain["train_loss"][:2]  # the same first batches of epoch 0 ...
    assert overfit["train_loss"][2:] != plain["train_loss"][2:]  # ... and then those again, not epoch 0's next


def test_limit_train_batches_counts_steps_per_epoch(tmp_path: Path, data_dir: Path) -> None:
    result = run(["+trainer.limit_train_batches=3", "trainer.max_epochs=2"], tmp_path / "n", data_dir)
    assert len(result["train_loss"]) == 6
    # a fraction: int(0.1 * 23 steps of digits at batch 64) = 2 per epoch
    result = run(["debug=limit", "trainer.max_epochs=2"], tmp_path / "f", data_dir)
    assert len(result["train_loss"]) == 4


def test_limit_val_batches_validates_on_part_of_the_split(tmp_path: Path, data_dir: Path) -> None:
    result = run(["trainer.max_steps=2", "+trainer.limit_val_batches=1", "data.batch_size=10"], tmp_path, data_dir)
    # 10 samples: every accuracy is a multiple of 1/10
    assert all(abs(p["val/acc"] * 10 - round(p["val/acc"] * 10)) < 1e-9 for p in result["curve"])


def test_fast_dev_run_trains_n_steps_without_logger_or_checkpoints(tmp_path: Path, data_dir: Path) -> None:
    result = run(["debug=fdr", "trainer.fast_dev_run=3"], tmp_path, data_dir)
    assert len(result["train_loss"]) == 3 and [p["step"] for p in result["curve"]] == [0, 2, 3]
    assert not (tmp_path / "run" / "tb").exists() and not (tmp_path / "run" / "checkpoints").exists()
    assert (tmp_path / "run" / "metrics.json").exists() and result["tensorboard"] is False


def test_profiler_writes_its_report(tmp_path: Path, data_dir: Path) -> None:
    run(["debug=profiler", "trainer.max_epochs=-1", "trainer.max_steps=4"], tmp_path, data_dir)
    report = (tmp_path / "run" / "fit-profile.txt").read_text()
    assert "training_step" in report and "optimizer_step" in report


@pytest.mark.parametrize(("override", "message"), [
    ("+trainer.limit_val_batches=0", "trainer.limit_val_batches=0 can't apply"),
    ("+trainer.limit_train_batches=1.5", "trainer.limit_train_batches must be"),
    ("+trainer.profiler=pytorch", "trainer.profiler must be one of simple, advanced"),
    ("+trainer.val_check_interval=5", "trainer.val_check_interval is set by the run itself"),
    ("+trainer.fast_dev_run=-1", "trainer.fast_dev_run must be"),
])
def test_a_flag_that_cant_apply_is_one_line_before_data_loads(override: str, message: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_mod, "load_data", lambda *_a, **_k: pytest.fail("data was loaded"))
    with pytest.raises(UserError, match=message) as info:
        train(make_cfg(["data=digits", override], tmp_path))
    assert "\n" not in str(info.value)
