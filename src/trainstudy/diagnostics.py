"""The literature's pictures of initialization, made by every run.

At step 0, on one training batch: per Linear/Conv layer the mean and std of its pre-activations and of
the activations after it, and the std and norm of its weight gradient — logged with the layer number as
the TensorBoard step, so TensorBoard draws std against depth (Glorot & Bengio 2010, fig. 3 and 6;
He et al. 2015, fig. 2). Next to them, the weight std measured against the std the strategy aims for.
During training: per-layer gradient norms at an interval (Lightning's ``grad_norm``) and weight histograms at
about HISTOGRAM_POINTS evenly spaced steps, so TensorBoard's Distributions draws how the weights move rather
than a straight fan between init and end. At the end: each hidden layer's numerical rank, where a symmetric
(constant) init shows as rank 1. Layers are named everywhere by the number ``init/*`` uses as its step
(1 = the first Linear/Conv, in forward order): ``grad/1/weight``, ``grad/1/bias``, ``grad/total``, ``weights/1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import grad_norm
from torch import nn

from trainstudy.inits import INIT_LAYERS, init_layers
from trainstudy.loggers import log_scalars
from trainstudy.losses import StudyLoss
from trainstudy.models import ACTIVATIONS
from trainstudy.signalprop import full_diagnostics, preact_c, preact_q

ACTIVATION_TYPES = tuple({type(make()) for make in ACTIVATIONS.values()})
HISTOGRAM_LIMIT = 1e20  # weights beyond this are not histogrammed (a diverging init.std=1e30 run)
HISTOGRAM_POINTS = 10  # weight histograms during training: about this many, at a round interval (histogram_every)
HISTOGRAM_BINS = 64    # equal-width buckets from the weights' min to max (torch.histc)


def weight_histogram(weight: torch.Tensor, bins: int = HISTOGRAM_BINS) -> dict[str, Any] | None:
    """The arguments of SummaryWriter.add_histogram_raw for ``weight``: ``bins`` equal buckets over [min, max]
    (torch.histc's) counted on the weight's device, with one host sync. SummaryWriter.add_histogram copies the
    tensor to numpy and fills ~1,500 exponential buckets, and its writer thread then serializes them all: with it
    the default run in ``scripts/bench.py --cases mlp-128`` (two threads, 6 sets in the run) took 1.40-1.56x the
    raw loop's epoch, with this 1.07-1.19x (three runs each, alternating). One bucket where every weight is
    equal (a constant init); None where a weight is not finite or beyond HISTOGRAM_LIMIT (a diverging run,
    whose histogram would say nothing)."""
    w = weight.detach().float().flatten()
    lo, hi, total, squares = torch.stack([w.min(), w.max(), w.sum(), (w * w).sum()]).tolist()
    if not (-HISTOGRAM_LIMIT <= lo <= hi <= HISTOGRAM_LIMIT):  # False for NaN too
        return None
    if hi > lo:  # torch.histc's buckets, with its formula; bincount counts them in 0.6 ms where histc takes
        # 1.6 ms (200,704 weights, CPU)
        index = ((w - lo) * bins / (hi - lo)).to(torch.int64).clamp_(max=bins - 1)
        counts = torch.bincount(index, minlength=bins).float().tolist()
        limits = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)[1:].tolist()
    else:
        counts, limits = [float(w.numel())], [hi]
    return {"min": lo, "max": hi, "num": w.numel(), "sum": total, "sum_squares": squares,
            "bucket_limits": limits, "bucket_counts": counts}


def histogram_every(planned_steps: float) -> int | None:
    """The interval of the weight histograms: planned_steps / HISTOGRAM_POINTS rounded up to 1, 2 or 5 x 10^k
    (355 steps: every 50); None for a run without a planned end (it gets them at init and at the end)."""
    if not math.isfinite(planned_steps) or planned_steps < 1:
        return None
    raw = planned_steps / HISTOGRAM_POINTS
    return next(k * 10 ** e for e in range(16) for k in (1, 2, 5) if k * 10 ** e >= raw)


def layer_names(model: nn.Module) -> dict[str, str]:
    """Each Linear/Conv parameter's name in the model (``1.weight``) to its layer-numbered one (``1/weight``)."""
    return {f"{name}.{kind}": f"{index}/{kind}" for index, (name, layer) in enumerate(init_layers(model), start=1)
            for kind in ("weight", "bias") if getattr(layer, kind, None) is not None}


def _activation_after(model: nn.Module, layer: nn.Module) -> nn.Module | None:
    """The activation module that follows ``layer`` in a Sequential model (None for the output layer)."""
    children = list(model.children())
    if layer not in children:
        return None
    for child in children[children.index(layer) + 1:]:
        if isinstance(child, ACTIVATION_TYPES):
            return child
        if isinstance(child, INIT_LAYERS):
            return None
    return None


def layer_statistics(model: nn.Module, loss: StudyLoss, x: torch.Tensor, y: torch.Tensor,
                     weight_std_target: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Forward and backward on one batch; one dict of statistics per Linear/Conv layer, in forward order.

    Leaves no gradients behind and draws no random numbers: training goes on exactly as without it.
    """
    layers = list(init_layers(model))
    seen: dict[str, dict[str, torch.Tensor]] = {name: {} for name, _ in layers}
    handles = []
    for name, layer in layers:
        handles.append(layer.register_forward_hook(
            lambda _m, _i, out, name=name: seen[name].__setitem__("preact", out.detach())))
        act = _activation_after(model, layer)
        if act is not None:
            handles.append(act.register_forward_hook(
                lambda _m, _i, out, name=name: seen[name].__setitem__("act", out.detach())))
    try:
        model.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    rows = []
    for index, (name, layer) in enumerate(layers, start=1):
        pre = seen[name]["preact"]
        act = seen[name].get("act", pre)
        grad = layer.weight.grad
        target = (weight_std_target or {}).get(name)
        rows.append({
            "index": index, "name": name, "kind": type(layer).__name__,
            "preact_mean": pre.mean(), "preact_std": pre.std(), "q": preact_q(pre), "c": preact_c(pre),
            "act_mean": act.mean(), "act_std": act.std(),
            "grad_std": grad.std(), "grad_norm": grad.norm(),
            "weight_std": layer.weight.detach().std(),
            "weight_std_target": target,
        })
    model.zero_grad(set_to_none=True)
    # one host sync for the whole table
    keys = [k for k, v in rows[0].items() if isinstance(v, torch.Tensor)]
    values = torch.stack([torch.stack([r[k].float() for k in keys]) for r in rows]).tolist()
    for row, vals in zip(rows, values):
        row.update(zip(keys, vals))
    return rows


def weight_ranks(model: nn.Module) -> dict[str, int | None]:
    """Numerical rank (torch.linalg.matrix_rank's default tolerance) of each hidden layer's weight matrix.

    None for a weight that is no longer finite (a diverged run): it has no rank to speak of.
    """
    ranks: dict[str, int | None] = {}
    for name, layer in list(init_layers(model))[:-1]:
        w = layer.weight.detach().flatten(1).float()
        ranks[name] = int(torch.linalg.matrix_rank(w)) if torch.isfinite(w).all() else None
    return ranks


class InitDiagnostics(Callback):
    """Step-0 layer statistics, gradient norms every ``grad_norm_every`` steps, weight histograms at init, every
    ``histogram_every`` steps and at the end, end-of-run ranks."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, weight_std_target: dict[str, float | None],
                 grad_norm_every: int = 50, end_logged_at: int | None = None, histogram_every: int | None = None,
                 untimed: Callable[[L.LightningModule], AbstractContextManager[None]] | None = None,
                 full: bool = False):
        self.x, self.y, self.targets = x, y, weight_std_target
        self.full, self.hessian = full, None  # diagnostics=full: Jacobian spectra and the Hessian (signalprop)
        self.grad_norm_every = grad_norm_every
        self.histogram_every = histogram_every  # None: histograms at init and at the end only
        # the training clock's pause (ConvergenceTracker.untimed): histograms are not training time
        self.untimed = untimed or (lambda _module: nullcontext())
        # a resumed run that already logged its end at this step (and trains no further) logs it once
        self.end_logged_at = end_logged_at
        self.layers: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "hessian": self.hessian}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.layers, self.hessian = state_dict["layers"], state_dict.get("hessian")

    def _tensorboard(self, trainer: L.Trainer) -> Any | None:
        experiments = (getattr(logger, "experiment", None) for logger in trainer.loggers)
        return next((e for e in experiments if hasattr(e, "add_histogram")), None)  # TensorBoard's, wherever it is

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.layers:  # resumed: step 0 is behind us
            return
        x, y = self.x.to(module.device), self.y.to(module.device)
        self.layers = layer_statistics(module.model, module.loss, x, y, self.targets)
        if self.full:
            self.hessian = full_diagnostics(module.model, module.loss, x, y, self.layers)
            log_scalars(trainer.loggers, {f"init/hessian_{k}": float(v) for k, v in self.hessian.items()}, step=0)
        for row in self.layers:
            log_scalars(trainer.loggers,
                        {f"init/{k}": v for k, v in row.items() if k not in ("index", "name", "kind") and v is not None},
                        step=row["index"])
        self._histograms(trainer, module, step=0)

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule, optimizer: Any) -> None:
        done = trainer.global_step  # the weights now are those after this many updates
        step = done + 1  # the update about to happen
        if step % self.grad_norm_every == 0 and trainer.loggers:
            norms = grad_norm(module.model, norm_type=2)  # {"grad_2.0_norm/1.weight": ..., "grad_2.0_norm_total": ...}
            names = layer_names(module.model)
            params = [k.split("/", 1)[-1] for k in norms]
            keys = ["grad/total" if k.endswith("_total") else f"grad/{names.get(p, p)}" for k, p in zip(norms, params)]
            values = torch.stack([v.float() for v in norms.values()]).tolist()  # one host sync
            log_scalars(trainer.loggers, dict(zip(keys, values)), step)
        if self.histogram_every and done and done % self.histogram_every == 0 and trainer.loggers:
            with self.untimed(module):
                self._histograms(trainer, module, step=done)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # after on_train_end, where the tracker stops the training clock: not counted as training time
        ranks = weight_ranks(module.model)
        log = bool(trainer.loggers) and trainer.global_step != self.end_logged_at
        for row in self.layers:
            row["weight_rank"] = ranks.get(row["name"])
            if row["weight_rank"] is not None and log:
                log_scalars(trainer.loggers, {"diag/weight_rank": row["weight_rank"]}, step=row["index"])
        if log:  # the last step's weights: no update follows them, so the interval's hook never logged them
            self._histograms(trainer, module, step=trainer.global_step)

    def _histograms(self, trainer: L.Trainer, module: L.LightningModule, step: int) -> None:
        tb = self._tensorboard(trainer)
        if tb is None:
            return
        for index, (_, layer) in enumerate(init_layers(module.model), start=1):
            if (histogram := weight_histogram(layer.weight)) is not None:
                tb.add_histogram_raw(f"weights/{index}", **histogram, global_step=step)
