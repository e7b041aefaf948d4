"""``python train.py -m hydra/launcher=vectorized ...``: the jobs of a sweep that can share one batched
training run as one stacked model (trainstudy.vectorized); every other job runs as Hydra's basic launcher
would run it. Either way each job leaves its folder (with .hydra/), metrics.json and TensorBoard run.

Jobs share a group when they agree on data, model, optimizer (lr included), trainer and the validation and
logging intervals, and their models have the same number of outputs; they may differ in seed, init, loss,
target and diagnostics. A group that fails as a whole (out of memory, say) runs its jobs one by one.
Re-running a sweep into its own folder (``hydra.sweep.dir=<sweep>``) skips the jobs whose metrics.json says
they finished (``hydra.launcher.skip_done=false`` trains them again).
"""
# No ``from __future__ import annotations`` here: Hydra's plugin scan executes this module outside sys.modules,
# where dataclasses cannot resolve string annotations.

import copy
import json
import logging
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# trainstudy (and with it Lightning) is imported where a launch needs it, not here: Hydra imports every plugin
# at each start, whichever launcher it runs.
log = logging.getLogger(__name__)

DONE = ("ok", "diverged")


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.trainstudy_launcher.vectorized_launcher.VectorizedLauncher"
    # at most this many jobs in one group (memory: each member's weights, gradients and optimizer state)
    max_members: int = 64
    # a job whose folder already holds a finished metrics.json is not trained again
    skip_done: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="trainstudy")


@dataclass
class Job:
    idx: int
    overrides: list[str]
    config: DictConfig  # the job's whole config, hydra included, as run_job takes it
    cfg: DictConfig     # the task's config (no hydra), as the task function gets it


