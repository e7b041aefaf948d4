"""Interrupted runs resume: ``python train.py resume=<run folder>`` continues where the run stopped.

A run keeps ``checkpoints/last.ckpt`` up to date every ``checkpoint.every_n_steps`` steps, when it is
interrupted (Ctrl-C, or SIGTERM as a SLURM pre-emption sends) and at its end. Each save is atomic and comes
right after the convergence tracker has written its pending losses, so the checkpoint and the TensorBoard
events agree on the last step. Resuming recomposes the run's own overrides (only the training length may
change), loads the checkpoint with ``weights_only=True``, and continues the same TensorBoard run: events a
hard kill left past the checkpoint are purged, so there is one curve whose steps go on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from trainstudy.errors import UserError
from trainstudy.results import cannot_write

CHECKPOINT = Path("checkpoints") / "last.ckpt"
# What may change when a run is resumed: how long it trains. Anything else would make it another run.
LENGTH_KEYS = ("trainer.max_steps", "trainer.max_epochs")
# Not part of what a run *is*: where it is written, how it is shown, how long it goes, whether it resumes.
NOT_IN_FINGERPRINT = ("paths", "resume", "progress_bar", "data_dir", "checkpoint")
# What a resumed run continues from: the weights and the optimizer's state (momentum, Adam's moments).
CHECKSUMMED = ("state_dict", "optimizer_states")


def fingerprint(cfg: DictConfig) -> str:
    """A hash of everything that decides a run's numbers (not its folders or its length)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IN_FINGERPRINT:
        plain.pop(key, None)
    for key in LENGTH_KEYS:
        plain["trainer"].pop(key.split(".")[1], None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _crc32c_digest() -> Any | None:
    """A CRC-32C accumulator with sha256's update/hexdigest, where google-crc32c's C code is installed."""
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.Checksum() if google_crc32c.implementation == "c" else None  # its Python one is slow


def tensor_checksum(checkpoint: dict[str, Any], algorithm: str = "crc32c") -> tuple[str, str]:
    """A checksum over the checkpoint's weights and optimizer state: every tensor's name, dtype, shape and bytes,
    and the plain values beside them (lr, betas). A flipped bit anywhere in them changes it.

    Returns the field it goes in and its hex value: ``tensor_crc32c`` (CRC-32C) where google-crc32c's C code is
    there, else ``tensor_sha256`` (what checkpoints carried before, and what ``algorithm="sha256"`` asks for). For
    the 1.6 MB checkpoint of a 784-256-10 MLP with momentum: 0.3 ms against 1.4 ms (scripts/io_cost.py). Both catch
    accidental damage (a torn write, a flipped bit); neither is a signature against tampering."""
    digest = _crc32c_digest() if algorithm == "crc32c" else None
    if digest is None:
        algorithm, digest = "sha256", hashlib.sha256()

    def add(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().reshape(-1).cpu().contiguous()
            digest.update(f"{name}:{flat.dtype}:{tuple(value.shape)};".encode())
            digest.update(flat.view(torch.uint8).numpy())
        elif isinstance(value, dict):
            for key, item in value.items():
                add(f"{name}/{key}", item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                add(f"{name}/{i}", item)
        else:
            digest.update(f"{name}={value!r};".encode())

    for key in CHECKSUMMED:
        add(key, checkpoint.get(key))
    hexdigest = digest.hexdigest()
    return f"tensor_{algorithm}", hexdigest.decode() if isinstance(hexdigest, bytes) else hexdigest


def checksum_matches(payload: dict[str, Any]) -> bool:
    """Whether a loaded checkpoint's tensors match the checksum written with them: CRC-32C, or sha256 in one
    written before CRC-32C was; True for one written before checksums were (it is read as it always was)."""
    info = payload.get("trainstudy", {})
    for algorithm in ("crc32c", "sha256"):
        if (written := info.get(f"tensor_{algorithm}")) is not None:
            field, value = tensor_checksum(payload, algorithm)
            if field != f"tensor_{algorithm}":  # a CRC-32C checkpoint read where only sha256 can be computed
                return True
            return value == written
    return True


class Checkpointing(Callback):
    """Saves ``last.ckpt`` every ``every_n_steps`` steps, on interruption and at the end, atomically."""

    def __init__(self, path: Path, every_n_steps: int, before_save: Callable[[L.Trainer], Any],
                 info: dict[str, Any]):
        self.path, self.every, self.before_save, self.info = path, every_n_steps, before_save, info

    failed = False  # a save failed: see on_exception

    def save(self, trainer: L.Trainer) -> None:
        self.before_save(trainer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".ckpt.tmp")
        try:
            trainer.save_checkpoint(tmp)  # every rank takes part (a barrier); rank 0 alone writes the file
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
        except OSError as e:  # a full disk: the last complete checkpoint stays as it was, the half one goes
            tmp.unlink(missing_ok=True)
            self.failed = True
            raise UserError(cannot_write(self.path.parent, e)
                            + (f"; {self.path} holds the run up to its last checkpoint" if self.path.exists()
                               else "")) from None

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        field, value = tensor_checksum(checkpoint)
        checkpoint["trainstudy"] = {**self.info, field: value}

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self.save(trainer)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if not self.failed:  # after a failed save (the disk is full) a second try would only fail again
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.save(trainer)


def check_length(run_dir: Path, extra: list[str]) -> None:
    """Refuse a trainer.max_steps below the steps the run has done: it would record a length it never had."""
    given = [a.split("=", 1)[1] for a in extra if a.split("=", 1)[0].lstrip("+~") == "trainer.max_steps"]
    if not given or not given[-1].lstrip("-").isdigit() or int(given[-1]) == -1:
        return  # no new length, no limit, or not a number (validate says so)
    done = read_checkpoint_info(run_dir)["global_step"]
    if int(given[-1]) < done:
        raise UserError(f"resume={run_dir} has done {done} steps already, more than trainer.max_steps={given[-1]}; "
                        f"give trainer.max_steps={done} or more (or leave it out)")


def read_checkpoint_info(run_dir: Path) -> dict[str, Any]:
    """What a run's checkpoint says of itself (fingerprint, TensorBoard folder, step), once its weights and
    optimizer state are checked against the checksum written with them."""
    ckpt = run_dir / CHECKPOINT
    try:
        payload = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise UserError(f"resume={run_dir} has no {CHECKPOINT}: the run saved none yet "
                        "(it stopped before its first checkpoint); start it again without resume=") from None
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same problem for the user
        raise UserError(f"cannot read {ckpt} ({type(e).__name__}); it is damaged: start the run again") from None
    info = payload.get("trainstudy", {})
    if not checksum_matches(payload):
        raise UserError(f"checkpoint {ckpt} is damaged (checksum mismatch); its weights can't be trusted: "
                        "start the run again without resume=")
    return {**info, "global_step": payload["global_step"]}


def resume_argv(argv: list[str]) -> list[str]:
    """Turn ``resume=<run folder> [trainer.max_steps=N]`` into the run's own overrides in its own folder.

    Refuses (UserError) a folder that is not a run and overrides other than the training length.
    """
    given = [a for a in argv if a.startswith("resume=")]
    if not given:
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise UserError("resume= continues one run; resume each job of a sweep by its own folder")
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser().resolve()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise UserError(f"resume={run_dir} is not a run folder (no .hydra/overrides.yaml); "
                        "give the folder a run printed at its start, e.g. resume=outputs/runs/<date>/<time>")
    flags = [a for a in argv if a.startswith("-")]
    extra = [a for a in argv if not a.startswith("-") and not a.startswith("resume=")]
    recorded = yaml.safe_load(overrides_file.read_text()) or []
    # Accepted besides the length: the run's own overrides restated, and where Hydra writes this process's
    # logs, as Lightning's DDP adds them when it relaunches this (already expanded) command line for rank 1
    refused = [a for a in extra if a.split("=", 1)[0].lstrip("+~") not in LENGTH_KEYS and a not in recorded
               and not (a.startswith("hydra.") and not a.startswith("hydra.run.dir="))
               and not (a.startswith("hydra.run.dir=") and _same_folder(a.split("=", 1)[1], run_dir))]
    if refused:
        raise UserError(f"resume continues a run as it was configured; only {' / '.join(LENGTH_KEYS)} may change "
                        f"(got {' '.join(refused)})")
    check_length(run_dir, extra)
    extra_keys = {a.split("=", 1)[0].lstrip("+~") for a in extra}
    original = [o for o in recorded
                if not o.startswith(("resume=", "hydra.run.dir=")) and o.split("=", 1)[0] not in extra_keys]
    return [*flags, *original, *extra, f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


def _same_folder(value: str, folder: Path) -> bool:
    return Path(value.strip("'\"")).expanduser().resolve() == folder


def keep_csv_rows(logger: Any, up_to_step: int) -> None:
    """Give a resumed run's CSVLogger back the rows it wrote up to the checkpoint's step.

    Lightning's CSV writer starts its ``metrics.csv`` afresh; rows past the checkpoint (a hard kill's) are
    dropped, as TensorBoard's ``purge_step`` drops its events, so the file holds one run whose steps go on.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with warnings.catch_warnings():  # its warning that the earlier rows will be lost: they are given back here
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        logger.experiment  # noqa: B018 - the writer starts its file here
    for row in rows:
        step = int(row.pop("step"))
        if step <= up_to_step:
            logger.log_metrics({k: _number(v) for k, v in row.items() if v != ""}, step=step)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def end_logged_at(run_dir: Path) -> int | None:
    """The step at which a run logged its end (conv/*, diag/*), when its metrics.json says it finished.

    A finished run resumed with nothing left to train ends at that same step: its end is not logged again.
    """
    try:
        result = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return result.get("global_step") if result.get("status") in ("ok", "diverged") else None
