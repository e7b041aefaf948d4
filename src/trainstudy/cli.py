"""The boundary between Hydra and ``train``: run folders, run names, one-line errors, sweep summaries."""

from __future__ import annotations

import importlib.util
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

from trainstudy import interrupts
from trainstudy.claims import LOCK, claim_named, given
from trainstudy.errors import (
    EXIT_USER_ERROR,
    UserError,
    install_hydra_one_line_errors,
    report_user_errors,
)
from trainstudy.objective import check_sweeper_direction, validate_objective
from trainstudy.paths import shown
from trainstudy.results import read_metrics, write_json
from trainstudy.schema import check_argv
from trainstudy.sweeps import folder_name, recorded_overrides, run_name, sweep_keys
from trainstudy.targets import best_key

log = logging.getLogger("trainstudy")


def job_paths(cfg: DictConfig) -> None:
    """Fill ``paths`` from Hydra: a run's tb/ is its own; a sweep's jobs share <sweep>/tb/<run name>."""
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    tb_dir = output_dir / "tb"
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hc.sweep.dir)
        name = run_name(list(hc.overrides.task), sweep_keys(sweep_dir)) or f"job{hc.job.num}"
        tb_dir = sweep_dir / "tb" / folder_name(name)
        if tb_dir.exists():  # the same overrides twice in one sweep (seed=0,0): still two runs
            tb_dir = tb_dir.with_name(folder_name(name, f"~{hc.job.num}"))
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


def test_text(result: dict[str, Any]) -> str:
    """The test split's headline metric, ``test/acc 0.953`` (``test/mse`` for regression); empty without one."""
    m = result["metrics"]
    name = next((k for k in ("test/acc", "test/mse") if m.get(k) is not None), None)
    return f"{name} {m[name]:.4g}" if name else ""


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
    parts = [head, best_text(result), test_text(result), f"logs: {shown(result['run_dir'])}"]
    if result.get("tensorboard", True):
        parts.append(f"tensorboard --logdir {shown(result['tb_dir'])}")
    return " · ".join(p for p in parts if p)


LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def _training() -> tuple[type, Any]:
    """trainstudy.train's RunInterrupted and train, imported here rather than at the top: `--help` and `--cfg`
    never reach run() and start in a fraction of the time without torch and Lightning. Importing Lightning sets
    its loggers to INFO with a handler of its own; by now Hydra has configured them (conf/hydra: WARNING), so
    that configuration is put back (else every run prints "GPU available: ..." twice)."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    from trainstudy.train import RunInterrupted, train

    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate
    return RunInterrupted, train


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """What ``python train.py`` does for one job. A user's mistake ends in one line, never a traceback.

    In a sweep, a job that fails is recorded (metrics.json with status "failed" and the reason) and the
    sweep goes on; the summary at the end says which failed and sets the exit status.
    """
    RunInterrupted, train = _training()
    job_paths(cfg)
    try:
        if cfg.paths.multirun and (why := local_ddp_reason(cfg)) is not None:
            raise UserError(why)  # a job whose sweep varies trainer.devices: refused alone, the others go on
        validate_objective(cfg)
        interrupts.now(interrupts.BEFORE_TRAINING)  # a sweep's next job in this process starts again
        result = train(cfg)
        interrupts.now(f"after the run finished; its record is complete ({shown(Path(cfg.paths.output_dir))})")
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
        if (code := interrupts.exit_status()) is not None:  # the signal's exception, turned into another by
            log.debug("stopped by %s in: %s", interrupts.first(), reason(e))  # the code it landed in
            sys.exit(code)
        if not cfg.paths.multirun:
            raise
        log.exception("job failed")
        return _record_failure(cfg, reason(e))
    if not result.get("rank"):  # of a multi-device run, rank 0 speaks
        log.info(end_line(result))
    return result


def discard_unstarted(run_dir: Path) -> None:
    """Remove the folder made for a run refused before it began (.hydra/, its log and lock, nothing else):
    the report would count it as a run that died."""
    entries = list(run_dir.iterdir()) if run_dir.is_dir() and run_dir.resolve() != Path.cwd().resolve() else []
    if entries and all(p.name in (".hydra", LOCK) or p.suffix == ".log" for p in entries):
        shutil.rmtree(run_dir, ignore_errors=True)


def reason(e: BaseException) -> str:
    """An error's one-line reason: its root cause (instantiate wraps errors in InstantiationException)."""
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _record_failure(cfg: DictConfig, reason: str) -> dict[str, Any]:
    log.error("job failed: %s", reason)
    out = Path(cfg.paths.output_dir)
    overrides = recorded_overrides(list(HydraConfig.get().overrides.task))
    result = {"status": "failed", "error": reason, "overrides": overrides}
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", result)
    except (OSError, UserError) as e:  # a full disk: the summary shows the job without a record
        log.error("could not record the failure in %s: %s", out, e)
    return result


def local_ddp_reason(cfg: DictConfig) -> str | None:
    """Why this job can't train on several devices in this sweep (None: it can). Lightning's DDP starts rank 1
    by running this process's command line again: inside a sweep that is the whole sweep, once more. On SLURM
    (submitit) every rank is a task of its own and nothing is relaunched."""
    trainer = cfg.get("trainer") or {}
    devices = trainer.get("devices", 1)
    several = ("ddp" in str(trainer.get("strategy", "")) and str(devices) not in ("1", "[0]")) or (
        isinstance(devices, int) and devices > 1) or (not isinstance(devices, (int, str)) and len(devices) > 1)
    launcher = str(((cfg.get("hydra") or {}).get("launcher") or {}).get("_target_", ""))
    if not several or "Slurm" in launcher:
        return None
    return (f"trainer.devices={devices} (trainer.strategy={trainer.get('strategy', 'auto')}) in a sweep on this "
            "machine: Lightning's DDP would start the whole sweep again for rank 1; run it as one run (without -m), "
            "one job per device with trainer.devices=1, or on SLURM with hydra/launcher=slurm")


