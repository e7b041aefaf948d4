"""Learning-rate schedules: stepped after every optimizer step, train/lr logged, resumed with the run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from test_train import scalars

from trainstudy.errors import UserError
from trainstudy.schedulers import warmup_cosine
from trainstudy.train import fit, train, validate

QUICK = ["data=digits", "progress_bar=false", "val_every_n_steps=10", "trainer.max_epochs=-1", "optim.lr=0.1"]


def lr_curve(tmp_path: Path) -> list[tuple[int, float]]:
    return scalars(tmp_path / "run" / "tb")["train/lr"]


def test_cosine_decays_per_optimizer_step_to_near_zero(tmp_path: Path, data_dir: Path) -> None:
    result, module = fit(make_cfg([*QUICK, f"data_dir={data_dir}", "trainer.max_steps=100", "scheduler=cosine"],
                                  tmp_path))
    lrs = lr_curve(tmp_path)
    assert [s for s, _ in lrs] == list(range(1, 101))  # every step, through the groups of steps
    # step k: the lr after k updates, 0.1 * (1 + cos(pi k / 100)) / 2 (float32 in TensorBoard)
    assert all(lr == pytest.approx(0.05 * (1 + math.cos(math.pi * k / 100)), abs=1e-7) for k, lr in lrs)
    assert lrs[-1][1] < 1e-6
    assert result["hparams"]["scheduler"] == "CosineAnnealingLR"


def test_warmup_cosine_rises_linearly_then_decays() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(optimizer, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])  # the lr of the next update
        optimizer.step()
        schedule.step()
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lrs[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


@pytest.mark.parametrize("scheduler", ["step", "onecycle", "warmup_cosine"])
def test_every_schedule_trains(scheduler: str, tmp_path: Path, data_dir: Path) -> None:
    result = train(make_cfg([*QUICK, f"data_dir={data_dir}", "trainer.max_steps=60", f"scheduler={scheduler}",
                             "scheduler.step_size=20" if scheduler == "step" else "optim.momentum=0.9",
                             "scheduler.warmup_steps=10" if scheduler == "warmup_cosine" else "seed=0"], tmp_path))
    assert result["status"] == "ok" and result["metrics"]["conv/best_val_acc"] > 0.5
    lrs = dict(lr_curve(tmp_path))
    if scheduler == "step":
        assert (lrs[19], lrs[20], lrs[40]) == pytest.approx((0.1, 0.05, 0.025))
    else:  # up, then down
        peak = max(lrs, key=lrs.get)
        assert 1 < peak < 60 and lrs[1] < lrs[peak] and lrs[60] < lrs[peak] / 10


def test_a_resumed_run_goes_on_with_its_schedule(tmp_path: Path, data_dir: Path) -> None:
    run = [*QUICK, f"data_dir={data_dir}", "scheduler=cosine", "scheduler.T_max=40"]
    train(make_cfg([*run, "trainer.max_steps=20"], tmp_path))
    train(make_cfg([*run, "trainer.max_steps=40", f"resume={tmp_path / 'run'}"], tmp_path))
    # the schedule's state came back with the weights: steps 21..40 go on down the same cosine
    assert [k for k, _ in lr_curve(tmp_path)] == list(range(1, 41))
    assert all(lr == pytest.approx(0.05 * (1 + math.cos(math.pi * k / 40)), abs=1e-7) for k, lr in lr_curve(tmp_path))


@pytest.mark.parametrize(("overrides", "message"), [
    (["scheduler=cosine", "trainer.max_steps=-1", "trainer.max_epochs=-1"], "scheduler.T_max=null means the run's length"),
    (["scheduler=cosine", "+scheduler.T_maks=3"], "did you mean scheduler.T_max"),
    (["scheduler=step", "scheduler._target_=torch.optim.lr_scheduler.StepLRR"], "cannot be imported"),
])
def test_a_bad_schedule_is_one_line_before_any_data(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        validate(make_cfg(overrides))

