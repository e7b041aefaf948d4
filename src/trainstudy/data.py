"""From a `data` config to train/val/test tensors: validate, load raw arrays, split, normalize, relabel.

The split is a fixed permutation from `split_seed`, so runs that differ only in `seed` see the same
validation and test sets. The test split is the source's official test files where it has them (full MNIST and
Fashion-MNIST's t10k, CIFAR-10's test_batch), else a seeded held-out part (`test_fraction`). Normalization
statistics come from the training split alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from numbers import Real
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from trainstudy import datasets
from trainstudy.errors import UserError


@dataclass
class DataSplits:
    """Everything a run needs from its data, as CPU tensors."""

    name: str
    task: str  # "multiclass" | "binary" | "regression"
    source: str  # human-readable origin, e.g. "debian (/usr/share/datasets/fashion-mnist)"
    x_train: torch.Tensor  # float32, normalized, (N, *input_shape)
    y_train: torch.Tensor  # int64 class indices, or float32 (N, 1) for regression
    x_val: torch.Tensor
    y_val: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int | None  # None for regression
    noise_floor: float | None = None  # regression: the best possible val MSE, when known
    # evaluated once, at the end of a run; nothing selects on it (not the target, not early stopping)
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    test_source: str = ""  # "official test files" or "held out (10%)"


@dataclass(frozen=True)
class _Dataset:
    task: str
    num_classes: int | None
    sources: tuple[str, ...]


# Known without loading anything, so a config is checked before any data is read.
DATASETS: dict[str, _Dataset] = {
    "mnist": _Dataset("multiclass", 10, ("auto", "full", "bundled")),
    "fashion_mnist": _Dataset("multiclass", 10, ("auto", "full")),
    "cifar10": _Dataset("multiclass", 10, ("auto", "full")),
    "digits": _Dataset("multiclass", 10, ("auto",)),
    "regression": _Dataset("regression", None, ("auto",)),
    "diabetes": _Dataset("regression", None, ("auto",)),
}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def validate_data_cfg(cfg: Mapping) -> None:
    """Check a `data` config's values without loading any data; raise UserError on the first problem."""
    name = cfg.get("name")
    _require(name in DATASETS, f"unknown dataset {name!r}; use data=<one of {', '.join(DATASETS)}>")
    spec = DATASETS[name]

    task, positive = cfg.get("task", spec.task), cfg.get("positive_classes")
    _require(task == spec.task or (task == "binary" and positive is not None),
             f"data.task={task} does not fit {name}, whose task is {spec.task}; remove the override"
             + (" and set data.positive_classes=[...] for a binary task" if spec.num_classes else ""))
    source = cfg.get("source", "auto")
    _require(source in spec.sources, f"data.source={source} is not a source of {name}; "
             f"use data.source=<one of {', '.join(spec.sources)}>")
    val_fraction = cfg.get("val_fraction")
    _require(_is_number(val_fraction) and 0 < val_fraction < 1,
             f"data.val_fraction={val_fraction} must lie strictly between 0 and 1, e.g. data.val_fraction=0.1")
    test_fraction = cfg.get("test_fraction")
    _require(_is_number(test_fraction) and 0 < test_fraction < 1,
             f"data.test_fraction={test_fraction} must lie strictly between 0 and 1, e.g. data.test_fraction=0.1")
    _require(val_fraction + test_fraction < 1, f"data.val_fraction={val_fraction} and data.test_fraction="
             f"{test_fraction} leave nothing to train on; keep their sum under 1, e.g. 0.1 each")
    batch_size = cfg.get("batch_size")
    _require(_is_int(batch_size) and batch_size >= 1,
             f"data.batch_size={batch_size} must be a whole number >= 1, e.g. data.batch_size=128")
    _require(_is_int(cfg.get("split_seed")),
             f"data.split_seed={cfg.get('split_seed')} must be a whole number, e.g. data.split_seed=0")
    _validate_positive_classes(name, spec, positive)
    if name == "regression":
        _validate_regression(cfg)


