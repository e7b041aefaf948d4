"""How fast trainstudy trains next to a hand-written PyTorch loop and the usual Lightning DataLoader habit.

Every variant trains the same model from the same initial weights with the same optimizer, learning-rate schedule
(``scheduler=``, stepped every update) and batch size on the same training samples (Fashion-MNIST's training files
minus trainstudy's validation split):

- **raw**: a plain loop over the device tensors, batches cut by the seeded permutation trainstudy uses;
- **trainstudy**: ``train(cfg)`` as a user runs it, TensorBoard logging, convergence tracking and init diagnostics
  on. Its epoch time leaves out the validation passes themselves (work ``val_every_n_steps`` asks for, which the
  other variants do not do) and keeps everything else: Lightning's loop, loss read-backs, logging;
- **dataloader**: torchvision's FashionMNIST (ToTensor, Normalize) through a DataLoader, automatic optimization and
  ``self.log`` every step: what users would otherwise get;
- **tensors**: the same Lightning module over a DataLoader of an in-memory TensorDataset of the normalized
  tensors: the usual pattern without the per-sample image decoding.

The variants run in one process, in rounds: each round trains every variant for a warm-up epoch and a few timed
ones, raw's epochs interleaved with trainstudy's, so machine drift hits them alike.
"""

from __future__ import annotations

import copy
import itertools
import resource
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from trainstudy import datasets
from trainstudy.data import DataSplits, load_data, split_indices
from trainstudy.datamodule import DeviceBatches
from trainstudy.errors import UserError
from trainstudy.schedulers import SchedulerFactory, configure
from trainstudy.train import build, train

VARIANTS = ("raw", "trainstudy", "dataloader", "tensors")
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
    cpu: float           # CPU seconds the process used (all threads), validation passes left out too: time the
                         # machine gave to other processes does not count


@dataclass
class EpochTimer:
    """Times the epochs of one run; the caller brackets each with start() and stop()."""

    device: torch.device
    epochs: list[Epoch] = field(default_factory=list)
    excluded: float = 0.0  # seconds of this epoch that do not count (trainstudy's validation passes)
    excluded_cpu: float = 0.0
    _t0: float = 0.0
    _cpu0: float = 0.0

    def start(self) -> None:
        _sync(self.device)
        _reset_peak_memory(self.device)
        self.excluded = self.excluded_cpu = 0.0
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        _sync(self.device)
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        self.epochs.append(Epoch(wall - self.excluded, wall, _peak_memory(self.device), cpu - self.excluded_cpu))


class EpochClock(L.Callback):
    """An EpochTimer on a Lightning run; with exclude_validation, trainstudy's validation passes don't count.

    ``alongside`` (an iterator, one epoch of another loop per next()) runs an epoch next to each of this run's,
    before it on even epochs and after it on odd ones: both then see the machine in the same state.
    """

    def __init__(self, timer: EpochTimer, exclude_validation: bool = False, alongside: Iterator[None] | None = None):
        self.timer, self.exclude_validation, self.alongside = timer, exclude_validation, alongside

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.exclude_validation:
            return
        evaluate = module.evaluate

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, cpu0 = time.perf_counter(), time.process_time()
            try:
                return evaluate(*args, **kwargs)
            finally:
                _sync(self.timer.device)
                self.timer.excluded += time.perf_counter() - t0
                self.timer.excluded_cpu += time.process_time() - cpu0

        module.evaluate = timed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.alongside is not None and trainer.current_epoch % 2 == 0:
            next(self.alongside)
        self.timer.start()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.timer.stop()
        if self.alongside is not None and trainer.current_epoch % 2 == 1:
            next(self.alongside)


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


