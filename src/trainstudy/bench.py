"""How fast trainstudy trains next to a hand-written PyTorch loop and the usual Lightning DataLoader habit.

Every variant trains the same model from the same initial weights with the same optimizer and batch size on the
same training samples (Fashion-MNIST's training files minus trainstudy's validation split):

- **raw**: a plain loop over the device tensors, batches cut by the seeded permutation trainstudy uses;
- **trainstudy**: ``train(cfg)`` as a user runs it, TensorBoard logging, convergence tracking and init diagnostics
  on. Its epoch time leaves out the validation passes themselves (work ``val_every_n_steps`` asks for, which the
  other variants do not do) and keeps everything else: Lightning's loop, loss read-backs, logging;
- **dataloader**: torchvision's FashionMNIST (ToTensor, Normalize) through a DataLoader, automatic optimization and
  ``self.log`` every step: what users would otherwise get.

The variants run in one process, in rounds: each round trains every variant for a warm-up epoch and a few timed
ones, in an order that rotates from round to round, so machine drift hits all of them alike.
"""

from __future__ import annotations

import copy
import json
import math
import os
import resource
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from trainstudy import datasets
from trainstudy.data import DataSplits, forget_last_load, load_data, split_indices
from trainstudy.datamodule import DeviceBatches
from trainstudy.errors import UserError
from trainstudy.train import build, train

VARIANTS = ("raw", "trainstudy", "dataloader")
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")
MISSING_DATA = ("Fashion-MNIST is not in {folders}: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
                "put its four .gz files in <data_dir>/FashionMNIST/raw (e.g. python -c \"from torchvision.datasets "
                "import FashionMNIST; FashionMNIST('data', download=True)\")")


@dataclass(frozen=True)
class Case:
    """One row group of the table: a model and a batch size."""

    model: str  # mlp (784-256-10) | cnn (LeNet-5)
    batch_size: int

    @property
    def name(self) -> str:
        return f"{self.model}-{self.batch_size}"

    def overrides(self) -> list[str]:
        model = ["model=mlp", "model.depth=1", "model.width=256"] if self.model == "mlp" else ["model=cnn"]
        return ["data=fashion_mnist", f"data.batch_size={self.batch_size}", *model]


CASES = (Case("mlp", 128), Case("mlp", 512), Case("cnn", 128))


# ------------------------------------------------------------------------------------------ data files


def find_fashion_mnist(data_dir: Path) -> Path:
    """The folder holding Fashion-MNIST's four IDX files (plain or .gz), searched as trainstudy's loader does."""
    folders = [data_dir / "FashionMNIST" / "raw", datasets.DEBIAN_FASHION_DIR]
    for folder in folders:
        if all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in FASHION_FILES):
            return folder
    raise UserError(MISSING_DATA.format(folders=" or ".join(map(str, folders))))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of unsigned bytes (the format both loaders read)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def stage_fashion_mnist(source: Path, work_dir: Path, limit: int | None = None) -> Path:
    """Copy the files, uncompressed (torchvision reads only those) and cut to ``limit`` samples, to work_dir.

    Both trainstudy (``data_dir=work_dir``) and torchvision (``root=work_dir``) then read the same samples.
    """
    raw = work_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_FILES:
        path = source / name if (source / name).is_file() else source / f"{name}.gz"
        array = datasets.read_idx(path, ndim=3 if "images" in name else 1)
        write_idx(raw / name, array[:limit])
    return work_dir


# ------------------------------------------------------------------------------------------ timing epochs


@dataclass
class Epoch:
    seconds: float       # the time that counts (trainstudy: validation passes left out)
    wall: float          # everything between the epoch's first and last instruction
    peak_bytes: int      # peak memory during the epoch (CUDA: allocated by torch; CPU: the process's RSS)
    cpu: float           # CPU seconds the process used (all threads), validation passes included: on a loaded
                         # machine, less sensitive than wall time to what the other processes do


@dataclass
class EpochTimer:
    """Times the epochs of one run; the caller brackets each with start() and stop()."""

    device: torch.device
    epochs: list[Epoch] = field(default_factory=list)
    excluded: float = 0.0  # seconds of this epoch that do not count (trainstudy's validation passes)
    _t0: float = 0.0
    _cpu0: float = 0.0

    def start(self) -> None:
        _sync(self.device)
        _reset_peak_memory(self.device)
        self.excluded = 0.0
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        _sync(self.device)
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        self.epochs.append(Epoch(wall - self.excluded, wall, _peak_memory(self.device), cpu))


