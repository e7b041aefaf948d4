"""Lightning's TensorBoardLogger, with an event file written in the caller's thread: what conf/logger/tensorboard
gives a run.

The stock path costs a run 30-45 us per logged scalar, and the study logs train/loss (and train/lr) at every
step: Lightning calls ``add_scalar`` once per value (an Event of its own each, ~10 us of protobuf and checks),
tensorboard's writer thread then frames each record with a pure-Python CRC-32C (~8 us), opens, appends to and
closes the file for each one (~10 us), and takes the GIL from the training loop to do it. Here:

- ``log_metrics`` puts every scalar of one call into one Event (a Summary with one value per tag, which every
  TensorBoard reader takes as it takes one Event per value);
- the event file is opened once, unbuffered: each record reaches the operating system when it is written, as
  the stock writer's do when its thread gets to them, so a killed run keeps its events up to its last step;
- records are framed with google-crc32c's C CRC-32C (tensorboard's own pure-Python one where it is missing).

Everything else is Lightning's and torch's: ``logger.experiment`` is a torch ``SummaryWriter`` (histograms,
hparams, images and text go through its ``add_*`` into the same file), ``purge_step`` works as there, and a
remote ``save_dir`` (``s3://``, ``gs://``...) gets the stock writer.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.logger import _add_prefix
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from tensorboard.compat.proto.event_pb2 import Event, SessionLog, SourceMetadata
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor
from torch.utils.tensorboard.writer import FileWriter as TorchFileWriter
from torch.utils.tensorboard.writer import SummaryWriter as TorchSummaryWriter
from typing_extensions import override

try:
    from google_crc32c import value as _crc32c
except ImportError:  # tensorboard's pure-Python one: the same numbers, ~8 us a record slower
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as _crc32c

try:  # the counter tensorboard's own writers number their files with: two writers never share a name
    from tensorboard.summary.writer.event_file_writer import _global_uid

    def _next_uid() -> int:
        return _global_uid.get()
except ImportError:
    _next_uid = itertools.count().__next__

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C (Castagnoli) of ``data``: rotated right by 15 bits, plus a constant."""
    crc = _crc32c(data) & 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord: the length (uint64), its masked CRC, the bytes, their masked CRC; little-endian."""
    header = struct.pack("<Q", len(data))
    return b"".join((header, struct.pack("<I", masked_crc32c(header)), data, struct.pack("<I", masked_crc32c(data))))


class EventFile:
    """tensorboard's EventFileWriter (the same file name, first event and record format) without its thread."""

    def __init__(self, logdir: str, filename_suffix: str = "") -> None:
        self._logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        name = "events.out.tfevents.%010d.%s.%s.%s" % (time.time(), socket.gethostname(), os.getpid(), _next_uid())
        self._path = os.path.join(logdir, name + filename_suffix)
        self._file = open(self._path, "wb", buffering=0)  # noqa: SIM115 - open for the writer's life
        self.add_event(Event(wall_time=time.time(), file_version="brain.Event:2",
                             source_metadata=SourceMetadata(writer="trainstudy.tbevents")))

    def get_logdir(self) -> str:
        return self._logdir

    def add_event(self, event: Event) -> None:
        if not isinstance(event, Event):
            raise TypeError(f"Expected an event_pb2.Event proto, but got {type(event)}")
        self._file.write(record(event.SerializeToString()))

    def flush(self) -> None:
        """Nothing waits in this process: each record was handed to the operating system as it was written."""

    def close(self) -> None:
        self._file.close()

    def reopen(self) -> None:
        """torch's FileWriter.reopen: nothing to do (a closed SummaryWriter starts a new file on its next event)."""


class FileWriter(TorchFileWriter):
    """torch's FileWriter (add_event, add_summary, add_graph...) onto an EventFile."""

    def __init__(self, log_dir: str, filename_suffix: str = "") -> None:  # noqa: D107 - no super(): its thread
        self.event_writer = EventFile(str(log_dir), filename_suffix)


class SummaryWriter(TorchSummaryWriter):
    """torch's SummaryWriter whose file writer is a FileWriter above (``max_queue`` and ``flush_secs`` are
    accepted and have nothing to set: there is no queue and nothing is held back)."""

    def _get_file_writer(self) -> FileWriter:
        # torch's, with the writer swapped: a new file when closed, purge_step's two events first
        if self.all_writers is None or self.file_writer is None:
            self.file_writer = FileWriter(self.log_dir, self.filename_suffix)
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
            if self.purge_step is not None:
                self.file_writer.add_event(Event(step=self.purge_step, file_version="brain.Event:2"))
                self.file_writer.add_event(Event(step=self.purge_step,
                                                 session_log=SessionLog(status=SessionLog.START)))
                self.purge_step = None
        return self.file_writer


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger (same arguments, folders, hparams and checkpoint hooks) writing through
    the SummaryWriter above, one Event per ``log_metrics`` call."""

    @property
    @rank_zero_experiment
    def experiment(self) -> TorchSummaryWriter:
        if self._experiment is not None:
            return self._experiment
        if "://" in str(self.root_dir):  # a remote store: tensorboard's own writer knows how to write there
            return super().experiment
        assert rank_zero_only.rank == 0, "tried to init log dirs in non global_rank=0"
        if self.root_dir:
            self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    @override
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        values, groups = [], {}
        for key, value in metrics.items():
            if isinstance(value, Tensor):
                value = value.item()
            if isinstance(value, dict):
                groups[key] = value
                continue
            try:
                values.append(Summary.Value(tag=key, simple_value=float(value)))
            except (TypeError, ValueError) as ex:  # Lightning's words for it
                raise ValueError(f"\n you tried to log {value} which is currently not supported. "
                                 "Try a dict or a scalar/tensor.") from ex
        if values:
            self.experiment._get_file_writer().add_summary(Summary(value=values), global_step=step)
        for key, group in groups.items():
            self.experiment.add_scalars(key, group, step)