def _initial(cfg: DictConfig, splits: DataSplits, epochs: int):
    """The module train(cfg) starts from when it trains ``epochs`` epochs: seeded the same way, so the same
    initial weights, and the same schedule (a cosine's length is the run's)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return build(cfg, splits)[0]


def raw_epochs(timer: EpochTimer, cfg: DictConfig, splits: DataSplits, epochs: int,
               losses: list[float]) -> Iterator[None]:
    """A plain PyTorch loop, one epoch per next() (of ``epochs``: a schedule's length). The model, optimizer,
    schedule (``scheduler=``, stepped after every update) and tensors are set up here, before the first next(),
    from the same seeded build as train(cfg)'s. The first epoch's losses go to ``losses`` (to check that it trains
    exactly as trainstudy does)."""
    module = _initial(cfg, splits, epochs)
    model, loss_fn = module.model.to(timer.device), module.loss
    if cfg.get("compile"):
        model.compile()
    optimizer = instantiate(cfg.optim)(model.parameters())
    scheduler = module.scheduler_factory(optimizer) if module.scheduler_factory else None
    x, y = splits.x_train.to(timer.device), splits.y_train.to(timer.device)
    bs = cfg.data.batch_size
    order = DeviceBatches(x, y, bs, cfg.seed, epoch=lambda: 0)  # only for its seeded permutation
    autocast = torch.autocast(timer.device.type, dtype=torch.bfloat16,
                              enabled=cfg.trainer.precision == "bf16-mixed")

    def epochs() -> Iterator[None]:
        first: list[torch.Tensor] = []
        for epoch in itertools.count():
            timer.start()
            perm = order.permutation(epoch)
            for start in range(0, len(perm), bs):
                idx = perm[start:start + bs]
                with autocast:
                    loss = loss_fn(model(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if epoch == 0:
                    first.append(loss.detach())
            timer.stop()
            if epoch == 0:
                losses.extend(torch.stack(first).float().tolist())
            yield

    return epochs()


def run_trainstudy(timer: EpochTimer, cfg: DictConfig, epochs: int, out_dir: Path,
                   alongside: Iterator[None] | None = None) -> list[float]:
    """``train(cfg)``, as ``python train.py`` runs it (``alongside``: see EpochClock). Returns its per-step
    training losses."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs
        cfg.progress_bar = False
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.tb_dir = str(out_dir / "tb")
    return train(cfg, callbacks=[EpochClock(timer, exclude_validation=True, alongside=alongside)])["train_loss"]


class DataLoaderModule(L.LightningModule):
    """The common pattern: automatic optimization, ``self.log`` of the loss every step, the run's schedule (if
    any) stepped by Lightning every step."""

    def __init__(self, model: torch.nn.Module, loss: torch.nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: SchedulerFactory | None = None):
        super().__init__()
        self.model, self.loss, self.optimizer_factory, self.scheduler_factory = model, loss, optimizer, scheduler

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self.model(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return configure(self.optimizer_factory(self.model.parameters()), self.scheduler_factory, automatic=True)


def run_dataloader(timer: EpochTimer, cfg: DictConfig, splits: DataSplits, epochs: int, out_dir: Path,
                   workers: int, in_memory: bool = False) -> None:
    """torchvision's FashionMNIST (or, in_memory, a TensorDataset of trainstudy's tensors) + DataLoader +
    Lightning's defaults (checkpoints and progress bar off)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from torchvision import datasets as tv_datasets
    from torchvision import transforms

    module = _initial(cfg, splits, epochs)
    if in_memory:
        dataset: torch.utils.data.Dataset = torch.utils.data.TensorDataset(splits.x_train, splits.y_train)
    else:
        images = tv_datasets.FashionMNIST(cfg.data_dir, train=True)
        train_idx, _, _ = split_indices(len(images), cfg.data.val_fraction, cfg.data.split_seed)
        pixels = images.data[train_idx].float() / 255  # trainstudy's normalization: training-split mean and std
        images.transform = transforms.Compose([transforms.ToTensor(),
                                               transforms.Normalize((pixels.mean().item(),), (pixels.std().item(),))])
        dataset = torch.utils.data.Subset(images, train_idx.tolist())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.data.batch_size, shuffle=True,
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
    trainer.fit(DataLoaderModule(model, module.loss, instantiate(cfg.optim), module.scheduler_factory),
                train_dataloaders=loader)


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
    """Per round, train every variant for a warm-up epoch plus ``epochs`` timed ones.

    raw and trainstudy run together, an epoch of one next to an epoch of the other (see EpochClock): their
    ratio is the figure that matters, and machine drift then hits both alike. The DataLoader variants run before
    or after them, alternately. Everything runs in the main thread, as ``python train.py`` does (in other
    threads torch's CPU kernels behave differently). Returns the rows and the largest difference between raw's
    and trainstudy's warm-up-epoch losses (None when either did not run): 0 means both trained the same model
    on the same batches.
    """
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    splits = load_data(cfg.data, cfg.data_dir)
    timers: dict[str, list[EpochTimer]] = {name: [] for name in variants}
    losses: dict[str, list[float]] = {}  # round 0's first-epoch losses

    def timer(name: str) -> EpochTimer:
        timers[name].append(EpochTimer(device))
        return timers[name][-1]

    def together(out: Path) -> None:
        first: list[float] = []  # filled by raw's first epoch
        losses.setdefault("raw", first)
        raw = raw_epochs(timer("raw"), cfg, splits, epochs + 1, first) if "raw" in variants else None
        if "trainstudy" in variants:
            trained = run_trainstudy(timer("trainstudy"), cfg, epochs + 1, out / "trainstudy", raw)
            losses.setdefault("trainstudy", trained)
        elif raw is not None:
            for _ in range(epochs + 1):
                next(raw)

    runs = [together] if {"raw", "trainstudy"} & set(variants) else []
    if "tensors" in variants:
        runs.append(lambda out: run_dataloader(timer("tensors"), cfg, splits, epochs + 1, out / "tensors", workers,
                                               in_memory=True))
    if "dataloader" in variants:
        runs.append(lambda out: run_dataloader(timer("dataloader"), cfg, splits, epochs + 1, out / "dataloader",
                                               workers))
    for r in range(rounds):
        for run in runs[r % len(runs):] + runs[:r % len(runs)]:
            run(out_dir / case.name / f"round{r}")
    rows = [Row(case.name, name, [e for t in ts for e in t.epochs[1:]], len(splits.x_train))  # minus warm-ups
            for name, ts in timers.items()]
    agreement = None
    if losses.get("raw") and "trainstudy" in losses:
        pairs = zip(losses["raw"], losses["trainstudy"])  # raw's first epoch, trainstudy's first steps
        agreement = max(abs(a - b) for a, b in pairs)
    return rows, agreement



# ------------------------------------------------------------------------------------------ the table


def paired_ratio(r: Row, raw: Row | None) -> float | None:
    """trainstudy's: the median over its timed epochs of each one's time over raw's epoch run next to it (the
    i-th of each: see EpochClock). A pair sees the machine in one state, so drift over the process (raw's own
    epochs have ranged 0.6-1.2 s in one run on a shared 2-core machine) cancels out of each ratio. None for the
    other variants, which run before or after, not next to, raw."""
    if raw is None or r.variant != "trainstudy" or len(r.epochs) != len(raw.epochs):
        return None
    return statistics.median(a.seconds / b.seconds for a, b in zip(r.epochs, raw.epochs))


def table(rows: list[Row]) -> str:
    """Median epoch time, samples/s and ratio to raw per case and variant (and trainstudy's paired ratio)."""
    raw = {r.case: r for r in rows if r.variant == "raw"}
    lines = [f"{'case':<9} {'variant':<11} {'epoch s':>8} {'samples/s':>10} {'x raw':>6} {'paired':>6} "
             f"{'with val s':>10} {'cpu s':>6} {'peak mem':>9}"]
    for r in rows:
        ratio = f"{r.seconds / raw[r.case].seconds:.2f}" if r.case in raw else "-"
        paired = paired_ratio(r, raw.get(r.case))
        with_val = f"{r.wall:.3f}" if r.variant == "trainstudy" else ""
        lines.append(f"{r.case:<9} {r.variant:<11} {r.seconds:8.3f} {r.samples / r.seconds:10,.0f} {ratio:>6} "
                     f"{'' if paired is None else f'{paired:.2f}':>6} {with_val:>10} {r.cpu:6.2f} "
                     f"{r.peak_bytes / 2**20:7.0f} M")
    return "\n".join(lines)


def row_json(r: Row, raw: Row | None) -> dict[str, Any]:
    raw_seconds = raw.seconds if raw is not None else None
    return {"case": r.case, "variant": r.variant, "median_epoch_s": r.seconds, "median_epoch_with_val_s": r.wall,
            "samples_per_s": r.samples / r.seconds, "ratio_to_raw": r.seconds / raw_seconds if raw_seconds else None,
            "paired_ratio_to_raw": paired_ratio(r, raw),
            "peak_memory_bytes": r.peak_bytes, "train_samples": r.samples,
            "median_epoch_cpu_s": r.cpu, "epochs_s": [e.seconds for e in r.epochs],
            "epochs_with_val_s": [e.wall for e in r.epochs],
            "epochs_cpu_s": [e.cpu for e in r.epochs]}


