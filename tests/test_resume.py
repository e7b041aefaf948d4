"""A run stopped by SIGTERM resumes to exactly what an uninterrupted run gives; resume refuses what it can't do."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, make_cfg
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import open_dict
from test_train import cli, scalars

from trainstudy.errors import UserError
from trainstudy.report import build_report
from trainstudy.resume import CHECKPOINT, read_checkpoint_info, resume_argv, tensor_checksum
from trainstudy.sweeps import recorded_overrides
from trainstudy.train import RunInterrupted, train

RUN = ["data=digits", "model.width=64", "seed=3", "trainer.max_steps=1000", "val_every_n_steps=25",
       "log_every_n_steps=20", "checkpoint.every_n_steps=100"]
TIMES = ("conv/time_to_target_s", "conv/train_time_s")


def without_times(result: dict) -> dict:
    return {k: v for k, v in result["metrics"].items() if k not in TIMES}


@pytest.mark.slow
def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path: Path, data_dir: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert cli([*RUN, f"hydra.run.dir={whole}"], tmp_path, data_dir).returncode == 0

    env = {**os.environ, "TRAINSTUDY_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *RUN, f"hydra.run.dir={parts}"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (parts / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    stopped = json.loads((parts / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and 100 <= len(stopped["train_loss"]) < 1000
    assert f"python train.py resume={parts}" in stderr

    resumed = cli([f"resume={parts}"], tmp_path, data_dir)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((parts / "metrics.json").read_text())
    assert b["status"] == "ok"
    assert b["train_loss"] == a["train_loss"]
    assert b["curve"] == a["curve"]
    assert without_times(b) == without_times(a)
    tb_a, tb_b = scalars(whole / "tb"), scalars(parts / "tb")
    for tag in ("train/loss", "val/acc", "val/loss"):
        assert tb_b[tag] == tb_a[tag], tag  # one curve, steps going on: no second curve from 0, no duplicates


@pytest.mark.slow
def test_resume_extends_a_finished_run(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    assert cli(["data=digits", "trainer.max_steps=40", "val_every_n_steps=20", f"hydra.run.dir={run}"],
               tmp_path, data_dir).returncode == 0
    proc = cli([f"resume={run}", "trainer.max_steps=60"], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "metrics.json").read_text())
    assert len(result["train_loss"]) == 60 and [p["step"] for p in result["curve"]] == [0, 20, 40, 60]
    # the same numbers as one run of 60 steps: step 40 is mid-epoch (12 steps an epoch), and the extension goes
    # on with the rest of that epoch's batches (Lightning had counted the cut epoch as completed)
    whole = tmp_path / "whole"
    assert cli(["data=digits", "trainer.max_steps=60", "val_every_n_steps=20", f"hydra.run.dir={whole}"],
               tmp_path, data_dir).returncode == 0
    once = json.loads((whole / "metrics.json").read_text())
    assert result["train_loss"] == once["train_loss"] and result["curve"] == once["curve"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["not-a-run", "other-override", "other-config"])
def test_resume_refuses_what_it_cannot_continue(case: str, tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    if case == "not-a-run":
        run.mkdir()
        args, needle = [f"resume={run}"], "is not a run folder"
    else:
        assert cli(["data=digits", "trainer.max_steps=4", f"hydra.run.dir={run}"], tmp_path, data_dir).returncode == 0
        if case == "other-override":
            args, needle = [f"resume={run}", "optim.lr=0.5"], "only trainer.max_steps / trainer.max_epochs may change"
        else:  # the run's own record of its overrides no longer matches the checkpoint
            overrides = run / ".hydra" / "overrides.yaml"
            overrides.write_text(overrides.read_text() + "- optim.lr=0.5\n")
            args, needle = [f"resume={run}"], "written by another configuration"
    proc = cli(args, tmp_path, data_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


def flip_a_bit(ckpt: Path, tensor: torch.Tensor) -> None:
    """Flip one low mantissa bit inside a tensor's bytes in the file (the zip stores them as they are)."""
    data = bytearray(ckpt.read_bytes())
    at = data.find(tensor.contiguous().view(torch.uint8).numpy().tobytes()[:64])
    assert at > 0 and data.find(tensor.contiguous().view(torch.uint8).numpy().tobytes()[:64], at + 1) == -1
    data[at + 8] ^= 0x01
    ckpt.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["weights", "optimizer"])
