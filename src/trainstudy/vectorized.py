"""Vectorized sweeps: jobs of a sweep that share an architecture train together, as one stacked model.

An init study is many small runs of one network. Here each run ("member") is built exactly as ``train``
builds it (seeded, then ``build``: model, init, loss), then torch.func stacks the members' parameters into
tensors of shape (M, ...) and ``vmap`` runs one ``functional_call`` of the network over all of them: a
batched matmul per layer instead of M small ones (PyTorch's "model ensembling" pattern). What stays per
member is everything that makes it a run of its own: its init, its data order (``DeviceBatches.permutation``
with its seed), its loss, its convergence record, its TensorBoard run and its metrics.json.

The optimizer is the configured torch optimizer over the stacked tensors. SGD, Adam and AdamW update each
element on its own (momentum, moments and weight decay included), so one of them over (M, ...) tensors is
M independent optimizers; the learning rate is therefore shared by a group. Members never mix: the loss
that is back-propagated is the sum of the members' losses, whose gradient for a member's parameters is the
gradient of its own loss alone, so a member that diverges (NaN) leaves the others' numbers untouched; it
stops counting at that step, as an ordinary run stops there.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.func import functional_call, stack_module_state, vmap

from trainstudy import interrupts
from trainstudy.convergence import ConvergenceRecord
from trainstudy.data import DATASETS, DataSplits, load_data
from trainstudy.datamodule import DeviceBatches
from trainstudy.diagnostics import InitDiagnostics
from trainstudy.loggers import build_loggers, close, kinds, log_scalars
from trainstudy.losses import StudyLoss, out_features
from trainstudy.module import StudyModule
from trainstudy.schedulers import planned_steps, scheduler_name
from trainstudy.train import (
    build,
    finish_run,
    hparams,
    measure_test,
    set_threads,
    target_metric,
    task_of,
    val_interval,
    validate,
)

log = logging.getLogger("trainstudy")

# Optimizers whose update is elementwise: one over stacked (M, ...) tensors is M independent ones.
ELEMENTWISE_OPTIMIZERS = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW")
# Trainer arguments the loop here reproduces; any other makes a job run on its own.
TRAINER_KEYS = {"_target_", "accelerator", "devices", "max_epochs", "max_steps", "precision", "deterministic"}
# What members of a group may not differ in: the data, the network, how it is optimized, for how long, when
# it is validated. (They may differ in everything else a run has: seed, init, loss, target, diagnostics.)
SHARED_KEYS = ("data", "data_dir", "model", "optim", "trainer", "val_every_n_steps", "log_every_n_steps", "threads")


def solo_reason(cfg: DictConfig) -> str | None:
    """Why a job can't train in a vectorized group (None: it can)."""
    if cfg.get("resume"):
        return "resume= continues one run"
    if cfg.get("compile"):
        return "compile=true compiles one model's forward"
    if cfg.init.name == "metainit":  # its learning time counts in the job's own conv/time_to_target_s
        return "init=metainit learns each job's init on its own clock"
    trainer = cfg.trainer
    extra = sorted(set(trainer) - TRAINER_KEYS)
    if extra:
        return f"trainer.{extra[0]} is a Lightning setting the vectorized loop does not reproduce"
    if str(trainer.get("precision", "32-true")) not in ("32-true", "32"):
        return f"trainer.precision={trainer.precision} (the vectorized loop trains in float32)"
    if str(trainer.get("devices", 1)) != "1":
        return f"trainer.devices={trainer.devices} (a group trains on one device)"
    if str(trainer.get("accelerator", "auto")) not in ("auto", "cpu", "gpu", "cuda"):
        return f"trainer.accelerator={trainer.accelerator}"
    if math.isinf(planned_steps(trainer, 1)):
        return "trainer.max_epochs=-1 with trainer.max_steps=-1 trains forever"
    # a Trainer's callbacks and a changing lr are not part of the vectorized loop: such jobs run on their own
    if callbacks := [name for name, node in (cfg.get("callbacks") or {}).items() if node is not None]:
        return f"callbacks.{callbacks[0]} is a Lightning callback (the vectorized loop runs no Trainer)"
    if (cfg.get("scheduler") or {}).get("_target_"):
        return f"scheduler={scheduler_name(cfg)} (the vectorized loop keeps the lr constant)"
    if "WandbLogger" in kinds(cfg):  # W&B keeps one run open per process; a group's members log side by side
        return "logger=wandb opens one run at a time"
    if cfg.optim.get("_target_") not in ELEMENTWISE_OPTIMIZERS:
        return f"optim {cfg.optim.get('_target_')} is not one of {', '.join(ELEMENTWISE_OPTIMIZERS)}"
    return None