class EpochClock(L.Callback):
    """An EpochTimer on a Lightning run; with exclude_validation, trainstudy's validation passes don't count."""

    def __init__(self, timer: EpochTimer, exclude_validation: bool = False):
        self.timer, self.exclude_validation = timer, exclude_validation

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.exclude_validation:
            return
        evaluate = module.evaluate

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return evaluate(*args, **kwargs)
            finally:
                _sync(self.timer.device)
                self.timer.excluded += time.perf_counter() - t0

        module.evaluate = timed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.timer.start()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.timer.stop()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------------------ the variants


def _initial(cfg: DictConfig, splits: DataSplits):  # noqa: ANN202 - a StudyModule
    """The module train(cfg) starts from: seeded the same way, so the same initial weights."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return build(cfg, splits)[0]


def run_raw(timer: EpochTimer, cfg: DictConfig, splits: DataSplits, epochs: int) -> list[float]:
    """A plain PyTorch loop. Returns the first (warm-up) epoch's losses, to check it matches trainstudy."""
    module = _initial(cfg, splits)
    model, loss_fn = module.model.to(timer.device), module.loss
    if cfg.get("compile"):
        model.compile()
    optimizer = instantiate(cfg.optim)(model.parameters())
    x, y = splits.x_train.to(timer.device), splits.y_train.to(timer.device)
    bs = cfg.data.batch_size
    order = DeviceBatches(x, y, bs, cfg.seed, epoch=lambda: 0)  # only for its seeded permutation
    autocast = torch.autocast(timer.device.type, dtype=torch.bfloat16,
                              enabled=cfg.trainer.precision == "bf16-mixed")
    first: list[torch.Tensor] = []
    for epoch in range(epochs):
        timer.start()
        perm = order.permutation(epoch)
        for start in range(0, len(perm), bs):
            idx = perm[start:start + bs]
            with autocast:
                loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if epoch == 0:
                first.append(loss.detach())
        timer.stop()
    return torch.stack(first).float().tolist()


def run_trainstudy(timer: EpochTimer, cfg: DictConfig, epochs: int, out_dir: Path) -> list[float]:
    """``train(cfg)``, as ``python train.py`` runs it. Returns its per-step training losses."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs
        cfg.progress_bar = False
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.tb_dir = str(out_dir / "tb")
    return train(cfg, callbacks=[EpochClock(timer, exclude_validation=True)])["train_loss"]


class DataLoaderModule(L.LightningModule):
    """The common pattern: automatic optimization, ``self.log`` of the loss every step."""

    def __init__(self, model: torch.nn.Module, loss: torch.nn.Module, optimizer: Callable[..., torch.optim.Optimizer]):
        super().__init__()
        self.model, self.loss, self.optimizer_factory = model, loss, optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self.model(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())


def run_dataloader(timer: EpochTimer, cfg: DictConfig, splits: DataSplits, epochs: int, out_dir: Path,
                   workers: int) -> None:
    """torchvision's FashionMNIST + DataLoader + Lightning's defaults (checkpoints and progress bar off)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from torchvision import datasets as tv_datasets
    from torchvision import transforms

    module = _initial(cfg, splits)
    images = tv_datasets.FashionMNIST(cfg.data_dir, train=True)
    train_idx, _ = split_indices(len(images), cfg.data.val_fraction, cfg.data.split_seed)
    pixels = images.data[train_idx].float() / 255  # trainstudy's normalization: training-split mean and std
    images.transform = transforms.Compose([transforms.ToTensor(),
                                           transforms.Normalize((pixels.mean().item(),), (pixels.std().item(),))])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(images, train_idx.tolist()), batch_size=cfg.data.batch_size, shuffle=True,
        num_workers=workers, pin_memory=timer.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed))
    model = module.model
    if cfg.get("compile"):
        model.compile()
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision, max_epochs=epochs,
        logger=TensorBoardLogger(str(out_dir), name="", version=""), callbacks=[EpochClock(timer)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0)
    trainer.fit(DataLoaderModule(model, module.loss, instantiate(cfg.optim)), train_dataloaders=loader)


