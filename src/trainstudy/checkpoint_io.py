"""The run's CheckpointIO: Lightning's TorchCheckpointIO, with local saves and removals done directly.

Lightning writes a checkpoint with ``_atomic_save``: ``torch.save`` into a BytesIO, a copy of its bytes
(``getvalue``), then an fsspec transaction (a temporary file, moved into place), and it removes one with fsspec's
``rm``. ModelCheckpoint saves at every improvement of the monitored metric (judged at every validation) and
removes the file it replaces. On a local path this plugin does the same more directly: ``torch.save`` into a
BytesIO, its buffer written without a copy to a temporary file in the checkpoint's folder, then ``os.replace``,
which is atomic on one filesystem (a reader sees the old file or the new one, never half of one, as with
Lightning's). A save and removal of the 1.6 MB checkpoint of a 784-256-10 MLP with momentum took 2.7-2.9 ms
against Lightning's 5.4-5.7 ms (``OMP_NUM_THREADS=1 python scripts/io_cost.py``, two runs). Remote paths (``s3://``, ``memory://``),
``storage_options`` and loading are Lightning's own, unchanged.

``install`` puts it into a Trainer whose strategy has Lightning's default CheckpointIO; a CheckpointIO the user
configured (``trainer.plugins``) stays.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol


class LocalCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves and removals on a local path skip fsspec (see the module's docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
            os.replace(tmp, path)
        except BaseException:  # a full disk, a signal: the half-written file goes, the old one stays
            tmp.unlink(missing_ok=True)
            raise
        return None

    def remove_checkpoint(self, path: Any) -> None:
        if not _is_local_file_protocol(path):
            return super().remove_checkpoint(path)
        path = Path(path)
        if path.is_dir() and not path.is_symlink():  # a sharded checkpoint is a folder
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return None


def install(trainer: L.Trainer) -> None:
    """Use LocalCheckpointIO where the Trainer has Lightning's default TorchCheckpointIO."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = LocalCheckpointIO()
