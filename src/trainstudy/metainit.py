"""MetaInit (Dauphin & Schoenholz 2019): learn each weight tensor's norm so that a gradient step looks linear.

The gradient quotient of parameters θ with gradient g and Hessian H, on a batch,

    GQ(θ) = 1/N · Σ_i |(g_i − (Hg)_i) / g_i − 1|,     N = number of parameters,

is small where the gradient after a step of size 1, g(θ − g) ≈ g − Hg, is still the gradient: a region with
little curvature to trip the first steps. MetaInit keeps each weight tensor's direction and learns its norm
(one scalar per tensor with ≥ 2 dims; biases stay as they are, but count in GQ) by sign-SGD with momentum on
GQ over fresh random batches: x ~ N(0, 1), random targets. The paper's defaults: lr 0.1, momentum 0.9,
500 steps, ε = 1e-5 (g_i's sign times ε keeps the quotient finite). Hg is a Hessian-vector product
(torch.func, the gradient of ||g||²/2), GQ's gradient one more reverse pass over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value

from trainstudy.layerwise import init_layers
from trainstudy.loggers import log_scalars

Params = dict[str, torch.Tensor]


@dataclass
class RandomTask:
    """What MetaInit learns on, data-free: inputs x ~ N(0, 1) of the data's shape, targets drawn at random in the
    loss's form (a class index, or N(0, 1) values for regression), and the run's own loss."""

    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    input_shape: tuple[int, ...]
    num_classes: int | None = None  # None: regression, targets of target_dim values
    target_dim: int = 1

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(batch_size, *self.input_shape)
        if self.num_classes is None:
            return x, torch.randn(batch_size, self.target_dim)
        return x, torch.randint(0, self.num_classes, (batch_size,))

    @classmethod
    def for_model(cls, model: nn.Module) -> RandomTask:
        """Without a run (scripts/inspect_init.py): cross entropy on random labels over the model's outputs, as
        the paper's code does; the input size read off the first Linear layer."""
        layers = [layer for _, layer in init_layers(model)]
        if not isinstance(layers[0], nn.Linear):
            raise ValueError("RandomTask.for_model reads the input size off a Linear first layer")
        return cls(nn.functional.cross_entropy, (layers[0].in_features,), layers[-1].out_features)


@dataclass
class MetaInitLog:
    """What MetaInit did: GQ before each step (and after the last), the norms before and after, its time."""

    quotients: list[float] = field(default_factory=list)
    norms_before: dict[str, float] = field(default_factory=dict)
    norms_after: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        """For metrics.json: the curve, the norms, the steps and the seconds."""
        return {"steps": len(self.quotients) - 1, "seconds": self.seconds, "gradient_quotient": self.quotients,
                "norms_before": self.norms_before, "norms_after": self.norms_after}


def gradient_quotient(loss_of: Callable[[Params], torch.Tensor], params: Params, eps: float = 1e-5) -> torch.Tensor:
    """GQ = mean over every parameter of |(g − Hg) / (g + ε·sign(g)) − 1|, sign(0) taken as +1 (see the module)."""
    g = grad(loss_of)(params)
    # H·g as the gradient of ||g||²/2 (reverse over reverse, as the paper's code; forward-over-reverse, jvp,
    # fails in the outer backward pass through MSE, whose third derivative torch holds as an immutable zero)
    hg = grad(lambda theta: sum((gk**2).sum() for gk in grad(loss_of)(theta).values()) / 2)(params)
    total = sum(((g[k] - hg[k]) / (g[k] + eps * torch.where(g[k] >= 0, 1.0, -1.0).detach()) - 1).abs().sum()
                for k in params)
    return total / sum(p.numel() for p in params.values())


def learn_norms(model: nn.Module, task: RandomTask | None, steps: int = 500, lr: float = 0.1,
                momentum: float = 0.9, eps: float = 1e-5, batch_size: int = 32) -> MetaInitLog:
    """MetaInit on ``model`` in place: each weight tensor's norm r learned by r ← r + v, v ← momentum·v − lr·sign(∂GQ/∂r),
    its direction kept. Returns the log; every random draw comes from torch's global generator (the run's seed)."""
    task = task or RandomTask.for_model(model)
    start = time.perf_counter()
    params = {k: p.detach() for k, p in model.named_parameters()}
    learned = [k for k, p in params.items() if p.dim() >= 2 and p.norm() > 0]  # a zero tensor has no direction
    directions = {k: params[k] / params[k].norm() for k in learned}
    norms = {k: params[k].norm() for k in learned}
    velocity = dict.fromkeys(learned, 0.0)
    log = MetaInitLog(norms_before={k: float(r) for k, r in norms.items()})

    def quotient_of(norms: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def loss_of(theta: Params) -> torch.Tensor:
            return task.loss(functional_call(model, theta, (x,)), y)

        return gradient_quotient(loss_of, {**params, **{k: norms[k] * directions[k] for k in learned}}, eps)

    was_training = model.training
    model.eval()
    try:
        for _ in range(steps):
            x, y = task.draw(batch_size)
            slopes, quotient = grad_and_value(quotient_of)(norms, x, y)
            log.quotients.append(float(quotient))
            for k in learned:  # sign-SGD with momentum, on the norm
                velocity[k] = momentum * velocity[k] - lr * float(torch.sign(slopes[k]))
                norms[k] = norms[k] + velocity[k]
                if norms[k] < 0:  # a norm is positive: past zero, the tensor flips sign (as the paper's code does)
                    norms[k], directions[k] = -norms[k], -directions[k]
        log.quotients.append(float(quotient_of(norms, *task.draw(batch_size))))
    finally:
        model.train(was_training)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in norms:
                p.copy_(norms[name] * directions[name])
    log.norms_after = {k: float(r) for k, r in norms.items()}
    log.seconds = time.perf_counter() - start
    return log


def log_curve(loggers: list, log: MetaInitLog) -> None:
    """The meta-loss curve to every logger: metainit/gradient_quotient per meta-step (its own step axis, 0 to the
    last), metainit/seconds once."""
    for step, quotient in enumerate(log.quotients):
        log_scalars(loggers, {"metainit/gradient_quotient": quotient}, step)
    log_scalars(loggers, {"metainit/seconds": log.seconds}, 0)
