"""What a checkpoint save and a set of weight histograms cost, trainstudy's way next to the stock one, side by side
in one process (interleaved, medians over rounds):

- a save of the bench's MLP (784-256-10, SGD with momentum: a 1.6 MB checkpoint) through Lightning's
  TorchCheckpointIO and through trainstudy's LocalCheckpointIO, each to a new file, then removed (as
  ModelCheckpoint replaces its best file);
- the checkpoint's tensor checksum, sha256 against CRC-32C;
- one set of weight histograms of the digits MLP (64-256-256-10) and of the bench's MLP: torch.histc against
  trainstudy's bincount of the same buckets.

    OMP_NUM_THREADS=1 python scripts/io_cost.py
    OMP_NUM_THREADS=1 python scripts/io_cost.py --rounds 200
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from trainstudy.checkpoint_io import LocalCheckpointIO
from trainstudy.diagnostics import HISTOGRAM_BINS, weight_histogram
from trainstudy.inits import init_layers
from trainstudy.models import mlp
from trainstudy.resume import tensor_checksum


def bench_checkpoint() -> dict:
    """The shape of a run's checkpoint: weights, SGD momentum buffers, a step count."""
    model = mlp(784, 10, depth=1, width=256, activation="relu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(8, 784)).sum().backward()
    optimizer.step()
    return {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()], "global_step": 1000}


def histc_histogram(weight: torch.Tensor, bins: int = HISTOGRAM_BINS) -> list[float]:
    """The buckets as trainstudy counted them before: torch.histc (the rest of weight_histogram as it is)."""
    w = weight.detach().float().flatten()
    lo, hi, _, _ = torch.stack([w.min(), w.max(), w.sum(), (w * w).sum()]).tolist()
    torch.linspace(lo, hi, bins + 1, dtype=torch.float64)[1:].tolist()
    return torch.histc(w, bins=bins, min=lo, max=hi).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    checkpoint = bench_checkpoint()
    digits = [layer.weight for _, layer in init_layers(mlp(64, 10, depth=2, width=256, activation="relu"))]
    fashion = [layer.weight for _, layer in init_layers(mlp(784, 10, depth=1, width=256, activation="relu"))]
    with tempfile.TemporaryDirectory() as folder:
        def save(io: TorchCheckpointIO) -> Callable[[int], None]:
            def run(i: int) -> None:
                path = Path(folder) / f"{type(io).__name__}-{i}.ckpt"
                io.save_checkpoint(checkpoint, path)
                io.remove_checkpoint(path)
            return run

        cases: dict[str, Callable[[int], object]] = {
            "save + remove, Lightning's TorchCheckpointIO": save(TorchCheckpointIO()),
            "save + remove, trainstudy's LocalCheckpointIO": save(LocalCheckpointIO()),
            "tensor checksum, sha256": lambda i: tensor_checksum(checkpoint, "sha256"),
            "tensor checksum, CRC-32C": lambda i: tensor_checksum(checkpoint, "crc32c"),
            "histograms of 64-256-256-10, torch.histc": lambda i: [histc_histogram(w) for w in digits],
            "histograms of 64-256-256-10, bincount": lambda i: [weight_histogram(w) for w in digits],
            "histograms of 784-256-10, torch.histc": lambda i: [histc_histogram(w) for w in fashion],
            "histograms of 784-256-10, bincount": lambda i: [weight_histogram(w) for w in fashion],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for i in range(args.rounds):
            for name, case in cases.items():
                t0 = time.perf_counter()
                case(i)
                times[name].append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} rounds, medians:")
    for name, values in times.items():
        print(f"  {name:48s} {statistics.median(values) * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
