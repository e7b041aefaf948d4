"""One training run: ``train(cfg) -> metrics``, testable without Hydra's entry point."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from trainstudy import __version__, checkpoint_io, interrupts
from trainstudy.callbacks import build_callbacks, checkpointing, validate_callbacks
from trainstudy.convergence import ConvergenceRecord, ConvergenceTracker
from trainstudy.data import DataSplits, load_data, validate_data_cfg
from trainstudy.datamodule import DeviceBatches, StudyDataModule, steps_per_batch
from trainstudy.debugging import DebugPlan, debug_plan
from trainstudy.diagnostics import InitDiagnostics, histogram_every
from trainstudy.errors import UserError, check_arguments
from trainstudy.evaluation import evaluate_split
from trainstudy.inits import apply_init, validate_init
from trainstudy.loggers import (
    build_loggers,
    close,
    kinds,
    log_scalars,
    validate_loggers,
)
from trainstudy.losses import build_loss, out_features, validate_loss
from trainstudy.metainit import RandomTask, log_curve
from trainstudy.models import build_model, layer_count, validate_model
from trainstudy.module import StudyModule
from trainstudy.paths import shown
from trainstudy.progress import StepProgressBar
from trainstudy.results import read_metrics, write_json
from trainstudy.resume import (
    CHECKPOINT,
    Checkpointing,
    end_logged_at,
    fingerprint,
    keep_csv_rows,
    read_checkpoint_info,
)
from trainstudy.schedulers import build_scheduler, planned_steps, scheduler_name, validate_scheduler
from trainstudy.schema import build_trainer, check_values
from trainstudy.targets import target_metric, task_of

log = logging.getLogger("trainstudy")

# We log through the tracker, not self.log, and feed batches from device tensors, not a DataLoader:
# Lightning's advice about its own logging interval and loaders does not apply.
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run; its checkpoint and metrics so far are saved.

    ``finished``: the signal came while a run that had trained to its end wrote its record (which is complete).
    """

    def __init__(self, signal_name: str, step: int, run_dir: Path, finished: bool = False):
        super().__init__(f"interrupted ({signal_name}) as the run ended at step {step}; its record is complete"
                         if finished else f"interrupted ({signal_name}) at step {step}; continue with: "
                         f"python train.py resume={run_dir}")
        self.signal_name = signal_name


def validate(cfg: DictConfig) -> None:
    """Every check that needs no data: run before anything is loaded (each key's own values: schema.RULES)."""
    for key in ("trainer", "optim", "loss.criterion"):  # `+trainer.foo=1` composes; Lightning would refuse it late
        check_arguments(OmegaConf.select(cfg, key), key)
    check_values(cfg)
    validate_data_cfg(cfg.data)
    validate_model(cfg.model)
    scaled = cfg.init.get("layer_scale") is not None  # one factor per layer: count them, without the data
    validate_init(cfg.init, layer_count(cfg.model, cfg.data.name) if scaled else None)
    validate_loss(cfg.loss.name, task_of(cfg.data), cfg.data.name)
    debug_plan(cfg.trainer)
    validate_scheduler(cfg)
    validate_callbacks(cfg, classification=task_of(cfg.data) != "regression")
    validate_loggers(cfg)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator={accelerator} but this machine has no GPU that torch can use; "
                        "use trainer=default (the GPU when there is one) or trainer=cpu")
    check_writable(Path(cfg.data_dir), "data_dir")
    metric = cfg.target.get("metric")
    regression = task_of(cfg.data) == "regression"
    if metric not in (None, "val/acc", "val/loss", "val/mse") or metric == ("val/acc" if regression else "val/mse"):
        raise UserError(f"target.metric must be val/acc (classification), val/mse (regression) or val/loss, "
                        f"got {metric!r}")
    target = cfg.target.get("value")
    if target is not None and target_metric(cfg) == "val/acc" and not 0 < target <= 1:
        raise UserError(f"target.value={target} is an accuracy here and must lie in (0, 1] (e.g. target.value=0.9)")


def set_threads(threads: int | str) -> None:
    """torch's CPU threads for this run: the same count in a plain run and in every launcher's jobs, so the
    same config gives the same numbers (float sums depend on how work is split) and two runs side by side on
    a shared machine don't thrash (threads=all: every core, torch's own default)."""
    torch.set_num_threads((os.cpu_count() or 1) if threads == "all" else int(threads))