def group_key(cfg: DictConfig) -> str:
    """Jobs with the same key can train as one group: the shared settings, and the size of the output."""
    whole = OmegaConf.to_container(cfg, resolve=True)
    shared = {key: whole.get(key) for key in SHARED_KEYS}
    shared["out_features"] = out_features(cfg.loss.name, task_of(cfg.data), DATASETS[cfg.data.name].num_classes)
    return json.dumps(shared, sort_keys=True, default=str)


def training_device(trainer: DictConfig) -> torch.device:
    """The device Lightning's accelerator setting would pick (auto: the GPU when there is one)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


@dataclass
class RunView:
    """What the trainstudy callbacks read of a Lightning Trainer: the run's loggers and step."""

    loggers: list[Any]
    global_step: int = 0


@dataclass(eq=False)
class Member:
    """One job of a group: its config, its own module (init weights, loss), record, logger and diagnostics."""

    cfg: DictConfig
    module: StudyModule
    record: ConvergenceRecord
    run: RunView
    diagnostics: InitDiagnostics | None
    stopped_at: int | None = None  # the step it stopped counting (diverged, or reached with stop_on_reach)
    final: dict[str, torch.Tensor] = field(default_factory=dict)  # its weights then

    @property
    def active(self) -> bool:
        return self.stopped_at is None


class GroupInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped a group; each member's metrics.json says "interrupted" (``results``)."""

    def __init__(self, signal_name: str, step: int, results: list[dict[str, Any]] | None = None):
        super().__init__(f"interrupted ({signal_name}) at step {step}")
        self.signal_name, self.results = signal_name, results or []


