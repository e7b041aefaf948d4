"""conv/* metrics: what they claim is what the logged curve shows; divergence is a result, not a crash."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_cfg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from test_train import cli, scalars

from trainstudy.cli import end_line
from trainstudy.convergence import ConvergenceRecord
from trainstudy.losses import build_loss
from trainstudy.module import StudyModule
from trainstudy.targets import best_value, steps_to_target
from trainstudy.train import AUTO_VAL_STEPS, train, val_interval

SHORT = ["data=digits", "trainer.max_steps=40", "val_every_n_steps=4", "progress_bar=false"]
CONV_METRICS = {"conv/reached", "conv/steps_to_target", "conv/steps_observed", "conv/samples_to_target",
                "conv/time_to_target_s", "conv/loss_auc", "conv/final_val_loss", "conv/diverged", "conv/diverged_step", "conv/steps",
                "conv/train_time_s", "conv/best_val_acc", "conv/best_val_loss", "conv/final_val_acc"}
TEST_METRICS = {"test/acc", "test/loss"}  # once, at the end, beside conv/* everywhere they go


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
    assert set(saved["metrics"]) == CONV_METRICS | TEST_METRICS
    assert saved["metrics"]["conv/reached"] == 1 and saved["metrics"]["conv/diverged_step"] is None
    tb = tmp_path / "run" / "tb"
    names, metrics = hparams_plugin(tb)
    assert metrics == CONV_METRICS | TEST_METRICS
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
    assert m["conv/steps_to_target"] == m["conv/steps_observed"] == expected > 0
    assert expected * cfg.data.batch_size < 1617  # still in the first epoch of digits' 1,617 training samples
    assert m["conv/samples_to_target"] == expected * cfg.data.batch_size
    assert 0 < m["conv/time_to_target_s"] <= m["conv/train_time_s"]
    assert m["conv/loss_auc"] == pytest.approx(sum(result["train_loss"]) / 40)
    assert m["conv/best_val_acc"] == pytest.approx(max(v for step, v in acc if step > 0))
    assert steps_to_target(result["curve"], "val/acc", 0.8) == expected


def test_unreached_target_is_reported_as_such(tmp_path: Path, data_dir: Path) -> None:
    m = train(make_cfg([*SHORT, f"data_dir={data_dir}", "target.value=1.0", "trainer.max_steps=8"], tmp_path))["metrics"]
    assert m["conv/reached"] == 0
    assert m["conv/steps_to_target"] is m["conv/time_to_target_s"] is m["conv/samples_to_target"] is None
    assert m["conv/steps_observed"] == m["conv/steps"] == 8  # censored at the steps it made


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
    assert result["metrics"]["conv/best_val_mse"] == min(p["val/mse"] for p in result["curve"] if p["step"] > 0)


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


def outputs_with(correct: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits of which exactly ``correct`` of ``total`` pick the label."""
    y = torch.arange(total) % 2
    pick = torch.where(torch.arange(total) < correct, y, 1 - y)
    return torch.nn.functional.one_hot(pick, 2).float(), y


def identity_module(loss: str = "ce") -> StudyModule:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    cfg = make_cfg([f"loss={loss}"])
    return StudyModule(model, build_loss(cfg.loss, "multiclass", 2), lambda p: torch.optim.SGD(p, lr=0.1))


@pytest.mark.parametrize(("correct", "total", "target"), [(475, 500, 0.95), (171, 180, 0.95), (7, 10, 0.7),
                                                          (5700, 6000, 0.95)])
def test_an_accuracy_exactly_at_the_target_reaches_it(correct: int, total: int, target: float) -> None:
    """correct / total in float64: 475/500 is the 0.95 a user types (float32 made it 0.94999999 < 0.95)."""
    x, y = outputs_with(correct, total)
    _, acc = identity_module().evaluate(x, y)
    assert acc == correct / total == target
    record = ConvergenceRecord(classification=True, target_metric="val/acc", target_value=target)
    record.state.samples = [10]
    assert record.add_validation({"step": 1, "val/loss": 0.5, "val/acc": acc}) is False
    assert record.state.reached_step == 1
    _, below = identity_module().evaluate(*outputs_with(correct - 1, total))
    assert below < target


