"""Lightning's DDP on the CPU (gloo): a multi-device run ends cleanly, rank 0 alone writes, resume goes on; a
local sweep with several devices is refused before any job starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_train import cli, scalars

from trainstudy.cli import local_ddp_reason

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data=digits", "val_every_n_steps=4",
       "checkpoint.every_n_steps=4"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_writes_once_and_resumes(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    proc = cli([*DDP, "trainer.max_steps=12", f"hydra.run.dir={run}"], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    assert proc.stderr.count("did not reach") + proc.stderr.count("reached val/acc") == 1  # rank 0 speaks
    result = json.loads((run / "metrics.json").read_text())
    assert result["status"] == "ok" and result["devices"] == 2
    assert [p["step"] for p in result["curve"]] == [0, 4, 8, 12] and len(result["train_loss"]) == 12
    assert result["metrics"]["conv/steps"] == 12
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # no .tmp of another rank

    proc = cli(["resume=" + str(run), "trainer.max_steps=20"], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from step 12" in proc.stderr and "Traceback" not in proc.stderr
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["train_loss"][:12] == result["train_loss"]
    assert [p["step"] for p in resumed["curve"]] == [0, 4, 8, 12, 16, 20]
    assert [s for s, _ in scalars(run / "tb")["train/loss"]] == list(range(1, 21))  # one curve, written once


def test_reduced_step_losses_are_the_sample_weighted_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank took its share of a step's batch: the step's loss is the mean over every sample."""
    import torch

    from trainstudy.convergence import ConvergenceTracker

    class TwoRanks:  # rank 0's losses and counts; rank 1 had losses 3.0, 5.0 over 1 and 3 samples
        world_size = 2

        class strategy:  # noqa: N801 - stands in for Lightning's strategy
            @staticmethod
            def reduce(t: torch.Tensor, reduce_op: str) -> torch.Tensor:
                assert reduce_op == "sum"
                return t + torch.tensor([[3.0 * 1, 5.0 * 3], [1, 3]])

    losses, counts = ConvergenceTracker._global(TwoRanks(), torch.tensor([1.0, 2.0]), [3, 1])
    assert losses == pytest.approx([(1.0 * 3 + 3.0) / 4, (2.0 * 1 + 15.0) / 4]) and counts == [4, 4]


@pytest.mark.parametrize(("trainer", "refused"), [
    ({"strategy": "ddp", "devices": 2}, True), ({"devices": 3}, True), ({"devices": [0, 1]}, True),
    ({"strategy": "ddp", "devices": 1}, False), ({"devices": 1}, False), ({"devices": "auto"}, False)])
def test_several_devices_in_a_local_sweep_are_refused(trainer: dict, refused: bool) -> None:
    cfg = OmegaConf.create({"trainer": trainer, "hydra": {"launcher": {"_target_": "hydra._internal...Basic"}}})
    assert (local_ddp_reason(cfg) is not None) == refused
    on_slurm = OmegaConf.create({"trainer": trainer, "hydra": {"launcher": {
        "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}}})
    assert local_ddp_reason(on_slurm) is None


@pytest.mark.slow
def test_a_ddp_sweep_stops_before_any_job(tmp_path: Path, data_dir: Path) -> None:
    proc = cli(["-m", *DDP, "trainer.max_steps=4", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
               tmp_path, data_dir)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "would start the whole sweep again" in proc.stderr and not (tmp_path / "sweep").exists()