def _validate_positive_classes(name: str, spec: _Dataset, positive: object) -> None:
    if positive is None:
        return
    _require(spec.num_classes is not None,
             f"data.positive_classes applies to classification data; {name} is a regression dataset, remove it")
    example = "e.g. data.positive_classes=[0,2,4,6,8]"
    _require(isinstance(positive, Sequence) and not isinstance(positive, str),
             f"data.positive_classes={positive} must be a list of class indices, {example}")
    _require(len(positive) > 0, f"data.positive_classes is empty; name the classes that become 1, {example}")
    classes = range(spec.num_classes)
    bad = [c for c in positive if not _is_int(c) or c not in classes]
    _require(not bad, f"data.positive_classes names {bad}, which {name} lacks: its classes are 0..{classes[-1]}")
    _require(set(positive) != set(classes), f"data.positive_classes covers every class of {name}, so no "
             f"sample would be 0; leave some out, {example}")


def _validate_regression(cfg: Mapping) -> None:
    n_samples, n_features = cfg.get("n_samples"), cfg.get("n_features")
    _require(_is_int(n_samples) and n_samples >= 10,
             f"data.n_samples={n_samples} must be a whole number >= 10, e.g. data.n_samples=2000")
    _require(_is_int(n_features) and n_features >= 1,
             f"data.n_features={n_features} must be a whole number >= 1, e.g. data.n_features=10")
    noise_std = cfg.get("noise_std")
    _require(_is_number(noise_std) and noise_std >= 0, f"data.noise_std={noise_std} must be >= 0, e.g. 0.1")
    fraction, scale = cfg.get("outlier_fraction"), cfg.get("outlier_scale")
    _require(_is_number(fraction) and 0 <= fraction < 1,
             f"data.outlier_fraction={fraction} must lie in [0, 1), e.g. data.outlier_fraction=0.05")
    _require(_is_number(scale) and scale >= 0, f"data.outlier_scale={scale} must be >= 0, e.g. 10.0")


