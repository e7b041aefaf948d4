"""Runs end to end: every task × loss pair trains, impossible pairs stop early, the CLI leaves TensorBoard runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_cfg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainstudy import train as train_mod
from trainstudy.errors import UserError
from trainstudy.losses import RULES
from trainstudy.report.tbgroups import GROUPS
from trainstudy.models import build_model
from trainstudy.train import train

TASK_DATA = {
    "multiclass": ["data=digits"],
    "binary": ["data=digits", "data.positive_classes=[0,2,4,6,8]"],
    "regression": ["data=regression"],
}
PAIRS = [(task, loss) for task in TASK_DATA for loss, rule in RULES.items() if task in rule.tasks]
FORBIDDEN = [(task, loss) for task in TASK_DATA for loss, rule in RULES.items() if task not in rule.tasks]
SHORT = ["trainer.max_steps=6", "val_every_n_steps=3", "progress_bar=false"]


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def job_runs(tb: Path) -> list[str]:
    """The jobs' own TensorBoard runs in a sweep's tb/: its folders less the groups' (tbgroups.GROUPS); the sweep's
    HParams experiment is a file there."""
    return sorted(p.name for p in tb.iterdir() if p.is_dir() and p.name != GROUPS)



@pytest.mark.parametrize(("task", "loss"), PAIRS, ids=[f"{t}-{l}" for t, l in PAIRS])
def test_every_allowed_pair_trains(task: str, loss: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = make_cfg([*TASK_DATA[task], f"loss={loss}", f"data_dir={data_dir}", *SHORT], tmp_path)
    result = train(cfg)
    assert result["status"] == "ok"
    assert len(result["train_loss"]) == 6
    assert [p["step"] for p in result["curve"]] == [0, 3, 6]
    assert ("val/acc" in result["curve"][-1]) == (task != "regression")
    assert result["hparams"]["task"] == task
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["conv/steps"] == 6


@pytest.mark.parametrize(("task", "loss"), FORBIDDEN, ids=[f"{t}-{l}" for t, l in FORBIDDEN])
def test_forbidden_pairs_stop_before_any_data_is_loaded(task: str, loss: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(*_a: object, **_k: object) -> None:
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(train_mod, "load_data", no_loading)
    cfg = make_cfg([*TASK_DATA[task], f"loss={loss}"], tmp_path)
    with pytest.raises(UserError, match=f"loss={loss} does not fit the {task} task"):
        train(cfg)


def test_model_sizes_come_from_the_data() -> None:
    mlp_cfg, cnn_cfg = make_cfg(["model=mlp"]).model, make_cfg(["model=cnn"]).model
    assert build_model(mlp_cfg, (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert build_model(cnn_cfg, (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert build_model(cnn_cfg, (3, 32, 32), 1)(torch.zeros(2, 3, 32, 32)).shape == (2, 1)
    with pytest.raises(UserError, match="model=cnn needs"):
        build_model(cnn_cfg, (10,), 1)


def test_same_seed_same_curve_seed_zero_included(tmp_path: Path, data_dir: Path) -> None:
    runs = [train(make_cfg(["data=digits", f"data_dir={data_dir}", f"seed={s}", *SHORT], tmp_path / str(i)))
            for i, s in enumerate([0, 0, 1])]
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    assert runs[0]["train_loss"] != runs[2]["train_loss"]


def cli(args: list[str], cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINSTUDY_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_run_on_bundled_mnist_writes_tensorboard(tmp_path: Path, data_dir: Path) -> None:
    proc = cli(["init=kaiming", "loss=ce", "data.source=bundled", "trainer.max_steps=20", "val_every_n_steps=5"],
               tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "GPU available" not in proc.stderr  # Lightning's INFO lines stay off, as conf/hydra configures them
    runs = list((tmp_path / "outputs" / "runs").glob("*/*/metrics.json"))
    assert len(runs) == 1
    result = json.loads(runs[0].read_text())
    assert result["hparams"]["source"].startswith("bundled")
    tags = scalars(runs[0].parent / "tb")
    assert [s for s, _ in tags["train/loss"]] == list(range(1, 21))
    assert [s for s, _ in tags["val/acc"]] == [0, 5, 10, 15, 20]
    run = runs[0].parent.relative_to(tmp_path)  # as typed in the folder the run started in, as a sweep's are
    assert f"logs: {run} · tensorboard --logdir {run / 'tb'}" in proc.stderr


@pytest.mark.slow
def test_cli_sweep_puts_runs_side_by_side_with_readable_names(tmp_path: Path, data_dir: Path) -> None:
    proc = cli(["-m", "data=digits", "init=xavier_uniform,kaiming_normal", "trainer.max_steps=4",
                "val_every_n_steps=2"], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr
    tb_root = next((tmp_path / "outputs" / "multirun").glob("*/*/tb"))
    names = job_runs(tb_root)
    assert names == ["init=kaiming_normal", "init=xavier_uniform"]
    for name in names:
        assert "train/loss" in scalars(tb_root / name)


@pytest.mark.parametrize(("args", "needle"), [
    (["init=normal", "init.std=0"], "init.std must be > 0"),
    (["init=uniform", "init.a=1", "init.b=0"], "init.a < init.b"),
    (["init=kaiming_normal", "init.mode=fan_avg"], "fan_in or fan_out"),
    (["init=constant", "init.value=abc"], "init.value must be a number"),
    (["init=fixed", "init.weight=[[1.0]]", "data=digits"], "has shape [1, 1] but layer"),
    (["data=diabetes", "loss=ce"], "loss=ce does not fit the regression task of data=diabetes"),
])
def test_cli_bad_values_one_line_nonzero_exit(args: list[str], needle: str, tmp_path: Path, data_dir: Path) -> None:
    proc = cli(args, tmp_path, data_dir)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
