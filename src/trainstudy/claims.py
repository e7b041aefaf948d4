"""A run or sweep folder belongs to one process at a time: claimed with a lock that dies with its holder.

Two runs started in the same second would otherwise share ``outputs/runs/<date>/<time>``: one metrics.json
survives, train.log and the TensorBoard run mix both. A folder named by the default pattern is taken fresh
(an exclusive mkdir; ``_2``, ``_3`` ... when that second's folder exists); a folder the user names is locked,
and a second claimant is told who holds it. The lock is ``flock`` on ``.trainstudy.lock`` inside the folder:
released by the kernel when the holder exits, however it exits (kill -9 too), so no lock is ever stale.
"""

from __future__ import annotations

import atexit
import fcntl
import os
from pathlib import Path

from omegaconf import OmegaConf

from trainstudy import interrupts
from trainstudy.errors import UserError

LOCK = ".trainstudy.lock"
_held: dict[Path, int] = {}  # folder -> the open lock file's descriptor, kept for the process's lifetime


def claim(folder: Path) -> None:
    """Lock ``folder`` (created if need be) for this process; UserError when another live process holds it."""
    folder = folder.resolve()
    if folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UserError(f"{folder} is in use by another run (pid {holder}); wait for it to end, or choose "
                        "another folder (hydra.run.dir=... / hydra.sweep.dir=...)") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    if not _held:
        atexit.register(_release_unused)
        interrupts.on_exit(_release_unused)  # a start-up signal leaves without the atexit functions
    _held[folder] = fd


def _release_unused() -> None:
    """At exit: a claimed folder that holds nothing but the lock (the run was refused before Hydra wrote to
    it) goes, so that a mistake leaves no empty run folder behind."""
    for folder, fd in _held.items():
        try:
            if [p.name for p in folder.iterdir()] == [LOCK]:
                (folder / LOCK).unlink()
                folder.rmdir()
        except OSError:
            pass
        os.close(fd)
    _held.clear()


def fresh_folder(pattern: str) -> str:
    """The first of ``pattern``, ``pattern_2``, ``pattern_3`` ... that this process creates itself, claimed.

    Registered as the resolver ``trainstudy.fresh`` with a cache, as Hydra's ``now`` is: a run (and every
    job of a sweep, which gets its master config's cache) resolves it once.
    """
    for n in range(1, 10_000):
        candidate = Path(pattern if n == 1 else f"{pattern}_{n}")
        candidate.parent.mkdir(parents=True, exist_ok=True)
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        claim(candidate)
        return str(candidate)
    raise UserError(f"{pattern}: 10,000 folders of that name exist; clean up outputs/")


def given(argv: list[str], key: str, default: str | None = None) -> str | None:
    """The value the command line gives ``key`` (its last ``key=value``, as Hydra takes it), else ``default``."""
    return next((a[len(key) + 1:] for a in reversed(argv) if a.startswith(f"{key}=")), default)


def claim_named(argv: list[str]) -> None:
    """Before Hydra writes anything: lock the folder a command line names (hydra.run.dir, or hydra.sweep.dir
    with -m). Rank 1 of a DDP run, which Lightning starts with its rank 0's folder, claims nothing."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    sweep = "-m" in argv or "--multirun" in argv
    value = given(argv, "hydra.sweep.dir" if sweep else "hydra.run.dir")
    value = value.strip("'\"") if value else value
    if not value or "${" in value:  # an interpolation is Hydra's to resolve
        return
    folder = Path(value).expanduser()
    if sweep and (folder / "multirun.yaml").exists() and given(argv, "hydra/launcher", "basic") != "vectorized":
        # the basic and joblib launchers would write over its job folders and leave the rest as they were
        raise UserError(f"hydra.sweep.dir={value} holds an earlier sweep; give a new folder (or continue that "
                        "sweep with hydra/launcher=vectorized, which skips its finished jobs)")
    claim(folder)


OmegaConf.register_new_resolver("trainstudy.fresh", fresh_folder, use_cache=True, replace=True)
