"""What logging a step's scalars to TensorBoard costs the training thread: Lightning's TensorBoardLogger (torch's
SummaryWriter, tensorboard's writer thread) against trainstudy's (trainstudy.tbevents), median over rounds,
the writer's close included.

    OMP_NUM_THREADS=1 python scripts/tb_write_cost.py                 # train/loss; train/loss + train/lr
    OMP_NUM_THREADS=1 python scripts/tb_write_cost.py --calls 50000 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from lightning.pytorch.loggers import TensorBoardLogger as LightningLogger

from trainstudy.tbevents import TensorBoardLogger


def per_call(cls: type, keys: list[str], calls: int) -> float:
    """Microseconds per log_metrics call of ``keys``, over ``calls`` steps, finalize included."""
    with tempfile.TemporaryDirectory() as folder:
        logger = cls(folder, name="", version="", default_hp_metric=False, max_queue=1000)
        logger.experiment  # noqa: B018 - the file is opened before the clock starts
        t0 = time.perf_counter()
        for step in range(calls):
            logger.log_metrics({key: 0.5 + step * 1e-6 for key in keys}, step=step)
        logger.finalize("success")
        return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| scalars a step | Lightning's TensorBoardLogger | trainstudy.tbevents | x |")
    print("|---|---|---|---|")
    for keys in (["train/loss"], ["train/loss", "train/lr"]):
        times: dict[type, list[float]] = {LightningLogger: [], TensorBoardLogger: []}
        for _ in range(args.rounds):  # interleaved: both see the machine in the same state
            for cls in times:
                times[cls].append(per_call(cls, keys, args.calls))
        stock, ours = (statistics.median(times[c]) for c in (LightningLogger, TensorBoardLogger))
        print(f"| {', '.join(keys)} | {stock:.1f} us | {ours:.1f} us | {stock / ours:.1f} |")


if __name__ == "__main__":
    main()
