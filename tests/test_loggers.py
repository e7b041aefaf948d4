"""logger=mlflow, wandb, many: every scalar reaches each logger, under the run's name, with the flat hparams."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import make_cfg
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainstudy import loggers
from trainstudy.errors import UserError
from trainstudy.train import train, validate
from trainstudy.vectorized import train_group

STEPS = 10
SHORT = ["data=digits", f"trainer.max_steps={STEPS}", "val_every_n_steps=5", "progress_bar=false",
         "checkpoint.every_n_steps=0"]


def sweep_job(cfg, tmp_path: Path, name: str) -> None:
    """Paths as cli.job_paths fills them for a sweep job named ``name``."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "sweep" / "0")
        cfg.paths.tb_dir = str(tmp_path / "sweep" / "tb" / name)
        cfg.paths.multirun = True


def test_mlflow_run_has_every_step_the_hparams_and_the_run_name(tmp_path: Path, data_dir: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    cfg = make_cfg(["logger=mlflow", f"logger.tracking_uri={store}", f"data_dir={data_dir}", "seed=3", *SHORT],
                   tmp_path)
    sweep_job(cfg, tmp_path, "seed=3")
    result = train(cfg)
    client = mlflow.tracking.MlflowClient(store.as_uri())
    experiment = client.get_experiment_by_name(loggers.study_label(cfg))
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "seed=3"
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert run.data.params["init"] == "default" and run.data.params["seed"] == "3"
    assert set(result["hparams"]) <= set(run.data.params)
    assert run.data.metrics["conv/loss_auc"] == pytest.approx(result["metrics"]["conv/loss_auc"])
    assert "val/acc" in run.data.metrics and any(k.startswith("init/") for k in run.data.metrics)
    assert result["tensorboard"] is False and result["loggers"] == ["MLFlowLogger"]


def test_many_writes_tensorboard_and_csv_in_its_own_folder(tmp_path: Path, data_dir: Path) -> None:
    cfg = make_cfg(["logger=many", f"data_dir={data_dir}", *SHORT], tmp_path)
    result = train(cfg)
    run = tmp_path / "run"
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, STEPS + 1))
    assert not list((run / "tb").rglob("*.csv"))
    assert train_loss_steps_in_csv(run) == list(range(1, STEPS + 1))
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    assert any(r.get("val/acc") for r in rows) and any(r.get("conv/loss_auc") for r in rows)
    assert (run / "csv" / "hparams.yaml").read_text().count("init: default") == 1
    assert result["tensorboard"] is True and result["loggers"] == ["TensorBoardLogger", "CSVLogger"]


def train_loss_steps_in_csv(run: Path) -> list[int]:
    rows = csv.DictReader((run / "csv" / "metrics.csv").open())
    return sorted(int(r["step"]) for r in rows if r.get("train/loss"))


def test_vectorized_members_log_to_every_logger(tmp_path: Path, data_dir: Path) -> None:
    cfgs = []
    for i in range(2):
        cfg = make_cfg(["logger=many", f"data_dir={data_dir}", f"seed={i}", *SHORT])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / str(i))
            cfg.paths.tb_dir = str(tmp_path / "tb" / str(i))
        cfgs.append(cfg)
    results = train_group(cfgs)
    for i, result in enumerate(results):
        assert train_loss_steps_in_csv(tmp_path / str(i)) == list(range(1, STEPS + 1))
        acc = EventAccumulator(str(tmp_path / "tb" / str(i)), size_guidance={"scalars": 0})
        acc.Reload()
        assert len(acc.Scalars("train/loss")) == STEPS and result["vectorized"] == {"members": 2}


def test_wandb_offline_writes_a_run_with_the_metrics(tmp_path: Path, data_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(["logger=wandb", f"data_dir={data_dir}", *SHORT], tmp_path)
    train(cfg)
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (records,) = run_dir.glob("run-*.wandb")  # protobuf records: their keys are plain strings
    data = records.read_bytes()
    assert data.count(b"train/loss") >= STEPS and b"conv/loss_auc" in data
    assert b"digits" in data and b"batch_size" in data  # the flat hparams, as the run's config


def test_a_missing_extra_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r'pip install -e "\.\[mlflow\]"'):
        validate(make_cfg(["logger=mlflow"], tmp_path))