def test_a_bit_flipped_checkpoint_is_refused(where: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = make_cfg(["data=digits", f"data_dir={data_dir}", "trainer.max_steps=4", "val_every_n_steps=2",
                    "checkpoint.every_n_steps=2", "optim.momentum=0.9", "progress_bar=false"], tmp_path)
    train(cfg)
    run = tmp_path / "run"
    assert read_checkpoint_info(run)["global_step"] == 4  # as written: its checksum matches
    payload = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    assert len(payload["trainstudy"]["tensor_crc32c"]) == 8
    tensor = (next(t for t in payload["state_dict"].values() if t.numel() >= 64) if where == "weights" else
              next(s["momentum_buffer"] for s in payload["optimizer_states"][0]["state"].values()
                   if s["momentum_buffer"].numel() >= 64))
    flip_a_bit(run / CHECKPOINT, tensor)
    torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)  # still loads: only the checksum tells
    with pytest.raises(UserError, match=r"checkpoint .*last.ckpt is damaged \(checksum mismatch\)") as error:
        read_checkpoint_info(run)
    assert "\n" not in str(error.value)


def test_a_checkpoint_with_the_older_sha256_checksum_is_still_checked(tmp_path: Path, data_dir: Path) -> None:
    """Checkpoints written before CRC-32C carried a sha256: they load, and a damaged one is still refused."""
    cfg = make_cfg(["data=digits", f"data_dir={data_dir}", "trainer.max_steps=2", "val_every_n_steps=2",
                    "optim.momentum=0.9", "progress_bar=false"], tmp_path)
    train(cfg)
    run = tmp_path / "run"
    payload = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    info = payload["trainstudy"]
    del info["tensor_crc32c"]
    field, info["tensor_sha256"] = tensor_checksum(payload, "sha256")
    assert field == "tensor_sha256" and len(info["tensor_sha256"]) == 64
    torch.save(payload, run / CHECKPOINT)
    assert read_checkpoint_info(run)["global_step"] == 2
    flip_a_bit(run / CHECKPOINT, next(t for t in payload["state_dict"].values() if t.numel() >= 64))
    with pytest.raises(UserError, match=r"is damaged \(checksum mismatch\)"):
        read_checkpoint_info(run)


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 1 MB tmpfs: too small for the checkpoint of a 300k-parameter MLP (root only; skipped elsewhere)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_naming_the_folder_and_leaves_no_half_checkpoint(full_disk: Path,
                                                                                 data_dir: Path) -> None:
    cfg = make_cfg(["data=digits", "model.width=512", "trainer.max_steps=8", "checkpoint.every_n_steps=4",
                    f"data_dir={data_dir}", "progress_bar=false"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(full_disk / "run")
        cfg.paths.tb_dir = str(full_disk / "run" / "tb")
    with pytest.raises(UserError, match=rf"the disk holding {full_disk / 'run' / 'checkpoints'} is full") as e:
        train(cfg)
    assert "\n" not in str(e.value)
    assert list((full_disk / "run" / "checkpoints").iterdir()) == []  # no .ckpt.tmp left to fill it further


# In-process resumes: the run's own overrides with resume=<its folder>, as resume_argv makes them.
SHORT = ["data=digits", "val_every_n_steps=10", "log_every_n_steps=10", "checkpoint.every_n_steps=10",
         "progress_bar=false"]


def run_in(folder: Path, args: list[str], data_dir: Path, tb_dir: Path | None = None,
           callbacks: list[L.Callback] = ()) -> dict:
    """train() with its run folder at ``folder`` (and TensorBoard at ``tb_dir``, as a sweep job's)."""
    cfg = make_cfg([*SHORT, f"data_dir={data_dir}", *args])
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
        cfg.paths.tb_dir = str(tb_dir or folder / "tb")
    return train(cfg, callbacks)


class StopAt(L.Callback):
    """Stops a run as SIGTERM does, once it has made ``step`` steps."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *_: object) -> None:
        if trainer.global_step >= self.step:
            raise SIGTERMException


def test_seed_null_resumes_with_the_seed_it_drew(tmp_path: Path, data_dir: Path) -> None:
    run, args = tmp_path / "run", ["seed=null", "trainer.max_steps=40"]
    with pytest.raises(RunInterrupted):
        run_in(run, args, data_dir, callbacks=[StopAt(20)])
    stopped = json.loads((run / "metrics.json").read_text())
    seed = stopped["hparams"]["seed"]
    assert isinstance(seed, int) and len(stopped["train_loss"]) == 20
    resumed = run_in(run, [*args, f"resume={run}"], data_dir)
    whole = run_in(tmp_path / "whole", [f"seed={seed}", "trainer.max_steps=40"], data_dir)
    assert resumed["hparams"]["seed"] == seed
    assert resumed["train_loss"] == whole["train_loss"] and resumed["curve"] == whole["curve"]


def test_resume_of_a_moved_sweep_writes_tensorboard_where_the_sweep_now_is(tmp_path: Path, data_dir: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    run_in(old / "0", ["trainer.max_steps=20"], data_dir, tb_dir=old / "tb" / "init=default")
    old.rename(new)
    run_in(new / "0", ["trainer.max_steps=30", f"resume={new / '0'}"], data_dir, tb_dir=new / "tb" / "elsewhere")
    assert not old.exists()
    steps = [s for s, _ in scalars(new / "tb" / "init=default")["train/loss"]]
    assert steps == list(range(1, 31))


def test_csv_logger_resume_keeps_the_earlier_rows(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    run_in(run, ["logger=csv", "trainer.max_steps=20"], data_dir)
    run_in(run, ["logger=csv", "trainer.max_steps=30", f"resume={run}"], data_dir)
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["train/loss"]] == list(range(1, 31))


def test_resuming_a_finished_run_logs_its_end_once(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    first = run_in(run, ["trainer.max_steps=20"], data_dir)
    again = run_in(run, ["trainer.max_steps=20", f"resume={run}"], data_dir)
    assert again["metrics"] == first["metrics"] and again["train_loss"] == first["train_loss"]
    tags = scalars(run / "tb")
    end_tags = [t for t in tags if t.startswith(("conv/", "diag/"))]
    assert "conv/steps" in end_tags and "diag/weight_rank" in end_tags
    for tag in end_tags:
        steps = [s for s, _ in tags[tag]]
        assert len(steps) == len(set(steps)), tag


def test_resume_refuses_max_steps_below_the_steps_done(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    run_in(run, ["trainer.max_steps=20"], data_dir)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- data=digits\n- trainer.max_steps=20\n")
    with pytest.raises(UserError, match=r"has done 20 steps already, more than trainer.max_steps=10; "
                                         r"give trainer.max_steps=20 or more"):
        resume_argv([f"resume={run}", "trainer.max_steps=10"])
    assert resume_argv([f"resume={run}", "trainer.max_steps=20"])[-3] == "trainer.max_steps=20"


def test_resume_is_not_a_recorded_override() -> None:
    assert recorded_overrides(["init=kaiming_normal", "resume=/x/0", "trainer.max_steps=9"]) == [
        "init=kaiming_normal", "trainer.max_steps=9"]


@pytest.mark.slow
def test_cli_resume_of_a_moved_sweep_job_keeps_its_overrides_and_tensorboard(tmp_path: Path, data_dir: Path) -> None:
    sweep, moved = tmp_path / "sweep", tmp_path / "moved"
    args = ["-m", "data=digits", "init=kaiming_normal,xavier_uniform", "trainer.max_steps=20", "val_every_n_steps=10",
            f"hydra.sweep.dir={sweep}"]
    assert cli(args, tmp_path, data_dir).returncode == 0
    sweep.rename(moved)
    proc = cli([f"resume={moved / '0'}"], tmp_path, data_dir)  # a finished job: continued, nothing to add
    assert proc.returncode == 0, proc.stderr
    result = json.loads((moved / "0" / "metrics.json").read_text())
    assert not any(o.startswith("resume=") for o in result["overrides"])
    assert not sweep.exists()  # nothing written to where the sweep was
    assert {g.name for g in build_report(moved).groups} == {"init=kaiming_normal", "init=xavier_uniform"}


@pytest.mark.slow
def test_a_resumed_metainit_run_does_not_learn_its_init_again(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    args = ["data=digits", "init=metainit", "init.steps=30", "val_every_n_steps=10"]
    assert cli([*args, "trainer.max_steps=20", f"hydra.run.dir={run}"], tmp_path, data_dir).returncode == 0
    first = json.loads((run / "metrics.json").read_text())
    proc = cli([f"resume={run}", "trainer.max_steps=40"], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "metainit: learned when the run began (30 steps" in proc.stderr and "not again" in proc.stderr
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["metainit"] == first["metainit"]  # its own seconds, not a second learning's
    assert resumed["train_loss"][:20] == first["train_loss"] and len(resumed["train_loss"]) == 40
    assert resumed["metrics"]["conv/train_time_s"] >= first["metainit"]["seconds"]  # still on the clock