# ------------------------------------------------------------------------------------------ one case


@dataclass
class Row:
    case: str
    variant: str
    epochs: list[Epoch]  # the timed ones
    samples: int

    @property
    def seconds(self) -> float:
        return statistics.median(e.seconds for e in self.epochs)

    @property
    def wall(self) -> float:
        return statistics.median(e.wall for e in self.epochs)

    @property
    def cpu(self) -> float:
        return statistics.median(e.cpu for e in self.epochs)

    @property
    def peak_bytes(self) -> int:
        return max(e.peak_bytes for e in self.epochs)


def run_case(case: Case, cfg: DictConfig, rounds: int, epochs: int, out_dir: Path, workers: int = 0,
             variants: tuple[str, ...] = VARIANTS) -> tuple[list[Row], float | None]:
    """Per round, train every variant for a warm-up epoch plus ``epochs`` timed ones, the order rotating.

    Everything runs in the main thread, as ``python train.py`` does (in other threads torch's CPU kernels
    behave differently: one thread, or two that fight for the cores). Returns the rows and the largest
    difference between raw's and trainstudy's warm-up-epoch losses (None when either did not run): 0 means both
    trained the same model on the same batches.
    """
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    splits = load_data(cfg.data, cfg.data_dir)
    runs: dict[str, Callable[[EpochTimer, Path], Any]] = {
        "raw": lambda t, out: run_raw(t, cfg, splits, epochs + 1),
        "trainstudy": lambda t, out: run_trainstudy(t, cfg, epochs + 1, out),
        "dataloader": lambda t, out: run_dataloader(t, cfg, splits, epochs + 1, out, workers),
    }
    timed: dict[str, list[Epoch]] = {name: [] for name in variants}
    losses: dict[str, list[float]] = {}
    for r in range(rounds):
        for name in variants[r % len(variants):] + variants[:r % len(variants)]:
            timer = EpochTimer(device)
            result = runs[name](timer, out_dir / case.name / f"round{r}" / name)
            timed[name] += timer.epochs[1:]  # the first epoch is the warm-up
            if r == 0 and result is not None:
                losses[name] = result
    rows = [Row(case.name, name, epochs_, len(splits.x_train)) for name, epochs_ in timed.items()]
    agreement = None
    if "raw" in losses and "trainstudy" in losses:
        pairs = zip(losses["raw"], losses["trainstudy"])
        agreement = max((abs(a - b) for a, b in pairs), default=math.nan)
    return rows, agreement


# ------------------------------------------------------------------------------------------ the table


def table(rows: list[Row]) -> str:
    """Median epoch time, samples/s and ratio to raw per case and variant."""
    raw = {r.case: r.seconds for r in rows if r.variant == "raw"}
    lines = [f"{'case':<9} {'variant':<11} {'epoch s':>8} {'samples/s':>10} {'x raw':>6} {'with val s':>10} "
             f"{'cpu s':>6} {'peak mem':>9}"]
    for r in rows:
        ratio = f"{r.seconds / raw[r.case]:.2f}" if r.case in raw else "-"
        with_val = f"{r.wall:.3f}" if r.variant == "trainstudy" else ""
        lines.append(f"{r.case:<9} {r.variant:<11} {r.seconds:8.3f} {r.samples / r.seconds:10,.0f} {ratio:>6} "
                     f"{with_val:>10} {r.cpu:6.2f} {r.peak_bytes / 2**20:7.0f} M")
    return "\n".join(lines)


def row_json(r: Row, raw_seconds: float | None) -> dict[str, Any]:
    return {"case": r.case, "variant": r.variant, "median_epoch_s": r.seconds, "median_epoch_with_val_s": r.wall,
            "samples_per_s": r.samples / r.seconds, "ratio_to_raw": r.seconds / raw_seconds if raw_seconds else None,
            "peak_memory_bytes": r.peak_bytes, "train_samples": r.samples,
            "median_epoch_cpu_s": r.cpu, "epochs_s": [e.seconds for e in r.epochs],
            "epochs_with_val_s": [e.wall for e in r.epochs],
            "epochs_cpu_s": [e.cpu for e in r.epochs]}


# ------------------------------------------------------------------------------------------ the other figures


