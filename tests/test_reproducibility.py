"""Same config and seed on CPU: the same numbers, in one process or two; what a run depends on is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_cfg
from test_train import cli

from trainstudy.train import train

RUN = ["data=digits", "trainer.max_steps=30", "val_every_n_steps=10"]
# wall-clock figures and where a run was written are the only things allowed to differ
VARIABLE = {"conv/time_to_target_s", "conv/train_time_s"}


def comparable(result: dict) -> dict:
    drop = {"data_time_s", "tb_dir", "run_dir", "overrides"}
    out = {k: v for k, v in result.items() if k not in drop}
    out["metrics"] = {k: v for k, v in result["metrics"].items() if k not in VARIABLE}
    return out


@pytest.mark.slow
def test_same_seed_same_metrics_in_separate_processes(tmp_path: Path, data_dir: Path) -> None:
    results = []
    for name in ("a", "b"):
        proc = cli([*RUN, f"hydra.run.dir={tmp_path / name}"], tmp_path, data_dir)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert comparable(results[0]) == comparable(results[1])
    assert results[0]["train_loss"] and results[0]["curve"]


@pytest.mark.slow
def test_same_seed_same_metrics_within_one_multirun(tmp_path: Path, data_dir: Path) -> None:
    # xavier is an alias of xavier_uniform: two jobs of one process with the same configuration
    proc = cli(["-m", *RUN, "init=xavier,xavier_uniform,xavier"], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*"))
    results = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(3)]
    assert comparable(results[0])["train_loss"] == comparable(results[1])["train_loss"] == results[2]["train_loss"]
    assert comparable(results[0])["metrics"] == comparable(results[1])["metrics"]
    assert len({r["tb_dir"] for r in results}) == 3  # the repeated job still gets its own TensorBoard run


def test_seed_null_draws_a_seed_and_records_it(tmp_path: Path, data_dir: Path) -> None:
    result = train(make_cfg([*RUN, "seed=null", f"data_dir={data_dir}", "trainer.max_steps=2"], tmp_path))
    seed = result["hparams"]["seed"]
    assert isinstance(seed, int) and seed >= 0
    again = train(make_cfg([*RUN, f"seed={seed}", f"data_dir={data_dir}", "trainer.max_steps=2"], tmp_path / "2"))
    assert again["train_loss"] == result["train_loss"]


def test_run_records_versions_device_and_commit(tmp_path: Path, data_dir: Path) -> None:
    result = train(make_cfg([*RUN, f"data_dir={data_dir}", "trainer.max_steps=1"], tmp_path))
    v = result["versions"]
    assert v["torch"] and v["lightning"] and v["hydra"]
    assert v["git_commit"] is None or len(v["git_commit"]) == 40
    assert result["device"] == "cpu"
