"""What a sweep varies and how its runs are named; light (no torch), so the report starts fast."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf

# Overrides that never name a run: where things go, not what is studied.
NOT_IN_RUN_NAMES = ("hydra/", "hydra.", "data_dir", "paths.", "progress_bar")
# The longest file or folder name ext4, xfs, btrfs and most others allow, in bytes (NAME_MAX).
MAX_NAME_BYTES = 255


def sweep_plan(sweep_dir: Path) -> dict[str, Override] | None:
    """A sweep's overrides by key, read from multirun.yaml: a preset's ``hydra.sweeper.params``, then the
    command line's, which wins (as in Hydra's basic sweeper)."""
    try:
        hydra_cfg = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
        task = list(hydra_cfg.overrides.task)
    except (OSError, AttributeError):
        return None
    params = hydra_cfg.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + task
    return {o.get_key_element(): o for o in OverridesParser.create().parse_overrides(lines)}


def sweep_keys(sweep_dir: Path) -> set[str] | None:
    """The keys a sweep varies (its sweep overrides, from the command line or a preset)."""
    plan = sweep_plan(sweep_dir)
    return None if plan is None else {key for key, o in plan.items() if o.is_sweep_override()}


def run_name(overrides: list[str], varied: set[str] | None) -> str:
    """A job's readable name: its overrides of the keys the sweep varies (``init=kaiming_normal,seed=1``)."""
    kept = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith(NOT_IN_RUN_NAMES) or (varied is not None and key not in varied):
            continue
        kept.append(item.replace("/", "_"))
    return ",".join(sorted(kept))


def folder_name(name: str, suffix: str = "") -> str:
    """``name + suffix`` as a file name: when it passes MAX_NAME_BYTES, a prefix of ``name`` and 8 hex digits of
    its sha1 (``init=...,optim.lr=0.1-3f2a9c1e``), so the same overrides always give the same folder and
    different ones different folders. The full overrides stay in the job's metrics.json."""
    if len((name + suffix).encode()) <= MAX_NAME_BYTES:
        return name + suffix
    digest = "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    room = MAX_NAME_BYTES - len((digest + suffix).encode())
    prefix = name.encode()[:room].decode(errors="ignore")  # never half a UTF-8 character
    return prefix + digest + suffix