def time_data_loads(conf: Path, data_dir: Path, repeats: int = 5) -> dict[str, dict[str, float | str]]:
    """Seconds to load each dataset from the decoded-array cache (the first call decodes when no cache exists)."""
    from omegaconf import OmegaConf

    out: dict[str, dict[str, float | str]] = {}
    for label, name, extra in (("fashion_mnist", "fashion_mnist", {}), ("mnist bundled", "mnist", {"source": "bundled"})):
        cfg = OmegaConf.merge(OmegaConf.load(conf / "data" / f"{name}.yaml"), extra)
        times = []
        for _ in range(repeats + 1):
            forget_last_load()
            t0 = time.perf_counter()
            splits = load_data(cfg, data_dir)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_data(cfg, data_dir)
        again = time.perf_counter() - t0
        out[label] = {"source": splits.source, "first_s": times[0], "cached_median_s": statistics.median(times[1:]),
                      "in_process_again_s": again}
    return out


# Runs train.py as it is, but ends the process at the first training step and prints the time it got there.
FIRST_STEP = """
import os, runpy, sys, time
from trainstudy.module import StudyModule

def first_step(*args, **kwargs):
    print(f"first training step at {time.time():.6f}", flush=True)
    os._exit(0)

StudyModule.training_step = first_step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _launch(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Seconds from launching argv to its exit (or to the first training step it prints), and its output."""
    t0 = time.time()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    end = time.time()
    marks = [line for line in proc.stdout.splitlines() if line.startswith("first training step at ")]
    if marks:
        end = float(marks[-1].rsplit(" ", 1)[1])
    elif proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return end - t0, proc.stderr


def time_startup(root: Path, data_dir: Path, work_dir: Path, args: list[str], repeats: int = 5) -> dict[str, Any]:
    """Process start to the first training step of ``python train.py args``, next to ``import torch, lightning``.

    The two are launched in turn, ``repeats`` times each; medians.
    """
    env = {**os.environ, "TRAINSTUDY_DATA_DIR": str(data_dir)}
    run = [sys.executable, "-c", FIRST_STEP, str(root / "train.py"), *args, f"hydra.run.dir={work_dir}/startup"]
    base = [sys.executable, "-c", "import torch, lightning"]
    _launch(run, work_dir, env)  # warms the data cache and the OS's file cache
    runs, bases = [], []
    for _ in range(repeats):
        bases.append(_launch(base, work_dir, env)[0])
        runs.append(_launch(run, work_dir, env)[0])
    return {"command": f"python train.py {' '.join(args)}", "first_step_s": statistics.median(runs),
            "import_torch_lightning_s": statistics.median(bases),
            "ratio": statistics.median(runs) / statistics.median(bases), "first_step_all_s": runs,
            "import_all_s": bases}


def time_sweep(root: Path, data_dir: Path, work_dir: Path, args: list[str], jobs: int = 8) -> dict[str, Any]:
    """A basic-launcher sweep's cost per job beyond training: (wall - training time) of an n-job sweep minus a
    1-job sweep's, over n - 1 jobs (so the process's own start-up does not count)."""
    env = {**os.environ, "TRAINSTUDY_DATA_DIR": str(data_dir)}
    measured = {}
    for n in (1, jobs):
        sweep_dir = work_dir / f"sweep{n}"
        argv = [sys.executable, str(root / "train.py"), "-m", *args, f"seed={','.join(map(str, range(n)))}",
                f"hydra.sweep.dir={sweep_dir}"]
        wall, _ = _launch(argv, work_dir, env)
        train_s = [json.loads(p.read_text())["metrics"]["conv/train_time_s"] for p in sweep_dir.glob("*/metrics.json")]
        if len(train_s) != n:
            raise RuntimeError(f"sweep of {n} left {len(train_s)} metrics.json files")
        measured[n] = (wall, sum(train_s))
    (wall1, train1), (wall_n, train_n) = measured[1], measured[jobs]
    return {"command": f"python train.py -m {' '.join(args)} seed=0,...,{jobs - 1}", "jobs": jobs,
            "wall_s": wall_n, "train_s": train_n, "wall_1_job_s": wall1, "train_1_job_s": train1,
            "per_job_overhead_s": ((wall_n - train_n) - (wall1 - train1)) / (jobs - 1),
            "per_job_overhead_with_startup_s": (wall_n - train_n) / jobs}
