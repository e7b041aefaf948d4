"""The boundary between Hydra and ``train``: run folders, run names, one-line errors, sweep summaries."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from trainstudy.targets import best_key
from trainstudy.errors import (
    EXIT_USER_ERROR,
    UserError,
    install_hydra_one_line_errors,
    report_user_errors,
)
from trainstudy.paths import shown
from trainstudy.resume import recorded_overrides, resume_argv
from trainstudy.schema import check_argv
from trainstudy.sweeps import run_name, sweep_keys
from trainstudy.train import RunInterrupted, train, write_json

log = logging.getLogger("trainstudy")


def job_paths(cfg: DictConfig) -> None:
    """Fill ``paths`` from Hydra: a run's tb/ is its own; a sweep's jobs share <sweep>/tb/<run name>."""
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    tb_dir = output_dir / "tb"
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hc.sweep.dir)
        name = run_name(list(hc.overrides.task), sweep_keys(sweep_dir)) or f"job{hc.job.num}"
        tb_dir = sweep_dir / "tb" / name
        if tb_dir.exists():  # the same overrides twice in one sweep (seed=0,0): still two runs
            tb_dir = tb_dir.with_name(f"{name}~{hc.job.num}")
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.tb_dir = str(tb_dir)
        cfg.paths.multirun = hc.mode == RunMode.MULTIRUN
        cfg.paths.overrides = recorded_overrides(list(hc.overrides.task))


def seconds(value: float) -> str:
    """Seconds with the digits that mean something: 0.043 s, 3.1 s, 142 s (never 0.0 s)."""
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"


def best_text(result: dict[str, Any]) -> str:
    """The target metric's best value, named: ``best val/mse 0.0525`` (empty when there is none)."""
    metric = result["target"]["metric"]
    best = result["metrics"].get(best_key(metric))
    return f"best {metric} {best:.4g}" if best is not None else ""


def end_line(result: dict[str, Any]) -> str:
    """One line: reached / not reached / diverged, the target metric's best, where the logs are."""
    m, target = result["metrics"], result["target"]
    if m["conv/diverged"]:
        head = f"diverged at step {m['conv/diverged_step']}"
    elif m["conv/reached"]:
        head = (f"reached {target['metric']} {target['value']:g} at step {m['conv/steps_to_target']} "
                f"({seconds(m['conv/time_to_target_s'])} s)")
    else:
        head = f"did not reach {target['metric']} {target['value']:g} in {m['conv/steps']} steps"
    parts = [head, best_text(result), f"logs: {shown(result['run_dir'])}"]
    if result.get("tensorboard", True):
        parts.append(f"tensorboard --logdir {shown(result['tb_dir'])}")
    return " · ".join(p for p in parts if p)


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """What ``python train.py`` does for one job. A user's mistake ends in one line, never a traceback.

    In a sweep, a job that fails is recorded (metrics.json with status "failed" and the reason) and the
    sweep goes on; the summary at the end says which failed and sets the exit status.
    """
    job_paths(cfg)
    try:
        result = train(cfg)
    except UserError as e:
        if not cfg.paths.multirun:
            log.error("error: %s", e)
            if not cfg.get("resume"):
                discard_unstarted(Path(cfg.paths.output_dir))
            sys.exit(EXIT_USER_ERROR)
        return _record_failure(cfg, str(e))
    except RunInterrupted as e:  # the process is being stopped: a sweep stops with it
        log.warning("%s", e)
        sys.exit(128 + getattr(signal, e.signal_name))
    except Exception as e:  # noqa: BLE001 - a sweep never loses its other jobs to one job's crash
        if not cfg.paths.multirun:
            raise
        log.exception("job failed")
        return _record_failure(cfg, reason(e))
    log.info(end_line(result))
    return result


def discard_unstarted(run_dir: Path) -> None:
    """Remove the folder Hydra made for a run refused before it began (its .hydra/ and log, nothing else):
    the report would count it as a run that died."""
    entries = list(run_dir.iterdir()) if run_dir.is_dir() and run_dir.resolve() != Path.cwd().resolve() else []
    if entries and all(p.name == ".hydra" or p.suffix == ".log" for p in entries):
        shutil.rmtree(run_dir, ignore_errors=True)


def reason(e: BaseException) -> str:
    """An error's one-line reason: its root cause (instantiate wraps errors in InstantiationException)."""
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _record_failure(cfg: DictConfig, reason: str) -> dict[str, Any]:
    log.error("job failed: %s", reason)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    overrides = recorded_overrides(list(HydraConfig.get().overrides.task))
    result = {"status": "failed", "error": reason, "overrides": overrides}
    write_json(out / "metrics.json", result)
    return result


class SweepSummary(Callback):
    """At the end of a sweep: a short table of its jobs and the command that opens TensorBoard on it."""

    failed = False

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        for path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime):
            try:
                result = json.loads(path.read_text())
                rows.append(f"  {job_name(result, path.parent.name):<48} {summary_row(result)}")
                SweepSummary.failed |= result.get("status") == "failed"
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
                rows.append(f"  {path.parent.name:<48} {'?':<11} unreadable metrics.json: {e}")
                SweepSummary.failed = True
        jobs = f"{len(rows)} job" + ("" if len(rows) == 1 else "s")
        log.info("sweep %s: %s\n%s\ntensorboard --logdir %s", shown(sweep_dir), jobs, "\n".join(rows),
                 shown(sweep_dir / "tb"))


def job_name(result: dict[str, Any], folder: str) -> str:
    """A job as the sweep's TensorBoard names it (its varied overrides), else its folder number."""
    tb = result.get("tb_dir")
    return Path(tb).name if tb else folder


def summary_row(result: dict[str, Any]) -> str:
    """A job's status and headline numbers in the end-of-sweep table."""
    status = result.get("status", "?")
    if status == "failed":
        return f"{status:<11} {result.get('error', '')}"
    m = result.get("metrics") or {}
    steps = m.get("conv/steps_to_target")
    return " ".join(p for p in (f"{status:<11}", f"steps to target {steps if steps is not None else 'not reached'}",
                                best_text(result) if "target" in result else "") if p)


def command_line(argv: list[str]) -> list[str]:
    """Before Hydra starts: one-line errors for its own composition, and ``resume=`` expanded to the run's overrides."""
    install_hydra_one_line_errors()
    return report_user_errors(lambda: resume_argv(check_argv(argv)))()


def exit_status() -> int:
    """Non-zero when a job of the sweep this process ran failed."""
    return 1 if SweepSummary.failed else 0
