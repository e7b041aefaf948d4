"""Signal propagation at step 0, measured on one batch: the quantities the mean-field papers predict.

- ``q``: the mean squared pre-activation of a layer (Poole et al. 2016's length q^l);
- ``c``: the mean cosine similarity between the batch's examples' pre-activations (their correlation c^l);
- the singular values of the Jacobian from the input to each layer's pre-activations, per example
  (Pennington et al. 2017): their mean square and their spread (near 0 spread = dynamical isometry);
- the loss Hessian's top eigenvalue, by power iteration on Hessian-vector products (the curvature that caps a
  stable SGD learning rate at 2/λ_max).

q and c are cheap and always measured; the Jacobian and the Hessian cost many forward/backward passes and
are measured under ``diagnostics=full``. All of them draw no random numbers from torch's global generator
and leave no gradients behind.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from trainstudy.inits import INIT_LAYERS

JACOBIAN_EXAMPLES = 8          # examples whose Jacobians are taken (each is out × in)
JACOBIAN_MAX_ENTRIES = 2**22   # a layer whose per-example Jacobian is bigger is skipped (None), and those after it
HESSIAN_MAX_ITER = 100
HESSIAN_TOL = 1e-3             # relative change of the eigenvalue estimate between iterations
HESSIAN_SEED = 0               # the power iteration's start vector comes from its own generator


def preact_q(pre: torch.Tensor) -> torch.Tensor:
    """Mean over examples and units of the squared pre-activation."""
    return pre.float().pow(2).mean()


def preact_c(pre: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of the pre-activations of every pair of distinct examples (NaN below 2)."""
    h = nn.functional.normalize(pre.flatten(1).float(), dim=1)
    n = h.shape[0]
    if n < 2:
        return torch.tensor(math.nan, device=pre.device)
    total = h.sum(0).pow(2).sum() - h.pow(2).sum()   # Σ_{a≠b} h_a·h_b, without the n × n matrix
    return total / (n * (n - 1))


def segments(model: nn.Sequential) -> list[nn.Sequential]:
    """The model cut after each Linear/Conv layer: segment l maps layer l-1's pre-activations to layer l's."""
    cut, current = [], []
    for child in model.children():
        current.append(child)
        if isinstance(child, INIT_LAYERS):
            cut.append(nn.Sequential(*current))
            current = []
    return cut


def jacobian_spectra(model: nn.Sequential, x: torch.Tensor,
                     examples: int = JACOBIAN_EXAMPLES) -> list[dict[str, float | None]]:
    """Per Linear/Conv layer, the mean squared singular value and the std of the singular values of
    ∂(its pre-activations)/∂(input), over ``examples`` examples of ``x``. A layer's Jacobian is the previous
    one times its own segment's (torch.func.jacrev, vmapped over examples)."""
    h = x[:examples].detach()
    inputs = h[0].numel()
    jac = None  # examples × out × inputs; None before the first layer (the identity)
    layers = segments(model)
    rows: list[dict[str, float | None]] = []
    for segment in layers:
        out = segment(h).detach()
        if out[0].numel() * max(h[0].numel(), inputs) > JACOBIAN_MAX_ENTRIES:
            break
        local = vmap(jacrev(lambda v, s=segment: s(v.unsqueeze(0)).squeeze(0)))(h).detach()
        local = local.reshape(h.shape[0], out[0].numel(), h[0].numel())
        jac = local if jac is None else local @ jac
        sv = torch.linalg.svdvals(jac.double())
        rows.append({"jac_sv_mean_sq": float(sv.pow(2).mean()), "jac_sv_std": float(sv.std())})
        h = out
    return rows + [{"jac_sv_mean_sq": None, "jac_sv_std": None} for _ in range(len(layers) - len(rows))]


def hessian_max_eig(model: nn.Module, loss: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    max_iter: int = HESSIAN_MAX_ITER, tol: float = HESSIAN_TOL) -> dict[str, Any]:
    """The top eigenvalue of the Hessian of the batch loss in all parameters, by power iteration on
    Hessian-vector products (forward-over-reverse, torch.func). Power iteration finds the eigenvalue of largest
    magnitude; when that one is negative, a second run on H − λI finds the top one.

    Returns ``max_eig``, ``iterations`` (Hessian-vector products in all), ``tol`` and ``converged``.
    """
    params = {k: p.detach() for k, p in model.named_parameters()}

    def batch_loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss(functional_call(model, p, (x,)), y)

    gradient = grad(batch_loss)

    def hvp(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return jvp(gradient, (params,), (v,))[1]

    generator = torch.Generator(device=x.device).manual_seed(HESSIAN_SEED)
    start = {k: torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for k, p in params.items()}
    eig, used, converged = _power(hvp, start, 0.0, max_iter, tol)
    if eig < 0:  # the largest |λ| is negative: shift it to 0 and find the top of the rest
        top, more, converged = _power(hvp, start, eig, max_iter, tol)
        eig, used = top + eig, used + more
    return {"max_eig": eig, "iterations": used, "tol": tol, "converged": converged}


def _power(hvp: Any, v: dict[str, torch.Tensor], shift: float, max_iter: int, tol: float) -> tuple[float, int, bool]:
    """Power iteration on H − shift·I: (its dominant eigenvalue, iterations, whether it converged)."""
    v = _unit(v)
    eig = math.nan
    for i in range(1, max_iter + 1):
        hv = hvp(v)
        hv = {k: hv[k] - shift * v[k] for k in v}
        new = float(sum((hv[k] * v[k]).sum() for k in v))  # Rayleigh quotient
        if not math.isfinite(new):
            return new, i, False
        done = math.isfinite(eig) and abs(new - eig) <= tol * abs(new)
        eig, v = new, _unit(hv)
        if done:
            return eig, i, True
    return eig, max_iter, False


def _unit(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    norm = torch.sqrt(sum(t.pow(2).sum() for t in v.values()))
    return {k: t / norm for k, t in v.items()}


def full_diagnostics(model: nn.Sequential, loss: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``diagnostics=full``'s costly measurements: the Jacobian spectra into ``rows`` (one per layer, as
    layer_statistics returns them) and the Hessian's top eigenvalue, returned."""
    for row, spectrum in zip(rows, jacobian_spectra(model, x)):
        row.update(spectrum)
    return hessian_max_eig(model, loss, x, y)