def split_indices(n: int, val_fraction: float, split_seed: int,
                  test_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) indices of a fixed permutation: val takes its first round(n * val_fraction) rows (at
    least one), test the next round(n * test_fraction) (none when 0), train the rest. Val comes first so that
    holding a test part out leaves the validation set as it was without one."""
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    n_test = min(round(n * test_fraction), n - 1 - n_val)
    _require(n_val >= 1 and (test_fraction == 0 or n_test >= 1),
             f"only {n} sample(s): too few to split off a validation{'' if test_fraction == 0 else ' and a test'} set")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def _standardize(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scale to zero mean, unit std per channel (dim 1: image channel or tabular feature), train stats only."""
    if train.dtype == torch.uint8:
        mean, std = _byte_statistics(train)
        return tuple(_scaled(x, mean, std) for x in (train, *others))
    # fresh copies (an official test split shares the raw arrays that a sweep's next job reuses), so in-place is safe
    train, *others = (x.to(torch.float32, copy=True) for x in (train, *others))
    dims = [d for d in range(train.ndim) if d != 1]
    mean, std = train.mean(dim=dims, keepdim=True), train.std(dim=dims, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature carries nothing; leave it at 0
    return tuple(x.sub_(mean).div_(std) for x in (train, *others))


def _byte_statistics(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (unbiased) std of uint8 data, exact, from a histogram of its 256 values.

    One counting pass instead of a float copy and two reductions: a cached Fashion-MNIST load aims at 0.3 s.
    """
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].flatten(), minlength=256).double().numpy()
        n = counts.sum()
        mean = counts @ values / n
        var = counts @ (values - mean) ** 2 / max(n - 1, 1)
        means.append(mean)
        stds.append(np.sqrt(var) if var > 0 else 1.0)  # a constant channel carries nothing; leave it at 0
    return np.array(means), np.array(stds)


def _scaled(x: torch.Tensor, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(x - mean) / std per channel, as float32, in two numpy passes (torch's uint8-to-float path is ~4x slower
    here, partly the page faults of a fresh tensor that numpy's large-array allocation avoids)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = np.subtract(x.numpy(), mean.reshape(shape).astype(np.float32), dtype=np.float32)
    out /= std.reshape(shape).astype(np.float32)
    return torch.from_numpy(out)


def _rows(array: np.ndarray, index: torch.Tensor) -> torch.Tensor:
    """array[index] along the first axis (numpy's take: ~4x faster than indexing a uint8 tensor here)."""
    return torch.from_numpy(np.take(array, index.numpy(), axis=0))


def _with_outliers(y: torch.Tensor, fraction: float, scale: float, seed: int) -> torch.Tensor:
    """Add scale * N(0, 1) to a random `fraction` of the targets (training split only)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(y), generator=generator)[: round(fraction * len(y))]
    y = y.clone()
    y[rows] += scale * torch.randn(len(rows), *y.shape[1:], generator=generator)
    return y


# The last data a process loaded, kept for its next run: a sweep's jobs under Hydra's basic launcher share one
# process, and splitting and normalizing the same raw arrays the same way gives the same tensors. Runs only
# read them (a run that moves them to its device replaces its own DataSplits' fields, not these).
_last: dict[str, tuple[datasets.RawData, DataSplits]] = {}


def load_data(cfg: Mapping, data_dir: str | Path) -> DataSplits:
    """Load the dataset `cfg` names, split off validation (and test), normalize, and relabel for a binary task."""
    validate_data_cfg(cfg)
    name, seed = cfg["name"], cfg["split_seed"]
    if name == "regression":
        x, _, y = datasets.synthetic_regression(cfg["n_samples"], cfg["n_features"], cfg["noise_std"], seed)
        raw = datasets.RawData(x, y, source="synthetic")
    else:
        raw = datasets.LOADERS[name](cfg.get("source", "auto"), Path(data_dir))
    key = json.dumps(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg),
                     sort_keys=True, default=str)
    if key in _last and all(a is b or (a is not None and b is not None and np.array_equal(a, b)) for a, b in
                            zip((raw.x, raw.y, raw.x_test, raw.y_test),
                                (_last[key][0].x, _last[key][0].y, _last[key][0].x_test, _last[key][0].y_test))):
        return replace(_last[key][1], source=raw.source)
    splits = _split(cfg, raw)
    _last.clear()
    _last[key] = (raw, splits)
    return replace(splits)


def forget_last_load() -> None:
    """Drop the data kept for the next run (the benchmark times loads from the disk cache with it)."""
    _last.clear()


def _split(cfg: Mapping, raw: datasets.RawData) -> DataSplits:
    name, spec, seed = cfg["name"], DATASETS[cfg["name"]], cfg["split_seed"]
    noise_floor = float(cfg["noise_std"]) ** 2 if name == "regression" else None
    official = raw.x_test is not None
    train, val, test = split_indices(len(raw.x), cfg["val_fraction"], seed, 0.0 if official else cfg["test_fraction"])
    x_test_raw = torch.from_numpy(raw.x_test) if official else _rows(raw.x, test)
    y_test = torch.from_numpy(raw.y_test) if official else _rows(raw.y, test)
    x_train, x_val, x_test = _standardize(_rows(raw.x, train), _rows(raw.x, val), x_test_raw)
    y_train, y_val = _rows(raw.y, train), _rows(raw.y, val)
    test_source = "official test files" if official else f"held out, {cfg['test_fraction']:.0%}"

    task, num_classes = spec.task, spec.num_classes
    if task == "regression":
        y_train, y_val, y_test = y_train[:, None], y_val[:, None], y_test[:, None]
        if name == "diabetes":
            y_train, y_val, y_test = _standardize(y_train, y_val, y_test)
        elif cfg["outlier_fraction"] > 0:  # val and test stay clean, so noise_floor remains the best MSE
            y_train = _with_outliers(y_train, cfg["outlier_fraction"], cfg["outlier_scale"], seed)
    else:
        for part, labels in (("", raw.y), (" test", raw.y_test if official else raw.y[:0])):
            y = torch.from_numpy(labels)
            bad = y[(y < 0) | (y >= num_classes)].unique().tolist()
            _require(not bad, f"{name}{part} from {raw.source} has labels {bad[:5]} outside 0..{num_classes - 1}; "
                     "its files are damaged, delete and re-download them")
        if cfg.get("positive_classes") is not None:
            positive = torch.tensor(list(cfg["positive_classes"]))
            y_train, y_val, y_test = (torch.isin(y, positive).long() for y in (y_train, y_val, y_test))
            task, num_classes = "binary", 2

    return DataSplits(name=name, task=task, source=raw.source, x_train=x_train, y_train=y_train, x_val=x_val,
                      y_val=y_val, input_shape=tuple(x_train.shape[1:]), num_classes=num_classes,
                      noise_floor=noise_floor, x_test=x_test, y_test=y_test, test_source=test_source)