def check_writable(folder: Path, key: str) -> None:
    """A folder we must create: stop early, in one line, when it can't be (an existing read-only one is fine:
    the data loads without its cache)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{key}={folder} cannot be created ({e.strerror}); use {key}=<a writable folder>") from None


def hparams(cfg: DictConfig, splits: DataSplits | None = None) -> dict[str, Any]:
    """The flat hparams of a run: what a sweep's table is sorted by in TensorBoard and the report."""
    init_params = {f"init.{k}": v for k, v in cfg.init.items()
                   if k != "name" and isinstance(v, (int, float, str, bool)) and v is not None}
    return {
        "data": cfg.data.name,
        "source": splits.source if splits else cfg.data.get("source", ""),
        "task": task_of(cfg.data),
        "model": cfg.model.name,
        "depth": cfg.model.get("depth", 0),
        "width": cfg.model.get("width", 0),
        "activation": cfg.model.get("activation", "linear"),
        "init": cfg.init.name,
        **init_params,
        "loss": cfg.loss.name,
        "optim": cfg.optim._target_.rsplit(".", 1)[-1].lower(),
        "lr": cfg.optim.lr,
        "scheduler": scheduler_name(cfg),
        "batch_size": cfg.data.batch_size,
        "seed": cfg.seed,
    }


# val_every_n_steps=auto: the first of these that keeps a validation pass (a forward pass over the whole
# validation split, about a third of a training step per sample) under about a quarter of the training between
# two of them, i.e. val_samples <= 0.75 * n * batch_size
AUTO_VAL_STEPS = (10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000)


def val_interval(cfg: DictConfig, val_samples: int) -> int:
    """The validation interval in steps: val_every_n_steps, or for ``auto`` the finest of AUTO_VAL_STEPS whose
    validation costs at most about a quarter of the training time (10 for the bundled MNIST digits and
    sklearn's sets, 100 for Fashion-MNIST and CIFAR-10 at batch 128)."""
    n = cfg.val_every_n_steps
    if n != "auto":
        return int(n)
    batch = cfg.data.batch_size
    return next((k for k in AUTO_VAL_STEPS if val_samples <= 0.75 * k * batch), AUTO_VAL_STEPS[-1])


def versions() -> dict[str, str | None]:
    """What a run's numbers depend on besides its config: package versions and the project's git commit."""
    try:  # in a session of its own: a Ctrl-C at the terminal while the record is written doesn't kill it
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5, start_new_session=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"torch": torch.__version__, "lightning": L.__version__, "hydra": hydra.__version__,
            "trainstudy": __version__, "git_commit": commit}


