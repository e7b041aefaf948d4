"""conv/* metrics: what they claim is what the logged curve shows; divergence is a result, not a crash."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import make_cfg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from test_train import cli, scalars

from trainstudy.convergence import steps_to_target
from trainstudy.train import AUTO_VAL_STEPS, train, val_interval

SHORT = ["data=digits", "trainer.max_steps=40", "val_every_n_steps=4", "progress_bar=false"]
CONV_METRICS = {"conv/reached", "conv/steps_to_target", "conv/samples_to_target", "conv/time_to_target_s",
                "conv/loss_auc", "conv/final_val_loss", "conv/diverged", "conv/diverged_step", "conv/steps",
                "conv/train_time_s", "conv/best_val_acc", "conv/final_val_acc"}


def hparams_plugin(tb_dir: Path) -> tuple[set[str], set[str]]:
    """(hparam names, metric names) that TensorBoard's HParams plugin reads from the events."""
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert {h.name for h in exp.hparam_infos} == set(session.session_start_info.hparams)
    return {h.name for h in exp.hparam_infos}, {m.name.tag for m in exp.metric_infos}


def test_every_conv_metric_in_metrics_json_and_tensorboard(tmp_path: Path, data_dir: Path) -> None:
    result = train(make_cfg([*SHORT, f"data_dir={data_dir}", "target.value=0.5"], tmp_path))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(saved["metrics"]) == CONV_METRICS
    assert saved["metrics"]["conv/reached"] == 1 and saved["metrics"]["conv/diverged_step"] is None
    tb = tmp_path / "run" / "tb"
    names, metrics = hparams_plugin(tb)
    assert metrics == CONV_METRICS
    assert {"data", "source", "model", "depth", "width", "activation", "init", "loss", "optim", "lr",
            "batch_size", "seed"} <= names
    logged = scalars(tb)
    measured = {k for k, v in result["metrics"].items() if v is not None}
    assert measured <= set(logged)
    for key in measured:
        assert logged[key][-1][1] == pytest.approx(result["metrics"][key], rel=1e-6)


def test_steps_to_target_is_the_first_logged_validation_at_or_over_the_target(tmp_path: Path,
                                                                             data_dir: Path) -> None:
    cfg = make_cfg([*SHORT, f"data_dir={data_dir}", "target.value=0.8"], tmp_path)
    result = train(cfg)
    acc = scalars(tmp_path / "run" / "tb")["val/acc"]
    expected = next(step for step, value in acc if value >= 0.8)
    m = result["metrics"]
    assert m["conv/steps_to_target"] == expected > 0
    assert expected * cfg.data.batch_size < 1617  # still in the first epoch of digits' 1,617 training samples
    assert m["conv/samples_to_target"] == expected * cfg.data.batch_size
    assert 0 < m["conv/time_to_target_s"] <= m["conv/train_time_s"]
    assert m["conv/loss_auc"] == pytest.approx(sum(result["train_loss"]) / 40)
    assert m["conv/best_val_acc"] == pytest.approx(max(v for _, v in acc))
    assert steps_to_target(result["curve"], "val/acc", 0.8) == expected


def test_unreached_target_is_reported_as_such(tmp_path: Path, data_dir: Path) -> None:
    m = train(make_cfg([*SHORT, f"data_dir={data_dir}", "target.value=1.0", "trainer.max_steps=8"], tmp_path))["metrics"]
    assert m["conv/reached"] == 0
    assert m["conv/steps_to_target"] is m["conv/time_to_target_s"] is m["conv/samples_to_target"] is None


def test_stop_on_reach_ends_the_run_at_the_target(tmp_path: Path, data_dir: Path) -> None:
    result = train(make_cfg([*SHORT, f"data_dir={data_dir}", "target.value=0.5", "target.stop_on_reach=true"],
                            tmp_path))
    m = result["metrics"]
    assert m["conv/reached"] == 1 and m["conv/steps"] == m["conv/steps_to_target"] < 40


def test_regression_target_is_val_loss(tmp_path: Path, data_dir: Path) -> None:
    result = train(make_cfg(["data=regression", "loss=mse", "trainer.max_steps=30", "val_every_n_steps=5",
                             "target.value=0.5", f"data_dir={data_dir}"], tmp_path))
    expected = next(p["step"] for p in result["curve"] if p["val/loss"] <= 0.5)
    assert result["target"]["metric"] == "val/loss"
    assert result["metrics"]["conv/steps_to_target"] == expected
    assert "conv/best_val_loss" in result["metrics"] and "conv/best_val_acc" not in result["metrics"]


@pytest.mark.slow
def test_divergence_ends_the_run_cleanly_with_exit_zero(tmp_path: Path, data_dir: Path) -> None:
    proc = cli(["data=digits", "init=normal", "optim.lr=1e4", "trainer.max_steps=200", "val_every_n_steps=10"],
               tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr
    run = next((tmp_path / "outputs" / "runs").glob("*/*"))
    result = json.loads((run / "metrics.json").read_text())
    m = result["metrics"]
    assert result["status"] == "diverged" and m["conv/diverged"] == 1
    step = m["conv/diverged_step"]
    assert 1 <= step < 200
    assert len(result["train_loss"]) == step - 1 and all(math.isfinite(v) for v in result["train_loss"])
    assert result["curve"][0]["step"] == 0 and math.isfinite(result["curve"][0]["val/loss"])  # earlier metrics kept
    assert [s for s, _ in scalars(run / "tb")["train/loss"]] == list(range(1, step))
    assert f"diverged at step {step}" in proc.stderr


@pytest.mark.parametrize(("val_samples", "batch", "expected"), [(500, 128, 10), (180, 32, 10), (6000, 128, 100),
                                                                (6000, 512, 20), (5000, 128, 100), (6000, 32, 250)])
def test_auto_validation_interval_keeps_validation_under_a_quarter_of_training(val_samples: int, batch: int,
                                                                              expected: int) -> None:
    """val_every_n_steps=auto: the finest interval whose validation pass (~1/3 of a training step per sample)
    costs at most ~1/4 of the training between two passes."""
    n = val_interval(make_cfg([f"data.batch_size={batch}"]), val_samples)
    assert n == expected
    assert val_samples <= 0.75 * n * batch
    assert all(val_samples > 0.75 * k * batch for k in AUTO_VAL_STEPS if k < n)
    assert val_interval(make_cfg([f"data.batch_size={batch}", "val_every_n_steps=7"]), val_samples) == 7


def test_auto_validation_interval_is_the_default_and_what_the_curve_shows(tmp_path: Path, data_dir: Path) -> None:
    assert make_cfg().val_every_n_steps == "auto"
    # digits holds out 180 validation samples; at batch 8: 180 <= 0.75 * k * 8 first for k = 50
    result = train(make_cfg(["data=digits", "data.batch_size=8", f"data_dir={data_dir}", "trainer.max_steps=60",
                             "progress_bar=false"], tmp_path))
    assert [p["step"] for p in result["curve"]] == [0, 50, 60]  # and the last step, as every run ends
