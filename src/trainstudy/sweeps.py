"""What a sweep varies and how its runs are named; light (no torch), so the report starts fast."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

# Overrides that never name a run: where things go, not what is studied.
NOT_IN_RUN_NAMES = ("hydra/", "hydra.", "data_dir", "paths.", "progress_bar")
# The longest file or folder name ext4, xfs, btrfs and most others allow, in bytes (NAME_MAX).
MAX_NAME_BYTES = 255


def sweep_plan(sweep_dir: Path) -> dict[str, Override] | None:
    """A sweep's overrides by key, read from multirun.yaml: a preset's ``hydra.sweeper.params``, then the
    command line's, which wins (as in Hydra's basic sweeper)."""
    path = sweep_dir / "multirun.yaml"
    try:
        hydra_cfg = OmegaConf.load(path).hydra
        task = [str(o) for o in hydra_cfg.overrides.task]
        params = hydra_cfg.sweeper.get("params") or {}
        lines = [f"{key}={value}" for key, value in params.items()] + task
        return {o.get_key_element(): o for o in OverridesParser.create().parse_overrides(lines)}
    except FileNotFoundError:
        return None
    # A hand-edited or cut-short file can fail in many ways (YAML syntax, a list where a mapping goes, an
    # override Hydra can't parse): each means the plan is unknown, not that the sweep can't be reported.
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException, HydraException, AttributeError,
            TypeError, ValueError) as e:
        log.warning("cannot read %s (%s); the planned jobs are unknown", path, " ".join(str(e).split())[:120])
        return None


def sweep_keys(sweep_dir: Path) -> set[str] | None:
    """The keys a sweep varies (its sweep overrides, from the command line or a preset)."""
    plan = sweep_plan(sweep_dir)
    return None if plan is None else {key.lstrip("+~") for key, o in plan.items() if o.is_sweep_override()}


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


def recorded_overrides(overrides: list[str]) -> list[str]:
    """A job's overrides as its records keep them: ``resume=`` says how a run was continued, not what it is
    (the report groups jobs, and the launcher matches finished ones, by these)."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume"]