class LossGroups:
    """Per-member losses over stacked outputs: one vmap per distinct loss config among the members."""

    def __init__(self, members: Sequence[Member], device: torch.device):
        by_config: dict[str, list[int]] = {}
        for m, member in enumerate(members):
            by_config.setdefault(json.dumps(OmegaConf.to_container(member.cfg.loss), sort_keys=True), []).append(m)
        self.size = len(members)
        self.groups = [(members[idx[0]].module.loss, torch.tensor(idx, device=device)) for idx in by_config.values()]

    def _each(self, fn: Callable[[StudyLoss], Callable], outputs: torch.Tensor, y: torch.Tensor,
              shared_y: bool) -> torch.Tensor:
        y_dim = None if shared_y else 0
        if len(self.groups) == 1:
            return vmap(fn(self.groups[0][0]), in_dims=(0, y_dim))(outputs, y)
        result = None
        for loss, idx in self.groups:
            part = vmap(fn(loss), in_dims=(0, y_dim))(outputs[idx], y if shared_y else y[idx])
            if result is None:
                result = part.new_zeros((self.size, *part.shape[1:]))
            result = result.index_copy(0, idx, part)
        return result

    def losses(self, outputs: torch.Tensor, y: torch.Tensor, shared_y: bool = False) -> torch.Tensor:
        """Each member's loss, shape (M,): member m's outputs against its targets, with its own loss."""
        return self._each(lambda loss: loss, outputs, y, shared_y)

    def correct(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's number of correct predictions (the threshold of one output depends on the loss)."""
        return self._each(lambda loss: loss.correct, outputs, y, shared_y=True)


class StackedModel:
    """M copies of one network as stacked parameters; ``forward`` runs them all (torch.func)."""

    def __init__(self, members: Sequence[Member]):
        models = [m.module.model for m in members]
        params, self.buffers = stack_module_state(models)
        # A Linear weight (M, out, in) is stored as the transpose of a contiguous (M, in, out): the layout of the
        # gradient that the batched matmul's backward produces, so autograd keeps that gradient as it is instead
        # of copying it into the weight's layout every step (half the backward's time on a CPU). Same values.
        self.params = {name: p.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
                       if p.dim() == 3 else p for name, p in params.items()}
        self.size = len(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        self._call = vmap(self._one, in_dims=(0, 0, 0))
        self._call_shared = vmap(self._one, in_dims=(0, 0, None))

    def _one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Outputs (M, B, ...): of member m on x[m], or on the same x for every member (``shared``)."""
        return (self._call_shared if shared else self._call)(self.params, self.buffers, x)

    def member(self, m: int) -> dict[str, torch.Tensor]:
        return {name: p.detach()[m].clone() for name, p in self.params.items()}

    @torch.no_grad()
    def evaluate(self, losses: LossGroups, x: torch.Tensor, y: torch.Tensor, classification: bool,
                 chunk: int = 8192) -> tuple[list[float], list[float], list[float]]:
        """Each member's (mean loss, accuracy, MSE) on a whole split, as StudyModule.evaluate; one sync.

        On a CPU a chunk of rows for M members makes M times the activations: there chunks shrink so that they
        stay about as large as one run's (and in the caches).
        """
        self.base.eval()
        loss_sum = correct = sq_sum = 0
        if x.device.type == "cpu":
            chunk = max(256, chunk // self.size)
        for start in range(0, len(x), chunk):
            out = self.forward(x[start:start + chunk], shared=True)
            yc = y[start:start + chunk]
            loss_sum = loss_sum + losses.losses(out, yc, shared_y=True).float() * len(yc)
            if classification:
                correct = correct + losses.correct(out, yc)
            else:
                sq_sum = sq_sum + (out.float() - yc.float()).pow(2).flatten(1).sum(1)
        self.base.train()
        loss = loss_sum.double() / len(x)
        count = correct.double() if classification else torch.zeros_like(loss)  # divided in float64, as there
        mse = torch.zeros_like(loss) if classification else sq_sum.double() / y.numel()
        rows = torch.stack([loss, count, mse]).tolist()
        return rows[0], [c / len(x) for c in rows[1]], rows[2]


class Clock:
    """Training wall time of the group, validation excluded (as the tracker measures it)."""

    def __init__(self, device: torch.device):
        self.device, self.total, self._since = device, 0.0, None

    def start(self) -> None:
        self._since = time.perf_counter()

    def pause(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self._since is not None:
            self.total += time.perf_counter() - self._since
            self._since = None

    def now(self) -> float:
        """The training time so far, the running stretch included."""
        return self.total + (time.perf_counter() - self._since if self._since is not None else 0.0)


def build_member(cfg: DictConfig, splits: DataSplits, device: torch.device) -> Member:
    """A member as ``train`` would build it: seeded, then model, init and loss drawn from the global RNG."""
    if cfg.seed is None:  # seed=null: draw one, and record it like any other
        with open_dict(cfg):
            cfg.seed = int.from_bytes(os.urandom(4), "little") >> 1
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module, weight_std_target = build(cfg, splits)
    module.to(device)
    target_value = cfg.target.value if cfg.target.value is not None else cfg.data.target_value
    record = ConvergenceRecord(task_of(cfg.data) != "regression", target_metric(cfg), target_value,
                               cfg.target.stop_on_reach)
    loggers = build_loggers(cfg, Path(cfg.paths.tb_dir))
    diagnostics = None
    if cfg.diagnostics:
        batch = slice(0, cfg.data.batch_size)
        diagnostics = InitDiagnostics(splits.x_train[batch], splits.y_train[batch], weight_std_target,
                                      grad_norm_every=cfg.log_every_n_steps, full=cfg.diagnostics == "full")
    return Member(cfg, module, record, RunView(loggers), diagnostics)


def train_group(cfgs: Sequence[DictConfig]) -> list[dict[str, Any]]:
    """Train compatible jobs (same ``group_key``, ``paths`` filled) as one stacked model; write each job's
    metrics.json and TensorBoard run as ``train`` would; return their results in order."""
    for cfg in cfgs:
        validate(cfg)
    first = cfgs[0]
    set_threads(first.threads)
    device = training_device(first.trainer)
    t0 = time.perf_counter()
    splits = load_data(first.data, first.data_dir)
    data_time = time.perf_counter() - t0
    members = [build_member(cfg, splits, device) for cfg in cfgs]
    for name in ("x_train", "y_train", "x_val", "y_val"):
        setattr(splits, name, getattr(splits, name).to(device))

    n_params = sum(p.numel() for p in members[0].module.model.parameters())
    log.info("vectorized group of %d jobs · data %s (%s): %d train / %d val · model %s (%s params each) · "
             "optim %s lr %g · device %s", len(members), splits.name, splits.source, len(splits.x_train),
             len(splits.x_val), first.model.name, f"{n_params:,}", hparams(first)["optim"], first.optim.lr, device)

    previous = torch.are_deterministic_algorithms_enabled()
    if first.trainer.get("deterministic"):  # as Lightning's deterministic=True does
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(first.trainer.get("deterministic")))
    # SIGTERM (a SLURM pre-emption) ends the group like Ctrl-C; a second signal waits for every member's record
    with interrupts.during(interrupts.note):
        try:
            with interrupts.during(interrupts.stop_training):
                status, step = _fit(members, splits, device)
        except KeyboardInterrupt:  # before its first step (the loop handles its own): nothing to record
            raise GroupInterrupted(interrupts.first() or "SIGINT", 0) from None
        finally:
            torch.use_deterministic_algorithms(previous)
        # the test split joins the device once training is over, for each member's one test evaluation
        splits.x_test, splits.y_test = splits.x_test.to(device), splits.y_test.to(device)
        results = [_finish(member, splits, status, data_time, device, len(members)) for member in members]
    stopped_by = status if status != "done" else interrupts.first()  # or a signal while the records were written
    if stopped_by:
        raise GroupInterrupted(stopped_by, step, results)
    return results


def _fit(members: list[Member], splits: DataSplits, device: torch.device) -> tuple[str, int]:
    """The training loop of a group; returns ("done" or the signal that stopped it, the last step)."""
    cfg = members[0].cfg
    batch_size, flush_every = cfg.data.batch_size, cfg.log_every_n_steps
    val_every = val_interval(cfg, len(splits.x_val))
    classification = task_of(cfg.data) != "regression"
    orders = [DeviceBatches(splits.x_train, splits.y_train, batch_size, m.cfg.seed, epoch=lambda: 0)
              for m in members]
    steps_per_epoch = orders[0].steps_per_epoch()
    total = planned_steps(cfg.trainer, steps_per_epoch)

    for member in members:  # step 0: diagnostics, then validation at init (as train's callbacks run them)
        if member.diagnostics is not None:
            member.diagnostics.on_train_start(member.run, member.module)
    stacked = StackedModel(members)
    losses = LossGroups(members, device)
    optimizer = members[0].module.optimizer_factory(list(stacked.params.values()))
    clock = Clock(device)
    _validate(members, stacked, losses, splits, classification, clock, step=0)

    step, samples, pending = 0, 0, []
    clock.start()
    try:
        for idx in _batches(orders, batch_size):
            x, y = splits.x_train[idx], splits.y_train[idx]
            loss = losses.losses(stacked.forward(x), y)
            optimizer.zero_grad()
            loss.sum().backward()
            _grad_norms(members, stacked, step)
            optimizer.step()
            step += 1
            samples += idx.shape[1]
            pending.append(loss.detach())
            for member in members:
                if member.active:
                    member.record.state.samples.append(samples)
            if step % val_every == 0:
                clock.pause()
                _flush(members, stacked, pending, step, clock)
                _validate(members, stacked, losses, splits, classification, clock, step)
                clock.start()
            elif len(pending) >= flush_every:
                _flush(members, stacked, pending, step, clock)
            if step >= total or not any(m.active for m in members):
                break
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through interrupts.stop_training
        clock.pause()
        _flush(members, stacked, pending, step, clock)
        _stop_all(members, stacked, step, clock)
        return interrupts.first() or "SIGINT", step
    clock.pause()
    _flush(members, stacked, pending, step, clock)
    _validate(members, stacked, losses, splits, classification, clock, step)  # the last step, where not yet done
    _stop_all(members, stacked, step, clock)
    return "done", step


def _batches(orders: list[DeviceBatches], batch_size: int) -> Iterator[torch.Tensor]:
    """Each step's sample indices, (M, batch): member m's come from its own seeded permutation per epoch."""
    for epoch in itertools.count():
        order = torch.stack([o.permutation(epoch) for o in orders])
        for start in range(0, order.shape[1], batch_size):
            yield order[:, start:start + batch_size]


def _stop(member: Member, stacked: StackedModel, m: int, step: int, clock: Clock) -> None:
    """The member stops counting here: its weights and training time are kept as they are now."""
    member.stopped_at = step
    member.final = stacked.member(m)
    member.record.state.train_time_s = clock.now()


def _stop_all(members: list[Member], stacked: StackedModel, step: int, clock: Clock) -> None:
    for m, member in enumerate(members):
        if member.active:
            _stop(member, stacked, m, step, clock)


def _flush(members: list[Member], stacked: StackedModel, pending: list[torch.Tensor], step: int,
           clock: Clock) -> None:
    """Read the pending losses back (one sync), log them per member, stop members whose loss turned non-finite."""
    if not pending:
        return
    per_member = torch.stack(pending).float().T.tolist()
    pending.clear()
    for m, (member, values) in enumerate(zip(members, per_member)):
        if not member.active:
            continue
        for at, value in member.record.add_losses(values):
            log_scalars(member.run.loggers, {"train/loss": value}, step=at)
        if member.record.diverged:
            _stop(member, stacked, m, step, clock)


def _validate(members: list[Member], stacked: StackedModel, losses: LossGroups, splits: DataSplits,
              classification: bool, clock: Clock, step: int) -> None:
    """Validate at ``step`` the active members not yet validated there, in one batched pass; record, log."""
    due = [m for m, member in enumerate(members)
           if member.active and not (member.record.state.curve and member.record.state.curve[-1]["step"] == step)]
    if not due:
        return
    loss, acc, mse = stacked.evaluate(losses, splits.x_val, splits.y_val, classification)
    for m in due:
        member = members[m]
        point = {"step": step, "val/loss": loss[m]}
        if classification:
            point["val/acc"] = acc[m]
        else:
            point["val/mse"] = mse[m]
        member.record.state.train_time_s = clock.total
        log_scalars(member.run.loggers, {k: v for k, v in point.items() if k != "step"}, step=step)
        if member.record.add_validation(point):
            _stop(member, stacked, m, step, clock)


def _grad_norms(members: list[Member], stacked: StackedModel, step: int) -> None:
    """Per-member gradient norms where the diagnostics log them: each member's gradients in its own module."""
    due = [(m, member) for m, member in enumerate(members)
           if member.active and member.diagnostics is not None and (step + 1) % member.diagnostics.grad_norm_every == 0]
    for m, member in due:
        for name, p in member.module.model.named_parameters():
            p.grad = stacked.params[name].grad[m]
        member.run.global_step = step
        member.diagnostics.on_before_optimizer_step(member.run, member.module, None)
        member.module.model.zero_grad(set_to_none=True)


def _finish(member: Member, splits: DataSplits, status: str, data_time: float, device: torch.device,
            group_size: int) -> dict[str, Any]:
    """End of run for one member, as train.fit ends one: diagnostics, HParams, metrics.json."""
    cfg = member.cfg
    with torch.no_grad():
        for name, p in member.module.model.named_parameters():
            p.copy_(member.final[name])
    member.run.global_step = member.stopped_at
    interrupted = status != "done"
    if member.diagnostics is not None and not interrupted:
        member.diagnostics.on_fit_end(member.run, member.module)
    if interrupted:
        close(member.run.loggers, "interrupted")
    # the member's own module on its final weights: the test split evaluated as its job alone evaluates it
    test = None if interrupted else measure_test(member.module, splits, device)
    # times are the group's: its members trained side by side (conv/*time* are not one job's alone)
    return finish_run(cfg, splits, member.record, member.diagnostics.layers if member.diagnostics else None,
                      member.run.loggers, member.run.global_step, "interrupted" if interrupted else None, data_time,
                      cfg.paths.tb_dir, device, extra={"vectorized": {"members": group_size}}, test=test,
                      hessian=member.diagnostics.hessian if member.diagnostics else None)
