"""Time a vectorized group next to the same jobs trained one after another in one process.

    python scripts/bench_vectorized.py                         # 16 seeds of the MLP 784-256-10 on Fashion-MNIST
    python scripts/bench_vectorized.py --members 32 --device cuda --json bench_vectorized.json   # the GPU target
    python scripts/bench_vectorized.py --tiny                  # digits, a few steps: proves it runs, times nothing

"sequential" is ``train(cfg)`` for each job in turn (data load from the cache, Lightning, init diagnostics,
TensorBoard: what a job of the basic launcher costs, minus Hydra's own composition); "vectorized" is
``train_group`` over the same configs (one data load). Rounds alternate the two, so a change in the machine's
load hits both; the table shows medians. Each vectorized member's loss_auc is checked against its sequential
twin's, so the two did the same work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from trainstudy.train import train
from trainstudy.vectorized import train_group

ROOT = Path(__file__).resolve().parents[1]
# The bench's MLP (one hidden layer of 256: 784-256-10) on the full Fashion-MNIST.
JOB = ["data=fashion_mnist", "model.depth=1", "model.width=256", "val_every_n_steps=50", "progress_bar=false"]
TINY = ["data=digits", "model.depth=1", "trainer.max_steps=6", "val_every_n_steps=3", "progress_bar=false"]


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def job_cfgs(overrides: list[str], members: int, out: Path) -> list[DictConfig]:
    """One config per seed, each with its own run folder and TensorBoard run under ``out``."""
    cfgs = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for seed in range(members):
            cfg = compose(config_name="config", overrides=[*overrides, f"seed={seed}"])
            with open_dict(cfg):
                cfg.paths.output_dir = str(out / str(seed))
                cfg.paths.tb_dir = str(out / "tb" / f"seed={seed}")
            cfgs.append(cfg)
    return cfgs


def outcome_drift(alone: list[dict], grouped: list[dict]) -> dict[str, float | int]:
    """How far float-level differences (a batched matmul sums in another order) move each member's outcomes."""
    def diff(key: str) -> float:
        return max(abs((a["metrics"].get(key) or 0) - (g["metrics"].get(key) or 0)) for a, g in zip(alone, grouped))

    steps = [(a["metrics"]["conv/steps_to_target"], g["metrics"]["conv/steps_to_target"])
             for a, g in zip(alone, grouped)]
    return {"max_best_acc_diff": diff("conv/best_val_acc"), "max_final_acc_diff": diff("conv/final_val_acc"),
            "reached_alone": sum(a is not None for a, _ in steps),
            "reached_differs": sum((a is None) != (g is None) for a, g in steps),
            "steps_differ": sum(a != g for a, g in steps),
            "max_steps_diff": max((abs(a - g) for a, g in steps if a is not None and g is not None), default=0)}


def timed(fn, *args) -> tuple[float, object]:  # noqa: ANN001
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=16, help="jobs (seeds 0..n-1) in the group (default: 16)")
    parser.add_argument("--steps", type=int, default=200, help="training steps per job (default: 200)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each (default: 3)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all, one per core)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TRAINSTUDY_DATA_DIR", "data")))
    parser.add_argument("--tiny", action="store_true", help="digits, 6 steps, one round: checks that it runs")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args, extra = parser.parse_known_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "trainstudy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec|litlogger|weights_only).*")

    accelerator = "gpu" if args.device == "cuda" else "cpu"
    overrides = [*(TINY if args.tiny else [*JOB, f"trainer.max_steps={args.steps}"]),
                 f"trainer.accelerator={accelerator}", f"data_dir={args.data_dir}", f"threads={args.threads or 'all'}",
                 *extra]
    rounds = 1 if args.tiny else args.rounds
    report: dict = {"command": " ".join(["python scripts/bench_vectorized.py", *argv]),
                    "device": torch.cuda.get_device_name() if args.device == "cuda"
                    else f"cpu ({platform.processor() or 'unknown'}, {os.cpu_count()} cores)",
                    "torch_threads": torch.get_num_threads(), "members": args.members, "overrides": overrides,
                    "load_average_before": load_average(), "sequential_s": [], "vectorized_s": []}
    with tempfile.TemporaryDirectory(prefix="trainstudy-bench-vectorized-") as tmp:
        job_cfgs(overrides, 1, Path(tmp) / "warmup")  # compose once before timing (Hydra's first use is slow)
        train(job_cfgs(overrides, 1, Path(tmp) / "warmup")[0])  # and fill the data cache, warm torch up
        for r in range(rounds):
            seq_s, seq = timed(lambda cfgs: [train(c) for c in cfgs],
                               job_cfgs(overrides, args.members, Path(tmp) / f"seq{r}"))
            vec_s, vec = timed(train_group, job_cfgs(overrides, args.members, Path(tmp) / f"vec{r}"))
            report["sequential_s"].append(seq_s)
            report["vectorized_s"].append(vec_s)
            print(f"round {r + 1}: sequential {seq_s:.2f} s, vectorized {vec_s:.2f} s "
                  f"(load {load_average()})", file=sys.stderr)
    report["load_average_after"] = load_average()
    report["max_loss_auc_rel_diff"] = max(
        abs(a["metrics"]["conv/loss_auc"] - b["metrics"]["conv/loss_auc"]) / abs(a["metrics"]["conv/loss_auc"])
        for a, b in zip(seq, vec))
    report["outcomes"] = outcome_drift(seq, vec)
    seq_m, vec_m = statistics.median(report["sequential_s"]), statistics.median(report["vectorized_s"])
    report["ratio"] = vec_m / seq_m
    print(f"| {args.members} jobs, {'6' if args.tiny else args.steps} steps each, {report['device']} "
          f"| median of {rounds} | vectorized / sequential |\n|---|---|---|\n"
          f"| sequential (train() per job, one process) | {seq_m:.2f} s | |\n"
          f"| vectorized (one train_group) | {vec_m:.2f} s | {report['ratio']:.2f}x |\n"
          f"load average {report['load_average_before']} before, {report['load_average_after']} after; "
          f"max relative loss_auc difference {report['max_loss_auc_rel_diff']:.1e}")
    o = report["outcomes"]
    print(f"outcomes, member vs its job alone: best val/acc differs by up to {o['max_best_acc_diff']:.4f}, "
          f"final val/acc by up to {o['max_final_acc_diff']:.4f}; target reached by one and not the other in "
          f"{o['reached_differs']} of {args.members} ({o['reached_alone']} reached alone); steps to target differ in "
          f"{o['steps_differ']} "
          f"(by up to {o['max_steps_diff']} steps)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