def build(cfg: DictConfig, splits: DataSplits, plan: DebugPlan = DebugPlan(),
          measured: dict[str, Any] | None = None, learn_init: bool = True) -> tuple[StudyModule, dict[str, float | None]]:
    """Model, init, loss and optimizer for loaded data; returns the module and each layer's aimed-for std.
    ``plan``: the run's debugging flags (a schedule spans the steps they leave); ``measured``: filled with what
    the init measured as it ran (metainit's log); ``learn_init=False``: metainit does not learn (a resumed run
    loads its weights from the checkpoint)."""
    task = task_of(cfg.data)
    loss = build_loss(cfg.loss, task, splits.num_classes)
    target_dim = splits.y_train.shape[1] if task == "regression" else 1
    n_out = out_features(cfg.loss.name, task, splits.num_classes, target_dim)
    check_memory(cfg, splits.input_shape, n_out)
    try:
        model = build_model(cfg.model, splits.input_shape, n_out)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if not isinstance(e, (torch.OutOfMemoryError, MemoryError)) and "alloc" not in str(e):
            raise
        raise UserError(f"the model does not fit in memory ({str(e).splitlines()[0][:80]}); "
                        "use a smaller model.width / model.depth") from None
    lsuv_batch = splits.x_train[: cfg.data.batch_size] if cfg.init.name == "lsuv" else None
    # metainit learns on random data of this data's shape and the run's own loss
    random_task = RandomTask(loss, splits.input_shape, None if task == "regression" else splits.num_classes,
                             target_dim) if cfg.init.name == "metainit" else None
    targets = apply_init(model, cfg.init, getattr(model, "activation", None), lsuv_batch, random_task, measured,
                         learn=learn_init)
    # Lightning's own gradient clipping and accumulation need it to take each step (automatic optimization)
    automatic = bool(cfg.trainer.get("gradient_clip_val")) or cfg.trainer.get("accumulate_grad_batches", 1) != 1
    steps_per_epoch = plan.train_steps_per_epoch(-(-len(splits.x_train) // cfg.data.batch_size))
    # the run's config and its data's shapes travel in checkpoints: StudyModule.load_from_checkpoint rebuilds from them
    shapes = {"task": task, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes,
              "out_features": n_out}
    module = StudyModule(model, loss, instantiate(cfg.optim), automatic=automatic, compile=cfg.get("compile", False),
                         eval_chunk=max(256, 4 * cfg.data.batch_size),
                         scheduler=build_scheduler(run_config(cfg, plan), steps_per_epoch),
                         cfg=OmegaConf.to_container(cfg, resolve=True), shapes=shapes)
    return module, targets


def run_config(cfg: DictConfig, plan: DebugPlan) -> DictConfig:
    """The config the run trains by: its Trainer's without the debugging flags, which the run does itself."""
    if not plan.active:
        return cfg
    run_cfg = cfg.copy()
    with open_dict(run_cfg):
        run_cfg.trainer = plan.trainer_node(cfg.trainer)
    return run_cfg


def overfit_samples(splits: DataSplits, batch_size: int, seed: int, steps: int,
                    world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of epoch 0's first ``steps`` batches on every device: what overfit_batches trains on."""
    idx = torch.cat([DeviceBatches(splits.x_train, splits.y_train, batch_size, seed, epoch=lambda: 0, rank=rank,
                                   world_size=world_size).permutation(0)[:steps * batch_size]
                     for rank in range(world_size)])
    return splits.x_train[idx], splits.y_train[idx]


def describe(plan: DebugPlan, steps_per_epoch: int, val_samples: int, val_split: int) -> str:
    """The start-of-run line that says what the debugging flags do to this run."""
    parts = []
    if plan.fast_dev_run:
        parts.append(f"fast_dev_run: {plan.fast_dev_run} step(s), no logger, no checkpoints")
    if plan.overfit_batches:
        parts.append(f"overfit_batches: the same {steps_per_epoch} batch(es) every epoch, validated on their "
                     f"{val_samples} samples")
    elif plan.limit_train_batches is not None:
        parts.append(f"limit_train_batches: {steps_per_epoch} steps per epoch")
    if plan.limit_val_batches is not None:
        parts.append(f"limit_val_batches: {val_samples} of {val_split} validation samples")
    if plan.profiler:
        parts.append(f"profiler={plan.profiler}")
    return " · ".join(parts)


def free_memory_bytes() -> int | None:
    """Memory a run can still take: the GPU's free memory when it trains there, else MemAvailable (Linux)."""
    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None


def check_memory(cfg: DictConfig, input_shape: tuple[int, ...], n_out: int) -> None:
    """Stop a model that can't fit before allocating it: weights, gradients and two optimizer states."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_model(cfg.model, input_shape, n_out).parameters())
    need, free = 4 * 4 * n_params, free_memory_bytes()
    if free is not None and need > free:
        raise UserError(f"model={cfg.model.name} with model.depth={cfg.model.get('depth')} "
                        f"model.width={cfg.model.get('width')} has {n_params:,} parameters and needs about "
                        f"{need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free; "
                        "use a smaller model.width / model.depth")


def log_hparams(loggers: Sequence[Any], params: dict[str, Any], metrics: dict[str, float | int | None],
                step: int, experiment: bool = True) -> None:
    """The flat hparams and the measured metrics to each logger; TensorBoard's HParams tab lists every conv/*
    name, values logged only where measured. Other loggers get the params as their own (MLflow's params).

    (Lightning's log_hyperparams wants a value for every metric; a target never reached has none.)
    ``experiment=False`` (a sweep's job): the run's session only; the sweep writes the experiment, which says
    which columns its table opens with (report/tbgroups.py), and TensorBoard would take any run's as the sweep's.
    """
    measured = {k: v for k, v in metrics.items() if v is not None}
    log_scalars(loggers, measured, step)
    for logger in loggers:
        tb = getattr(logger, "experiment", None)
        if not hasattr(tb, "_get_file_writer"):
            logger.log_hyperparams(params)
            continue
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        summaries = hparams_summary(params, dict.fromkeys(metrics, 0.0))
        for summary in summaries if experiment else summaries[1:]:  # (experiment, session start, session end)
            tb._get_file_writer().add_summary(summary)


def measure_test(module: StudyModule, splits: DataSplits, device: torch.device | str) -> dict[str, float]:
    """test/* of the module's final weights, evaluated once on the training device, outside the training clock;
    the module is left where it was (Lightning hands it back on the CPU)."""
    home = module.device
    module.to(device)
    try:
        return evaluate_split(module, splits, "test")
    finally:
        module.to(home)


def finish_run(cfg: DictConfig, splits: DataSplits, record: ConvergenceRecord, layers: list[dict] | None,
               loggers: Sequence[Any], step: int, status: str | None, data_time: float, tb_dir: Path,
               device: torch.device | str, extra: dict[str, Any] | None = None, rank: int = 0,
               world_size: int = 1, test: dict[str, float] | None = None,
               log_end: bool = True, hessian: dict[str, Any] | None = None) -> dict[str, Any]:
    """The end of a run, ordinary or vectorized: HParams tab, then metrics.json; returns its content.

    ``status`` None means the run ended by itself (ok or diverged); "interrupted" skips the HParams summary,
    as does ``log_end=False`` (a finished run resumed with nothing to train: its logs hold its end already).
    Of a multi-device run, rank 0 alone writes (every rank holds the same record: see ConvergenceTracker);
    the others get the content back with ``"rank"`` set, and write nothing.
    ``test``: the test split's metrics (see measure_test), beside the conv/* ones everywhere they go.
    ``hessian``: the loss Hessian's top eigenvalue at step 0 (diagnostics=full), beside the layers.
    """
    metrics = {**record.summary(), **(test or {})}
    params = hparams(cfg, splits)
    if status is None and rank == 0:
        if log_end:
            log_hparams(loggers, params, metrics, step=step, experiment=not cfg.paths.get("multirun"))
        close(loggers, "success")
    result = {
        "status": status or ("diverged" if metrics["conv/diverged"] else "ok"),
        "global_step": step,
        "run_dir": str(cfg.paths.output_dir),
        "overrides": list(cfg.paths.get("overrides") or []),
        "hparams": params,
        "metrics": metrics,
        "target": {"metric": record.metric, "value": record.target},
        "curve": record.state.curve,
        "train_loss": record.state.losses,
        "diagnostics": {"layers": layers, **({"hessian": hessian} if hessian else {})} if layers is not None else None,
        "data_time_s": data_time,
        "test_split": {"source": splits.test_source, "samples": len(splits.y_test)} if test else None,
        "tb_dir": str(tb_dir),
        "tensorboard": "TensorBoardLogger" in kinds(cfg),
        "loggers": kinds(cfg),
        "versions": versions(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "devices": world_size,
        **(extra or {}),
    }
    if rank != 0:
        return {**result, "rank": rank}
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", result)
    return result


def train(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Validate, load, build, initialize, train; write metrics.json; return its content.

    ``callbacks`` join the run's own (the benchmark times epochs with one).
    """
    return fit(cfg, callbacks)[0]


def fit(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> tuple[dict[str, Any], StudyModule]:
    """``train``, also returning the trained module (tests look at its weights)."""
    validate(cfg)
    plan = debug_plan(cfg.trainer)
    run_cfg = run_config(cfg, plan)
    out_dir = Path(cfg.paths.output_dir)
    tb_dir = Path(cfg.paths.tb_dir) if cfg.paths.get("tb_dir") else out_dir / "tb"
    resumed = None
    if cfg.get("resume"):
        resumed = read_checkpoint_info(Path(cfg.resume))
        if cfg.seed is None and resumed.get("seed") is not None:  # seed=null drew this one when the run began
            with open_dict(cfg):
                cfg.seed = resumed["seed"]
        if resumed.get("fingerprint") != fingerprint(cfg):
            raise UserError(f"resume={cfg.resume}: its checkpoint was written by another configuration (the run's "
                            "config or trainstudy's defaults changed since); start a new run instead")
        # relative to the run folder (older checkpoints hold an absolute path, which joining keeps)
        tb_dir = Path(cfg.resume) / resumed["tb_dir"]
    ended_at = end_logged_at(Path(cfg.resume)) if resumed else None
    set_threads(cfg.threads)
    if cfg.seed is None:  # seed=null: draw one, and record it like any other (the checkpoint keeps it)
        with open_dict(cfg):
            cfg.seed = int.from_bytes(os.urandom(4), "little") >> 1
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    t0 = time.perf_counter()
    splits = load_data(cfg.data, cfg.data_dir)
    data_time = time.perf_counter() - t0
    task = task_of(cfg.data)
    measured: dict[str, Any] = {}
    module, weight_std_target = build(cfg, splits, plan, measured, learn_init=not resumed)
    metainit = measured.get("metainit")
    learned_before = None  # a resumed metainit run: what it learned when it began (its first metrics.json)
    if resumed and cfg.init.name == "metainit":
        learned_before = (read_metrics(Path(cfg.resume) / "metrics.json")[0] or {}).get("metainit")
    steps_per_epoch = plan.train_steps_per_epoch(-(-len(splits.x_train) // cfg.data.batch_size))

    target_value = cfg.target.value if cfg.target.value is not None else cfg.data.target_value
    n_val = plan.val_samples(len(splits.x_val), cfg.data.batch_size)
    val_every = val_interval(cfg, n_val)
    tracker = ConvergenceTracker(splits.x_val[:n_val], splits.y_val[:n_val], classification=task != "regression",
                                 target_metric=target_metric(cfg), target_value=target_value,
                                 val_every_n_steps=val_every, flush_every=cfg.log_every_n_steps,
                                 stop_on_reach=cfg.target.stop_on_reach)
    if metainit is not None:  # learning the init is part of what reaching the target cost
        tracker.state.train_time_s += metainit.seconds
    callbacks = [tracker, *callbacks]
    diagnostics = None
    if cfg.diagnostics:
        batch = slice(0, cfg.data.batch_size)
        diagnostics = InitDiagnostics(splits.x_train[batch], splits.y_train[batch], weight_std_target,
                                      grad_norm_every=cfg.log_every_n_steps, end_logged_at=ended_at,
                                      histogram_every=histogram_every(planned_steps(run_cfg.trainer, steps_per_epoch)),
                                      untimed=tracker.untimed, full=cfg.diagnostics == "full")
        callbacks.insert(0, diagnostics)  # its step-0 work runs before the tracker starts the training clock
    if cfg.checkpoint.every_n_steps and not plan.fast_dev_run:  # a dry run leaves no checkpoint, as Lightning's
        callbacks.append(Checkpointing(out_dir / CHECKPOINT, cfg.checkpoint.every_n_steps, tracker.flush,
                                       info={"fingerprint": fingerprint(cfg), "seed": cfg.seed,
                                             "tb_dir": os.path.relpath(tb_dir, out_dir)}))
    # a resumed TensorBoard drops the events a hard kill wrote past the checkpoint: the curve goes on from there;
    # fast_dev_run, as Lightning's: no logger, and none of the callbacks that write files or need a logger
    loggers = [] if plan.fast_dev_run else build_loggers(cfg, tb_dir,
                                                         purge_step=resumed["global_step"] + 1 if resumed else None)
    if metainit is not None and not resumed:
        log_curve(loggers, metainit)
    if resumed:
        for logger in loggers:
            if isinstance(logger, CSVLogger):
                keep_csv_rows(logger, resumed["global_step"])
    progress_bar = sys.stderr.isatty() and cfg.get("progress_bar", True)
    lightning_callbacks = [cb for cb in build_callbacks(cfg, target_metric(cfg), progress_bar)
                           if not (plan.fast_dev_run and isinstance(cb, (ModelCheckpoint, LearningRateMonitor)))]
    callbacks += lightning_callbacks
    if progress_bar and not any(isinstance(cb, ProgressBar) for cb in lightning_callbacks):
        total = planned_steps(run_cfg.trainer, steps_per_epoch)
        callbacks.append(StepProgressBar(None if total == float("inf") else int(total), tracker.record))
    profiler = plan.build_profiler(out_dir)
    trainer: L.Trainer = build_trainer(lambda: instantiate(
        run_cfg.trainer, logger=loggers or False, callbacks=callbacks, enable_progress_bar=progress_bar,
        profiler=profiler,
        enable_model_summary=False, enable_checkpointing=checkpointing(lightning_callbacks),
        limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=cfg.log_every_n_steps,
        # validation comes every val_every_n_steps, not at an epoch's end: EarlyStopping and ModelCheckpoint
        # then act at on_validation_end, which the tracker calls (Lightning's own loop never runs: no val batches)
        check_val_every_n_epoch=None, val_check_interval=val_every,
        default_root_dir=str(out_dir)), run_cfg.trainer)
    checkpoint_io.install(trainer)  # local checkpoint saves without fsspec's copies (a user's CheckpointIO stays)
    n_params = sum(p.numel() for p in module.parameters())
    say = log.info if rank_zero_only.rank == 0 else log.debug  # of a multi-device run, rank 0 speaks
    say("data %s (%s): %d train / %d val / %d test (%s), %s task", splits.name, splits.source,
        len(splits.x_train), len(splits.x_val), len(splits.x_test), splits.test_source, task)
    say("model %s (%s params) · init %s · loss %s · optim %s lr %g · seed %s · device %s",
        cfg.model.name, f"{n_params:,}", cfg.init.name, cfg.loss.name, hparams(cfg)["optim"], cfg.optim.lr,
        cfg.seed, trainer.strategy.root_device)
    if metainit is not None:
        say("metainit: %d steps, gradient quotient %.4g -> %.4g, %.1f s (counted in conv/time_to_target_s)",
            len(metainit.quotients) - 1, metainit.quotients[0], metainit.quotients[-1], metainit.seconds)
    elif resumed and cfg.init.name == "metainit":
        say("metainit: learned when the run began%s; not again: the weights come from the checkpoint",
            f" ({learned_before['steps']} steps, {learned_before['seconds']:.1f} s, counted)" if learned_before else "")
    say("validation every %d steps%s · %d thread%s · run folder %s", val_every,
        " (val_every_n_steps=auto)" if cfg.val_every_n_steps == "auto" else "", torch.get_num_threads(),
        "" if torch.get_num_threads() == 1 else "s", shown(out_dir))
    if plan.overfit_batches:  # overfitting is judged on the very samples it trains on
        tracker.x_val, tracker.y_val = overfit_samples(splits, cfg.data.batch_size, cfg.seed, steps_per_epoch,
                                                       trainer.world_size)
    if plan.active:
        say("debug: %s", describe(plan, steps_per_epoch, n_val if not plan.overfit_batches else len(tracker.x_val),
                                  len(splits.x_val)))
    if resumed:
        say("resuming from step %d of %s", resumed["global_step"], shown(Path(cfg.resume) / CHECKPOINT))

    # validation and logging happen between the steps of a group (see StudyModule), checkpoints between groups;
    # Lightning's callbacks act at a batch's end too (every_n_train_steps): groups then end at validations
    intervals = (cfg.checkpoint.every_n_steps, *((val_every,) if lightning_callbacks else ()))
    group = 1 if module.automatic_optimization else steps_per_batch(*intervals)
    interrupted = None
    with interrupts.during(interrupts.note):  # from here a signal (a second one too) waits for metrics.json
        try:
            with interrupts.during(interrupts.stop_training):
                limited = plan.overfit_batches or plan.limit_train_batches is not None
                data = StudyDataModule(splits, cfg.data.batch_size, cfg.seed, group,
                                       batches_per_epoch=steps_per_epoch if limited else None,
                                       same_batches=bool(plan.overfit_batches))
                trainer.fit(module, datamodule=data,
                            ckpt_path=str(Path(cfg.resume) / CHECKPOINT) if resumed else None, weights_only=True)
        except SIGTERMException:
            interrupted = "SIGTERM"
        except SystemExit:  # Lightning's answer to Ctrl-C, after its on_exception hooks saved the checkpoint
            if trainer.state.status != TrainerStatus.INTERRUPTED:
                raise
            interrupted = "SIGINT"
        except Exception:  # the KeyboardInterrupt of a signal, turned into another error by the code it hit
            if interrupts.first() is None or trainer.state.status != TrainerStatus.INTERRUPTED:
                raise
            interrupted = interrupts.first()
        device = trainer.strategy.root_device
        test = None if interrupted else measure_test(module, splits, device)
        result = finish_run(cfg, splits, tracker.record, diagnostics.layers if diagnostics else None, loggers,
                            trainer.global_step, "interrupted" if interrupted else None, data_time, tb_dir,
                            device, rank=trainer.global_rank, world_size=trainer.world_size, test=test,
                            extra={**({} if loggers else {"tensorboard": False}),
                                   **({"metainit": metainit.summary()} if metainit else
                                      {"metainit": learned_before} if learned_before else {})},
                            log_end=trainer.global_step != ended_at,
                            hessian=diagnostics.hessian if diagnostics else None)
    if profiler is not None:
        for report in sorted(out_dir.glob("fit-profile*.txt")):
            say("profile of Lightning's hooks (training_step: one group of up to %d steps): %s", group, shown(report))
    stopped_by = interrupts.first() or interrupted  # the first signal decides, whichever path Lightning took
    if stopped_by:
        raise RunInterrupted(stopped_by, trainer.global_step, out_dir, finished=not interrupted)
    return result, module
