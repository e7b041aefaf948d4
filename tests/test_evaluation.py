"""The test split at the end of a run, and evaluating a run afterwards: scripts/evaluate.py, load_from_checkpoint,
trainer.validate and trainer.test all give the numbers the run recorded."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, make_cfg

from trainstudy.cli import end_line
from trainstudy.data import load_data
from trainstudy.datamodule import StudyDataModule
from trainstudy.errors import UserError
from trainstudy.evaluation import evaluate_run, metrics_line
from trainstudy.module import StudyModule
from trainstudy.resume import CHECKPOINT
from trainstudy.train import fit

RUNS = {  # a classification and a regression run, a few steps each
    "digits": (["data=digits", "trainer.max_steps=30", "val_every_n_steps=10"], "test/acc"),
    "diabetes": (["data=diabetes", "loss=mse", "trainer.max_steps=30", "val_every_n_steps=10"], "test/mse"),
}


def evaluate_script():
    """scripts/evaluate.py as a module, so its main() runs in this process."""
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=sorted(RUNS))
def finished_run(request, tmp_path_factory, data_dir):
    """(result, trained module, cfg, run folder) of one short run that wrote its checkpoint."""
    overrides, headline = RUNS[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    cfg = make_cfg([*overrides, f"data_dir={data_dir}", "progress_bar=false", "diagnostics=false"], tmp)
    (tmp / "run" / ".hydra").mkdir(parents=True)  # what Hydra leaves in every run folder
    result, module = fit(cfg)
    return result, module, cfg, tmp / "run", headline


def test_the_run_records_the_test_split_once_at_the_end(finished_run):
    result, _, _, run_dir, headline = finished_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert {k for k in saved["metrics"] if k.startswith("test/")} == {headline, "test/loss"}
    assert saved["test_split"]["source"] == "held out, " + ("10%" if headline == "test/acc" else "20%")
    assert f"· {headline} {result['metrics'][headline]:.4g} ·" in end_line(result)
    # nothing selects on it: the curve, the target and the best are validation's
    assert all(not k.startswith("test/") for point in result["curve"] for k in point)
    assert result["target"]["metric"].startswith("val/")


def test_evaluate_script_reproduces_the_recorded_test_metrics(finished_run, capsys):
    result, _, _, run_dir, headline = finished_run
    metrics, samples = evaluate_run(run_dir, "test")
    assert set(metrics) == {headline, "test/loss"} and samples == result["test_split"]["samples"]
    for key, value in metrics.items():
        assert value == pytest.approx(result["metrics"][key], abs=1e-6)
    assert evaluate_script().main([str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == metrics_line(metrics, samples)
    # val: the last validation of the run, on the same weights
    val, _ = evaluate_run(run_dir, "val")
    assert val["val/loss"] == pytest.approx(result["metrics"]["conv/final_val_loss"], abs=1e-6)


def test_metrics_line_reads_as_documented():
    line = metrics_line({"test/acc": 0.953, "test/loss": 0.16123}, 10000)
    assert line == "test/acc 0.9530 · test/loss 0.1612 · 10,000 samples"


def test_load_from_checkpoint_and_lightning_validate_and_test(finished_run):
    result, trained, cfg, run_dir, headline = finished_run
    module = StudyModule.load_from_checkpoint(run_dir / CHECKPOINT, weights_only=True)
    for (name, p), (_, q) in zip(module.state_dict().items(), trained.state_dict().items()):
        assert torch.equal(p, q.cpu()), name
    splits = load_data(cfg.data, cfg.data_dir)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    datamodule = StudyDataModule(splits, cfg.data.batch_size, cfg.seed)
    tested, = trainer.test(module, datamodule=datamodule, verbose=False)
    validated, = trainer.validate(module, datamodule=datamodule, verbose=False)
    for key in (headline, "test/loss"):  # Lightning logs float32: equal to its rounding
        assert tested[key] == pytest.approx(result["metrics"][key], abs=1e-6)
    assert validated["val/loss"] == pytest.approx(result["metrics"]["conv/final_val_loss"], abs=1e-6)


def test_evaluate_script_on_a_folder_without_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / ".hydra").mkdir()
    assert evaluate_script().main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "checkpoints/last.ckpt" in err and err.count("\n") == 1
    with pytest.raises(UserError, match="not a run folder"):
        evaluate_run(tmp_path / "nothing")
    with pytest.raises(UserError, match="split=<one of train, val, test>"):
        evaluate_run(tmp_path, "dev")