class VectorizedLauncher(Launcher):
    def __init__(self, max_members: int = 64, skip_done: bool = True) -> None:
        self.max_members, self.skip_done = max_members, skip_done
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from trainstudy.vectorized import group_key

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [self._job(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        groups: dict[str, list[Job]] = {}
        units: list[list[Job]] = []  # in the order of their first job: a group, or one job alone
        for job in jobs:
            with _as_job(job.config):
                reason = "finished earlier" if self._finished(job) is not None else self._solo_reason(job.cfg)
                key = group_key(job.cfg) if reason is None else ""
            if reason is not None:
                log.info("#%d runs on its own: %s", job.idx, reason)
                units.append([job])
                continue
            if key not in groups or len(groups[key]) == self.max_members:
                groups[key] = []
                units.append(groups[key])
            groups[key].append(job)
        log.info("Launching %d jobs: %d vectorized group(s), %d on their own", len(jobs),
                 sum(len(u) > 1 for u in units), sum(len(u) == 1 for u in units))
        returns: dict[int, JobReturn] = {}
        for unit in units:
            done = self._run_group(unit) if len(unit) > 1 else [self._run_one(unit[0])]
            returns.update((job.idx, ret) for job, ret in zip(unit, done))
        return [returns[job.idx] for job in jobs]

    # --- jobs ------------------------------------------------------------------------------------------
    def _job(self, idx: int, overrides: list[str]) -> Job:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        cfg = copy.deepcopy(config)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return Job(idx, overrides, config, cfg)

    def _run(self, job: Job, task_function: TaskFunction) -> JobReturn:
        log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
        ret = run_job(hydra_context=self.hydra_context, task_function=task_function, config=job.config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _run_one(self, job: Job) -> JobReturn:
        done = self._finished(job)
        if done is not None:
            return self._run(job, _reporting(done, "already finished: not trained again"))
        self._drop_stale_run(job)
        return self._run(job, self.task_function)

    def _run_group(self, jobs: list[Job]) -> list[JobReturn]:
        from trainstudy.cli import reason
        from trainstudy.vectorized import GroupInterrupted, train_group

        log.info("vectorized group of %d jobs: #%s", len(jobs), ", #".join(str(j.idx) for j in jobs))
        cfgs = []
        for job in jobs:
            self._drop_stale_run(job)
            cfgs.append(_with_paths(job, taken={c.paths.tb_dir for c in cfgs}))
        try:
            results = train_group(cfgs)
        except GroupInterrupted as e:
            for job, result in zip(jobs, e.results):
                self._run(job, _reporting(result, "interrupted with its group"))
            log.warning("%s; re-run the sweep with hydra.sweep.dir=%s to train what is left",
                        e, self.config.hydra.sweep.dir)
            sys.exit(128 + getattr(signal, e.signal_name))
        except Exception as e:  # noqa: BLE001 - the jobs still run, one by one, and fail there if they must
            log.warning("the vectorized group failed (%s); its %d jobs run one by one", reason(e), len(jobs))
            for cfg in cfgs:
                shutil.rmtree(cfg.paths.tb_dir, ignore_errors=True)
            return [self._run(job, self.task_function) for job in jobs]
        return [self._run(job, _reporting(result, f"trained in a vectorized group of {len(jobs)}"))
                for job, result in zip(jobs, results)]

    def _solo_reason(self, cfg: DictConfig) -> str | None:
        from trainstudy.errors import UserError
        from trainstudy.train import validate
        from trainstudy.vectorized import solo_reason

        try:
            validate(cfg)
        except UserError as e:
            return f"its config is refused ({e})"
        return solo_reason(cfg)

    # --- re-runs into the same sweep folder ------------------------------------------------------------
    def _metrics(self, job: Job) -> dict[str, Any] | None:
        from trainstudy.sweeps import recorded_overrides

        path = _output_dir(job.config) / "metrics.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return result if recorded_overrides(result.get("overrides") or []) == job.overrides else None

    def _finished(self, job: Job) -> dict[str, Any] | None:
        """The job's result when an earlier launch into this sweep folder finished it."""
        result = self._metrics(job) if self.skip_done else None
        return result if result is not None and result.get("status") in DONE else None

    def _drop_stale_run(self, job: Job) -> None:
        """A job trained again into its folder: the earlier attempt's TensorBoard run goes with its metrics.json,
        so the job keeps one curve, from step 0."""
        result = self._metrics(job)
        tb = Path(result.get("tb_dir") or "") if result else None
        if tb is not None and tb.parent == Path(str(job.config.hydra.sweep.dir)) / "tb":
            shutil.rmtree(tb, ignore_errors=True)


def _output_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)) / str(OmegaConf.select(config, "hydra.sweep.subdir"))


@contextmanager
def _as_job(config: DictConfig) -> Iterator[None]:
    """Hydra's view of the world as run_job sets it for this job (output folder included), then restored."""
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(_output_dir(config).absolute())
    HydraConfig.instance().set_config(config)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved


def _with_paths(job: Job, taken: set[str]) -> DictConfig:
    """The job's task config with ``paths`` filled as ``cli.run`` fills them; a TensorBoard run another
    member of the group already takes (the same overrides twice) gets the job number, as on disk."""
    from trainstudy.cli import job_paths

    cfg = copy.deepcopy(job.cfg)
    with _as_job(job.config):
        job_paths(cfg)
    if cfg.paths.tb_dir in taken:
        tb = Path(cfg.paths.tb_dir)
        with open_dict(cfg):
            cfg.paths.tb_dir = str(tb.with_name(f"{tb.name}~{job.idx}"))
    return cfg


def _reporting(result: dict[str, Any], how: str) -> Callable[[DictConfig], float]:
    """A task function that reports a result trained elsewhere, into the job's own log; it returns what train.py's
    main would (the run's objective), so a sweeper reads the same number either way."""
    def task(cfg: DictConfig) -> float:
        from trainstudy.cli import end_line
        from trainstudy.objective import objective_value

        logger = logging.getLogger("trainstudy")
        h = result.get("hparams") or {}
        logger.info("%s: model %s · init %s · loss %s · optim %s lr %g · seed %s · device %s", how, h.get("model"),
                    h.get("init"), h.get("loss"), h.get("optim"), h.get("lr", 0), h.get("seed"), result.get("device"))
        if result.get("metrics"):
            logger.info(end_line(result))
        return objective_value(cfg, result)

    return task