class SweepChecks(Callback):
    """At the start of a sweep, before any job: refuse what no job of it could do (several devices locally, an
    optimizing sweeper going the wrong way)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        why = local_ddp_reason(config)
        if why is None:
            try:
                check_sweeper_direction(config)
            except UserError as e:
                why = str(e)
        if why is not None:  # Hydra turns a callback's exception into a warning
            sys.stderr.write(f"error: {why}\n")
            sys.exit(EXIT_USER_ERROR)


class SweepSummary(Callback):
    """At the end of a sweep: a short table of its jobs and the command that opens TensorBoard on it."""

    failed = False

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        varied = sweep_keys(sweep_dir)
        rows, tensorboard = [], False
        for path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime):
            result, unreadable = read_metrics(path)
            if result is None:
                rows.append(f"  {path.parent.name:<48} {'unreadable':<11} {unreadable or 'no metrics.json'}")
                SweepSummary.failed = True
                continue
            name = run_name(result.get("overrides") or [], varied) or path.parent.name
            rows.append(f"  {name:<48} {summary_row(result)}")
            SweepSummary.failed |= result.get("status") == "failed"
            tensorboard |= bool(result.get("tensorboard"))
        jobs = f"{len(rows)} job" + ("" if len(rows) == 1 else "s")
        interrupts.now(f"while writing the sweep's report; every job's record is complete (python "
                       f"scripts/report.py {shown(sweep_dir)} writes the report)")
        report = write_sweep_report(sweep_dir) if rows else ""
        look = ""
        if tensorboard:
            from trainstudy.report.tbgroups import tensorboard_url  # the report package brings matplotlib

            look = (f"\ntensorboard --logdir {shown(sweep_dir / 'tb')}, then open {tensorboard_url()} (the "
                    "curves; HParams: the numbers, Custom Scalars: each group's mean ± std over seeds)")
        log.info("sweep %s: %s\n%s%s%s", shown(sweep_dir), jobs, "\n".join(rows), report, look)


def write_sweep_report(sweep_dir: Path) -> str:
    """The sweep's report and its TensorBoard group runs and HParams experiment (report/); the line that says
    where, or one warning line: the jobs are done and recorded whatever happens here."""
    try:
        from trainstudy.report import build_report, write_report
        from trainstudy.report.tbgroups import write_tensorboard

        report = build_report(sweep_dir)
        written = write_report(report)
        write_tensorboard(report)
    except Exception as e:  # noqa: BLE001 - a report that can't be written never fails the sweep
        log.warning("the sweep's report was not written (%s); try python scripts/report.py %s",
                    reason(e), shown(sweep_dir))
        return ""
    return f"\nreport: {shown(written['md'])}"


def summary_row(result: dict[str, Any]) -> str:
    """A job's status and headline numbers in the end-of-sweep table: ``ok  reached at step 120 · best ...``."""
    status = result.get("status", "?")
    if status == "failed":
        return f"{status:<11} {result.get('error', '')}"
    steps = (result.get("metrics") or {}).get("conv/steps_to_target")
    parts = ["not reached" if steps is None else f"reached at step {steps}"]
    if "target" in result:
        parts.append(best_text(result))
    return f"{status:<11} " + " · ".join(p for p in parts if p)


def command_line(argv: list[str]) -> list[str]:
    """Before Hydra starts: one-line errors for its own composition, ``resume=`` expanded to the run's overrides,
    and the folder the command line names claimed for this process (see claims.py)."""
    install_hydra_one_line_errors()
    report_user_errors(lambda: check_argv(argv))()
    report_user_errors(lambda: check_launcher(argv))()
    report_user_errors(lambda: check_sweeper(argv))()
    if any(a.startswith("resume=") for a in argv):  # resume.py brings Lightning (its checkpoint callback)
        from trainstudy.resume import resume_argv

        argv = report_user_errors(lambda: resume_argv(argv))()
    report_user_errors(lambda: claim_named(argv))()
    return argv


def check_launcher(argv: list[str]) -> None:
    """A SLURM launcher off a cluster: one line before Hydra starts (submitit would raise a traceback)."""
    launcher = given(argv, "hydra/launcher")
    if launcher in ("slurm", "submitit_slurm") and shutil.which("srun") is None:
        raise UserError(f"hydra/launcher={launcher} needs a SLURM cluster and this machine has no srun; run the "
                        "sweep on the cluster, or here with hydra/launcher=submitit_local (the same code path, as "
                        "local processes) or hydra/launcher=joblib")


def check_sweeper(argv: list[str]) -> None:
    """An hparams_search preset without its sweeper installed: say which extra to install (Hydra would only say
    that hydra/sweeper has no option optuna)."""
    search = given(argv, "hparams_search")
    if search not in (None, "null") and importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        raise UserError(f"hparams_search={search} needs Hydra's Optuna sweeper, which is not installed: "
                        "pip install -e \".[optuna]\"")


def exit_status() -> int:
    """Non-zero when a job of the sweep this process ran failed."""
    return 1 if SweepSummary.failed else 0
