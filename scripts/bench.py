"""Time trainstudy next to a raw PyTorch loop and the usual DataLoader pattern, on the full Fashion-MNIST.

    python scripts/bench.py                          # MLP 784-256-10 at batch 128 and 512, LeNet at 128
    python scripts/bench.py --cases mlp-128 --rounds 5 --json bench.json
    python scripts/bench.py --tiny                   # a few hundred samples, one timed epoch: proves it runs
    python scripts/bench.py --extras                 # also: cached data loads, start-up, a sweep's cost per job
    python scripts/bench.py trainer.precision=bf16-mixed compile=true   # Hydra overrides, applied to every variant

Per round, each variant trains a warm-up epoch and --epochs timed ones, the order rotating from round to round;
the table shows medians. See src/trainstudy/bench.py for what each variant is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from trainstudy import bench, fixed_costs
from trainstudy.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY_SAMPLES = 300
# Jobs of the start-up and sweep figures: the bench's MLP on Fashion-MNIST, 100 steps, validation every 50.
JOB = ["data=fashion_mnist", "model.depth=1", "trainer.max_steps=100", "val_every_n_steps=50"]


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(c.name for c in bench.CASES),
                        help="comma-separated model-batch cases (default: %(default)s)")
    parser.add_argument("--variants", default=",".join(bench.VARIANTS), help="default: %(default)s")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant in turn (default: 3)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="timed epochs per round, after a warm-up epoch (default: 2, so 6 timed in all)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the dataloader variant")
    parser.add_argument("--threads", type=int, help="torch's CPU threads, raw loop and trainstudy alike (default: all, one per core)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TRAINSTUDY_DATA_DIR", "data")),
                        help="where Fashion-MNIST and the data cache are (default: $TRAINSTUDY_DATA_DIR or data)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"the first {TINY_SAMPLES} samples, one timed epoch: checks that it runs, times nothing")
    parser.add_argument("--extras", action="store_true",
                        help="also time cached data loads, start-up to the first step and a sweep's cost per job")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args, overrides = parser.parse_known_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "trainstudy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec|litlogger).*")

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = {c.name: c for c in bench.CASES}
    try:
        chosen = [cases[name] for name in args.cases.split(",")]
    except KeyError as e:
        print(f"error: unknown case {e}; choose from {', '.join(cases)}", file=sys.stderr)
        return 2
    variants = tuple(v for v in bench.VARIANTS if v in args.variants.split(","))
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    rounds, epochs = (1, 1) if args.tiny else (args.rounds, args.epochs)
    report: dict = {"command": " ".join(["python scripts/bench.py", *argv]), "load_average_before": load_average(),
                    "device": torch.cuda.get_device_name() if cuda else f"cpu: {cpu_name()}, {os.cpu_count()} cores",
                    "torch_threads": torch.get_num_threads(), "rounds": rounds, "timed_epochs_per_round": epochs,
                    "versions": {"torch": torch.__version__, "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="trainstudy-bench-") as tmp:
        work = Path(tmp)
        try:
            source = bench.find_fashion_mnist(args.data_dir)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        staged = bench.stage_fashion_mnist(source, work / "data", TINY_SAMPLES if args.tiny else None)
        print(f"Fashion-MNIST from {source}{f', first {TINY_SAMPLES} samples' if args.tiny else ''}; "
              f"{report['device']}, {torch.get_num_threads()} torch threads; {rounds} round(s) of a warm-up epoch and "
              f"{epochs} timed per variant; load average {report['load_average_before']}", flush=True)
        rows, report["cases"] = [], []
        for case in chosen:
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                cfg = compose(config_name="config", overrides=[
                    *case.overrides(), f"data_dir={staged}", f"trainer.accelerator={'gpu' if cuda else 'cpu'}",
                    f"threads={args.threads or 'all'}", *overrides])
            case_rows, agreement = bench.run_case(case, cfg, rounds, epochs, work / "runs", args.workers, variants)
            rows += case_rows
            raw = next((r for r in case_rows if r.variant == "raw"), None)
            report["cases"].append({"case": case.name, "overrides": [*case.overrides(), *overrides],
                                    "raw_vs_trainstudy_first_epoch_max_loss_diff": agreement,
                                    "rows": [bench.row_json(r, raw) for r in case_rows]})
            print(f"  {case.name} done" + (f" (raw and trainstudy first-epoch losses differ by at most "
                                           f"{agreement:.1e})" if agreement is not None else ""), flush=True)
        report["load_average_after"] = load_average()
        print()
        print(bench.table(rows))
        print(f"epoch s: median training time per epoch (trainstudy: its validation passes left out; 'with val s' "
              f"keeps them); x raw: the ratio of the medians; paired: the median of trainstudy's epoch over the "
              f"raw epoch timed next to it; cpu s: the process's CPU seconds per epoch (validation left out too); "
              f"peak mem: {'CUDA allocated' if cuda else 'process RSS'}. "
              f"load average {report['load_average_before']} -> {report['load_average_after']}")
        if args.extras:
            report["extras"] = extras(args.data_dir, work, quick=args.tiny)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.json}")
    return 0


def extras(data_dir: Path, work: Path, quick: bool = False) -> dict:
    """Cached data loads, start-up to the first training step, a sweep's per-job overhead; printed as they come.
    quick (with --tiny): one repeat each and a 2-job sweep, to prove it runs."""
    repeats, jobs = (1, 2) if quick else (5, 8)
    out: dict = {"load_average_before": load_average()}
    out["data_loads"] = fixed_costs.time_data_loads(CONF, data_dir, repeats)
    for name, figures in out["data_loads"].items():
        print(f"data load {name} ({figures['source']}): first in the process {figures['first_in_process_s']:.3f} s, "
              f"from the cache {figures['cached_median_s']:.3f} s (median), again in the same process "
              f"{figures['in_process_again_s']:.3f} s")
    out["startup"] = fixed_costs.time_startup(ROOT, data_dir, work, JOB, repeats)
    s = out["startup"]
    print(f"start-up to the first training step of `{s['command']}`: {s['first_step_s']:.2f} s vs "
          f"`python -c 'import torch, lightning'` {s['import_torch_lightning_s']:.2f} s = {s['ratio']:.2f}x (medians)")
    out["sweep"] = fixed_costs.time_sweep(ROOT, data_dir, work, JOB, jobs)
    w = out["sweep"]
    print(f"sweep `{w['command']}` (basic launcher): {w['wall_s']:.1f} s wall, {w['train_s']:.1f} s training; "
          f"{w['per_job_overhead_s']:.2f} s per job beyond training "
          f"({w['per_job_overhead_with_startup_s']:.2f} s with the process start-up spread over the jobs)")
    out["load_average_after"] = load_average()
    print(f"load average {out['load_average_before']} -> {out['load_average_after']}")
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
