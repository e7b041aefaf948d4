"""What the step-0 diagnostics cost: diagnostics=default's statistics (q and c among them) and what
diagnostics=full adds (the Jacobian spectra and the Hessian's top eigenvalue), best of several repeats.

    python scripts/diagnostics_cost.py                          # the default MLP on MNIST's shape, batch 128
    python scripts/diagnostics_cost.py --depth 20 --inputs 64   # deeper, on the digits' 8x8 inputs
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from omegaconf import OmegaConf

from trainstudy.diagnostics import layer_statistics
from trainstudy.losses import build_loss
from trainstudy.models import mlp
from trainstudy.signalprop import full_diagnostics, preact_c, preact_q


def best(f: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=784)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = mlp(args.inputs, 10, args.depth, args.width, "relu")
    x, y = torch.randn(args.batch, args.inputs), torch.randint(0, 10, (args.batch,))
    loss = build_loss(OmegaConf.create({"name": "ce", "criterion": {"_target_": "torch.nn.CrossEntropyLoss"}}),
                      "multiclass", 10)
    t0 = time.perf_counter()
    full_diagnostics(model, loss, x, y, layer_statistics(model, loss, x, y))
    first = time.perf_counter() - t0  # torch.func's first use in a process loads more of torch
    statistics = best(lambda: layer_statistics(model, loss, x, y), args.repeats)
    preacts = [m.detach() for m in _preacts(model, x)]
    q_and_c = best(lambda: [(preact_q(p), preact_c(p)) for p in preacts], args.repeats)
    full = best(lambda: full_diagnostics(model, loss, x, y, layer_statistics(model, loss, x, y)), args.repeats)
    print(f"MLP {args.inputs}-{args.width}x{args.depth}-10, batch {args.batch}, {torch.get_num_threads()} thread(s), "
          f"best of {args.repeats}: diagnostics=default {statistics * 1e3:.1f} ms (q and c {q_and_c * 1e3:.2f} ms of "
          f"it) · diagnostics=full {full * 1e3:.0f} ms ({first:.2f} s the first time in a process)")
    return 0


def _preacts(model: torch.nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    out, h = [], x
    with torch.no_grad():
        for layer in model:
            h = layer(h)
            if isinstance(layer, torch.nn.Linear):
                out.append(h)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
