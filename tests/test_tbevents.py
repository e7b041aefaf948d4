"""The run's TensorBoard writer (trainstudy.tbevents): the same files, read the same by TensorBoard, as Lightning's
stock TensorBoardLogger given the same calls, and nothing held back when the process dies."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger as StockLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_masked_crc32c
from tensorboard.summary.writer.record_writer import RecordWriter

from conftest import make_cfg
from trainstudy import tbevents
from trainstudy.diagnostics import weight_histogram
from trainstudy.loggers import build_loggers


class Bytes:
    """A file-like sink for tensorboard's RecordWriter."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


@pytest.mark.parametrize("c_crc", [True, False], ids=["google-crc32c", "pure-python"])
def test_records_are_byte_for_byte_tensorboards(c_crc: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not c_crc:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c
        monkeypatch.setattr(tbevents, "_crc32c", crc32c)
    rng = random.Random(0)
    for n in [0, 1, 7, 8, 9, 63, 64, 65, 1000]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert tbevents.masked_crc32c(data) == tensorboard_masked_crc32c(data)
        sink = Bytes()
        RecordWriter(sink).write(data)
        assert tbevents.record(data) == sink.data


def write_the_same(logger, steps: int = 30) -> None:
    """What a run writes: hparams with their metrics, scalars one and two at a time, a dict, histograms."""
    logger.log_hyperparams({"init": "kaiming", "lr": 0.1}, {"conv/loss_auc": 0.0})
    for step in range(1, steps + 1):
        metrics = {"train/loss": 1.0 / step}
        if step % 3 == 0:
            metrics["train/lr"] = 0.1 * (1 - step / steps)
        logger.log_metrics(metrics, step=step)
        if step % 10 == 0:
            logger.log_metrics({"val/loss": 0.5 / step, "val/acc": step / 100}, step=step)
    logger.log_metrics({"grads": {"a": 1.0, "b": 2.0}}, step=steps)
    weights = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    import torch
    logger.experiment.add_histogram_raw("weights/0", **weight_histogram(torch.from_numpy(weights)), global_step=0)
    logger.experiment.add_histogram("weights/1", weights, global_step=steps)
    logger.finalize("success")


def read(folder: Path) -> dict:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    histograms = {t: [(e.step, e.histogram_value) for e in acc.Histograms(t)] for t in tags["histograms"]}
    try:
        hparams = acc.PluginTagToContent("hparams")
    except KeyError:  # a folder without them (add_scalars' own)
        hparams = {}
    return {"scalars": scalars, "histograms": histograms, "hparams": hparams}


def test_tensorboard_reads_what_the_stock_logger_would_have_written(tmp_path: Path) -> None:
    ours = tbevents.TensorBoardLogger(str(tmp_path / "ours"), name="", version="", default_hp_metric=False)
    stock = StockLogger(str(tmp_path / "stock"), name="", version="", default_hp_metric=False)
    write_the_same(ours)
    write_the_same(stock)
    assert isinstance(ours.experiment, tbevents.SummaryWriter) and not isinstance(stock.experiment,
                                                                                  tbevents.SummaryWriter)
    mine, theirs = read(tmp_path / "ours"), read(tmp_path / "stock")
    assert mine == theirs
    assert len(mine["scalars"]["train/loss"]) == 30 and len(mine["scalars"]["train/lr"]) == 10
    assert {"val/acc", "val/loss", "conv/loss_auc"} <= set(mine["scalars"])
    assert set(mine["histograms"]) == {"weights/0", "weights/1"}
    assert len(mine["hparams"]) == 3  # the HParams tab's experiment, session start and end
    for sub in ("grads_a", "grads_b"):  # add_scalars: a folder (a file writer of torch's) per key, as there
        assert read(tmp_path / "ours" / sub) == read(tmp_path / "stock" / sub)
    # one record a log_metrics call: the file's first event, hparams' metrics and three summaries, 30 steps,
    # 3 validations, two histograms
    (events,) = (tmp_path / "ours").glob("events.out.tfevents.*")
    assert sum(1 for _ in EventFileLoader(str(events)).Load()) == 1 + 1 + 3 + 30 + 3 + 2


def test_purge_step_drops_what_a_killed_run_wrote_past_its_checkpoint(tmp_path: Path) -> None:
    first = tbevents.TensorBoardLogger(str(tmp_path), name="", version="")
    for step in range(1, 11):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.finalize("failed")
    resumed = tbevents.TensorBoardLogger(str(tmp_path), name="", version="", purge_step=6)
    for step in range(6, 9):
        resumed.log_metrics({"train/loss": 100.0 + step}, step=step)
    resumed.finalize("success")
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 106.0), (7, 107.0), (8, 108.0)]


KILLED = """
import os, sys
from trainstudy.tbevents import TensorBoardLogger
logger = TensorBoardLogger(sys.argv[1], name="", version="")
for step in range(1, 501):
    logger.log_metrics({"train/loss": 1.0 / step}, step=step)
os._exit(9)  # no finalize, no atexit, no flush: a kill -9's end
"""


def test_a_killed_process_keeps_every_event_it_wrote(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 9, done.stderr
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 501))


def test_a_run_writes_through_it_by_default(tmp_path: Path) -> None:
    cfg = make_cfg([], tmp_path)
    (logger,) = build_loggers(cfg, tmp_path / "tb")
    assert type(logger) is tbevents.TensorBoardLogger


def test_a_remote_store_gets_tensorboards_own_writer() -> None:
    import fsspec
    logger = tbevents.TensorBoardLogger("memory://trainstudy-tb", name="", version="")
    assert type(logger.experiment).__module__ == "torch.utils.tensorboard.writer"  # not this module's
    logger.log_metrics({"train/loss": 0.5, "train/lr": 0.1}, step=1)
    logger.finalize("success")
    assert any("events.out.tfevents" in f for f in fsspec.filesystem("memory").find("/trainstudy-tb"))