def test_vectorized_accuracy_is_exact_too() -> None:
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from trainstudy.vectorized import LossGroups, StackedModel

    members = [SimpleNamespace(module=identity_module(), cfg=OmegaConf.create({"loss": {"name": "ce"}}))
               for _ in range(2)]
    stacked = StackedModel(members)
    x, y = outputs_with(475, 500)
    _, acc, _ = stacked.evaluate(LossGroups(members, torch.device("cpu")), x, y, classification=True)
    assert acc == [0.95, 0.95]


def test_best_is_the_target_metrics_best_after_training_began() -> None:
    curve = [{"step": 0, "val/loss": 2.3, "val/acc": 0.5, "val/mse": 9.0},  # the init: not "best"
             {"step": 10, "val/loss": 0.9, "val/acc": 0.4, "val/mse": 0.3},
             {"step": 20, "val/loss": float("nan"), "val/acc": 0.45, "val/mse": 0.2},
             {"step": 30, "val/loss": 1.1, "val/acc": 0.42, "val/mse": 0.25}]
    assert best_value(curve, "val/acc") == 0.45
    assert best_value(curve, "val/loss") == 0.9
    assert best_value(curve, "val/mse") == 0.2
    assert best_value(curve[:1], "val/acc") is None
    record = ConvergenceRecord(classification=False, target_metric="val/mse", target_value=0.05)
    record.state.curve = curve
    result = {"metrics": record.summary(), "target": {"metric": "val/mse", "value": 0.05},
              "run_dir": "outputs/x", "tb_dir": "outputs/x/tb", "tensorboard": False}
    result["metrics"]["conv/steps"] = 30
    line = end_line(result)
    assert "best val/mse 0.2 " in line and "tensorboard" not in line  # the target's metric, named; no TB: no command
    result["target"]["metric"] = "val/loss"
    assert "best val/loss 0.9 " in end_line(result)


def test_threads_are_set_recorded_and_validated(tmp_path: Path, data_dir: Path) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        result = train(make_cfg([*SHORT, f"data_dir={data_dir}", "trainer.max_steps=4", "threads=2"], tmp_path))
        assert result["threads"] == 2 == torch.get_num_threads()
        saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert saved["threads"] == 2
        assert make_cfg().threads == 1  # the default: a plain run computes as a joblib worker does
    finally:
        torch.set_num_threads(before)
    from trainstudy.errors import UserError
    from trainstudy.train import validate

    for bad in ("0", "-2", "many", "1.5"):
        with pytest.raises(UserError, match="threads must be"):
            validate(make_cfg([f"threads={bad}", f"data_dir={data_dir}"]))


def test_the_checkpointed_state_is_asdicts_and_a_copy() -> None:
    from dataclasses import asdict

    from trainstudy.convergence import ConvergenceState
    state = ConvergenceState(losses=[2.3, 1.1, 0.7], samples=[128, 256, 384],
                             curve=[{"step": 0, "val/loss": 2.3, "val/acc": 0.1}, {"step": 3, "val/loss": 0.6}],
                             train_time_s=1.5, reached_step=3, reached_samples=384, reached_time_s=1.4)
    plain = state.plain()
    assert plain == asdict(state) and list(plain) == list(asdict(state))
    state.losses.append(0.5)
    state.samples.append(512)
    state.curve[0]["val/acc"] = 0.9
    assert plain["losses"] == [2.3, 1.1, 0.7] and plain["samples"] == [128, 256, 384]
    assert plain["curve"][0]["val/acc"] == 0.1


def test_a_checkpoint_holds_the_losses_as_tensors_and_loads_lists_too() -> None:
    from trainstudy.convergence import ConvergenceTracker
    tracker = ConvergenceTracker.__new__(ConvergenceTracker)
    tracker.record = ConvergenceRecord(classification=True, target_metric="val/acc", target_value=0.9)
    tracker.record.add_losses([2.302585124969482, 1.25, float(torch.tensor(0.1))])
    tracker.state.samples.extend([128, 256, 384])
    saved = tracker.state_dict()
    assert saved["losses"].dtype == torch.float64 and saved["samples"].dtype == torch.int64
    restored = ConvergenceTracker.__new__(ConvergenceTracker)
    restored.record = ConvergenceRecord(classification=True, target_metric="val/acc", target_value=0.9)
    restored.load_state_dict(saved)
    assert restored.state == tracker.state  # every float32 loss back exactly
    assert all(type(v) is float for v in restored.state.losses) and restored.state.samples == [128, 256, 384]
    restored.load_state_dict(tracker.state.plain())  # a checkpoint written before (lists)
    assert restored.state == tracker.state
