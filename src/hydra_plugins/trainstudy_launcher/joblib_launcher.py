"""``hydra/launcher=joblib``: hydra-joblib-launcher's launcher (loky worker processes), stoppable by a signal.
Every ``hydra.launcher.*`` key is the stock launcher's; the option's name is taken over (see JoblibOption).

The stock launcher leaves Ctrl-C and SIGTERM to joblib, which either dies and leaves its workers training
(orphans), or kills them before they save anything. Here the first SIGINT or SIGTERM that reaches the sweep's
process, or its whole process group:

- marks the sweep as stopping (a file in its folder): a worker starts none of the jobs still queued;
- is passed on to every worker, whose running job stops as a plain run does (checkpoint, then metrics.json
  with status "interrupted");
- lets joblib collect every job, so the sweep ends as usual: the lines that continue it, the summary table,
  then exit status 128 + the signal, no process left behind.

Workers are found as the sweep process's children in /proc (Linux); elsewhere only a signal to the whole
process group (Ctrl-C at a terminal) reaches them.
"""
# No ``from __future__ import annotations`` here: Hydra's plugin scan executes this module outside sys.modules,
# where dataclasses cannot resolve string annotations.

import json
import logging
import os
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    setup_globals,
)
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from trainstudy import interrupts

log = logging.getLogger(__name__)

STOPPING = ".stopping"  # in the sweep folder while a signal stops the sweep: workers start no queued job
SHOWN_COMMANDS = 10  # lines that say how to continue, at most


@dataclass
class StoppableJoblibLauncherConf(JobLibLauncherConf):
    _target_: str = "hydra_plugins.trainstudy_launcher.joblib_launcher.StoppableJoblibLauncher"


class JoblibOption(SearchPathPlugin):
    """Points ``hydra/launcher=joblib`` at StoppableJoblibLauncher. Storing the option at import would not do:
    Hydra imports every plugin module in an order that depends on how each is installed, and the stock one's
    import stores its own. A yaml of that name in conf/ would be merged into the stock schema (deprecated
    since Hydra 1.1). Hydra calls this after every plugin is imported and before it composes a config."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        ConfigStore.instance().store(group="hydra/launcher", name="joblib", node=StoppableJoblibLauncherConf,
                                     provider="trainstudy")


class StoppableJoblibLauncher(JoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
        from joblib import Parallel, delayed

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        stop_file = sweep_dir / STOPPING
        if interrupts.first() is not None:  # a later batch of a sweep already stopped
            return [_not_started(o) for o in job_overrides]
        stop_file.unlink(missing_ok=True)  # left by a sweep into this folder that was killed outright

        joblib_cfg = {**self.joblib, "backend": "loky"}  # Hydra's jobs cannot share one process's threads
        process_joblib_cfg(joblib_cfg)
        log.info("Joblib.Parallel(%s) is launching %d jobs", ",".join(f"{k}={v}" for k, v in joblib_cfg.items()),
                 len(job_overrides))
        log.info("Launching jobs, sweep output dir : %s", sweep_dir)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))

        # from now on a signal only stops the jobs; this process goes on to collect them and sum the sweep up
        interrupts.install(partial(_stop_sweep, stop_file))
        jobs = (delayed(_run_job)(stop_file, initial_job_idx + idx, overrides, self.hydra_context, self.config,
                                  self.task_function, Singleton.get_state())
                for idx, overrides in enumerate(job_overrides))
        try:
            runs = list(Parallel(**joblib_cfg)(jobs))
        except Exception:  # a worker killed before it could handle the signal: joblib gives up on every job
            if interrupts.first() is None:
                raise
            runs = [_not_started(o) for o in job_overrides]
        interrupts.install(interrupts.note)
        if interrupts.first() is not None:
            stop_file.unlink(missing_ok=True)
            _say_how_to_continue(sweep_dir, job_overrides, interrupts.first())
        return runs


def _stop_sweep(stop_file: Path, sig: signal.Signals) -> None:
    """The sweep process's answer to the first signal: no queued job starts, the running ones stop."""
    stop_file.write_text(sig.name)  # before the workers hear of it, so none picks up a queued job after
    log.warning("%s: stopping the sweep; running jobs save a checkpoint, the others do not start", sig.name)
    for pid in _children():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _children() -> list[int]:
    """This process's child processes (loky's workers, and its resource tracker, which ignores signals)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ")"
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            found.append(int(stat.parent.name))
    return found


def _run_job(stop_file: Path, idx: int, overrides: Sequence[str], *args: Any) -> JobReturn:
    """One job, in a worker: not started once the sweep is stopping; stopped cleanly by a signal."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    interrupts.install(interrupts.note)  # between jobs a signal is noted: this worker starts no other job
    if interrupts.first() is not None or stop_file.exists():
        return _not_started(overrides)
    try:
        with interrupts.during(interrupts.exit_now):
            ret = execute_job(idx, overrides, *args)
    except SystemExit:  # how a job ends that a signal stopped (its record written, or nothing started yet)
        if interrupts.first() is None:
            raise
        return _not_started(overrides)
    if ret.status == JobStatus.FAILED and interrupts.first() is not None:  # the signal's SystemExit, turned
        return _not_started(overrides)  # into another error by the code it landed in (Hydra caught that one)
    return ret


def _not_started(overrides: Sequence[str]) -> JobReturn:
    """What a job the signal stopped returns (COMPLETED: Hydra's sweeper re-raises a FAILED job's error);
    its folder, where it has one, tells what it did."""
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)


def _say_how_to_continue(sweep_dir: Path, job_overrides: Sequence[Sequence[str]], signal_name: str) -> None:
    """One command per job left to do: ``resume=`` for a job stopped with a checkpoint, the job's own overrides
    for one that had not begun to train."""
    from trainstudy.paths import shown

    records: dict[tuple[str, ...], tuple[str, Path]] = {}
    for path in sweep_dir.glob("*/metrics.json"):
        try:
            result = json.loads(path.read_text())
            records[tuple(result["overrides"])] = (result["status"], path.parent)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    stopped, not_started = [], []
    for overrides in job_overrides:
        task = tuple(o for o in overrides if not o.startswith(("hydra.", "hydra/")))
        status, folder = records.get(task, (None, None))
        if status == "interrupted":
            stopped.append(f"python train.py resume={shown(folder)}")
        elif status is None:
            not_started.append("python train.py " + " ".join(shlex.quote(o) for o in task))
    commands = stopped + not_started
    more = f"\n  ... and {len(commands) - SHOWN_COMMANDS} more" if len(commands) > SHOWN_COMMANDS else ""
    log.warning("sweep interrupted (%s): %d job%s stopped with a checkpoint, %d not started%s\n%s%s", signal_name,
                len(stopped), "" if len(stopped) == 1 else "s", len(not_started),
                "; to continue:" if commands else "", "\n".join(f"  {c}" for c in commands[:SHOWN_COMMANDS]), more)
