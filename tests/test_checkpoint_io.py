"""The run's CheckpointIO: local saves straight to a file and atomic, removals, Lightning's own elsewhere."""

from __future__ import annotations

import builtins
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import make_cfg
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from trainstudy import checkpoint_io
from trainstudy.checkpoint_io import LocalCheckpointIO
from trainstudy.train import fit


def a_checkpoint(value: float) -> dict:
    return {"state_dict": {"w": torch.full((64, 64), value)}, "global_step": int(value)}


def test_a_save_writes_what_torch_load_reads_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "a.ckpt"
    io = LocalCheckpointIO()
    io.save_checkpoint(a_checkpoint(1.0), path)
    io.save_checkpoint(a_checkpoint(2.0), path)  # over the first
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 2 and torch.equal(loaded["state_dict"]["w"], torch.full((64, 64), 2.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.ckpt"]


def test_a_failed_save_keeps_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.ckpt"
    io = LocalCheckpointIO()
    io.save_checkpoint(a_checkpoint(1.0), path)
    real_open = builtins.open

    class Full:  # a disk that fills up half-way through the write
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(builtins, "open", lambda p, mode="r", *a, **k: Full(real_open(p, mode, *a, **k))
                        if str(p).endswith(".tmp") else real_open(p, mode, *a, **k))
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint(a_checkpoint(2.0), path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


def test_remove_takes_a_file_a_folder_and_a_missing_path(tmp_path: Path) -> None:
    io = LocalCheckpointIO()
    io.save_checkpoint(a_checkpoint(1.0), tmp_path / "a.ckpt")
    (tmp_path / "sharded.ckpt").mkdir()
    (tmp_path / "sharded.ckpt" / "part0").write_bytes(b"x")
    for name in ("a.ckpt", "sharded.ckpt", "never.ckpt"):
        io.remove_checkpoint(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_a_remote_path_goes_through_lightnings_fsspec_code() -> None:
    io = LocalCheckpointIO()
    io.save_checkpoint(a_checkpoint(3.0), "memory://ckpts/a.ckpt")
    assert io.load_checkpoint("memory://ckpts/a.ckpt")["global_step"] == 3
    io.remove_checkpoint("memory://ckpts/a.ckpt")
    import fsspec

    assert not fsspec.filesystem("memory").exists("/ckpts/a.ckpt")


def test_install_replaces_only_lightnings_default() -> None:
    class Mine(TorchCheckpointIO):
        pass

    default = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    checkpoint_io.install(default)
    assert type(default.strategy.checkpoint_io) is LocalCheckpointIO
    users = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                      plugins=[Mine()])
    checkpoint_io.install(users)
    assert type(users.strategy.checkpoint_io) is Mine


def test_a_run_saves_through_it(tmp_path: Path, data_dir: Path) -> None:
    seen: list[type] = []

    class Spy(L.Callback):
        def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            seen.append(type(trainer.strategy.checkpoint_io))

    cfg = make_cfg(["data=digits", f"data_dir={data_dir}", "progress_bar=false", "trainer.max_steps=10",
                    "val_every_n_steps=5", "callbacks=[model_checkpoint]"], tmp_path)
    fit(cfg, callbacks=[Spy()])
    assert seen == [LocalCheckpointIO]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 10
    assert len(list((checkpoints / "model_checkpoint").glob("best-*.ckpt"))) == 1
    assert not list(checkpoints.rglob("*.tmp"))


def test_the_cost_script_times_every_case() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "scripts" / "io_cost.py"), "--rounds", "2"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    lines = [line for line in out.splitlines() if line.rstrip().endswith(" ms")]
    assert len(lines) == 8 and any("LocalCheckpointIO" in line for line in lines)
