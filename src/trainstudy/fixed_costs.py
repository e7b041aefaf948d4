"""The fixed costs of a run, next to its training: a cached data load, start-up to the first training step,
and what each job of a sweep costs beyond its training (``scripts/bench.py --extras`` prints them)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from trainstudy.data import forget_last_load, load_data


def time_data_loads(conf: Path, data_dir: Path, repeats: int = 5) -> dict[str, dict[str, float | str]]:
    """Seconds to load each dataset from the decoded-array cache in data_dir (the first load of the process also
    pays for cold files and lazy imports; with no cache yet it decodes), and again in the same process."""
    out: dict[str, dict[str, float | str]] = {}
    datasets = (("fashion_mnist", "fashion_mnist", {}), ("mnist bundled", "mnist", {"source": "bundled"}))
    for label, name, extra in datasets:
        cfg = OmegaConf.merge(OmegaConf.load(conf / "data" / f"{name}.yaml"), extra)
        times = []
        for _ in range(repeats + 1):
            forget_last_load()
            t0 = time.perf_counter()
            splits = load_data(cfg, data_dir)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_data(cfg, data_dir)
        again = time.perf_counter() - t0
        out[label] = {"source": splits.source, "first_in_process_s": times[0],
                      "cached_median_s": statistics.median(times[1:]), "in_process_again_s": again}
    return out


# Runs train.py as it is, but ends the process at the first training step and prints the time it got there.
FIRST_STEP = """
import os, runpy, sys, time
from trainstudy.module import StudyModule

def first_step(*args, **kwargs):
    print(f"first training step at {time.time():.6f}", flush=True)
    os._exit(0)

StudyModule.training_step = first_step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _launch(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds from launching argv to its exit, or to the first training step it prints."""
    t0 = time.time()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    end = time.time()
    marks = [line for line in proc.stdout.splitlines() if line.startswith("first training step at ")]
    if marks:
        end = float(marks[-1].rsplit(" ", 1)[1])
    elif proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return end - t0


def time_startup(root: Path, data_dir: Path, work_dir: Path, args: list[str], repeats: int = 5) -> dict[str, Any]:
    """Process start to the first training step of ``python train.py args``, next to ``import torch, lightning``.

    The two are launched in turn, ``repeats`` times each; medians.
    """
    env = {**os.environ, "TRAINSTUDY_DATA_DIR": str(data_dir)}
    run = [sys.executable, "-c", FIRST_STEP, str(root / "train.py"), *args, f"hydra.run.dir={work_dir}/startup"]
    base = [sys.executable, "-c", "import torch, lightning"]
    _launch(run, work_dir, env)  # warms the data cache and the OS's file cache
    runs, bases = [], []
    for _ in range(repeats):
        bases.append(_launch(base, work_dir, env))
        runs.append(_launch(run, work_dir, env))
    return {"command": f"python train.py {' '.join(args)}", "first_step_s": statistics.median(runs),
            "import_torch_lightning_s": statistics.median(bases),
            "ratio": statistics.median(runs) / statistics.median(bases), "first_step_all_s": runs,
            "import_all_s": bases}


def time_sweep(root: Path, data_dir: Path, work_dir: Path, args: list[str], jobs: int = 8) -> dict[str, Any]:
    """A basic-launcher sweep's cost per job beyond training: (wall - training time) of an n-job sweep minus a
    1-job sweep's, over n - 1 jobs (so the process's own start-up does not count)."""
    env = {**os.environ, "TRAINSTUDY_DATA_DIR": str(data_dir)}
    measured = {}
    for n in (1, jobs):
        sweep_dir = work_dir / f"sweep{n}"
        argv = [sys.executable, str(root / "train.py"), "-m", *args, f"seed={','.join(map(str, range(n)))}",
                f"hydra.sweep.dir={sweep_dir}"]
        wall = _launch(argv, work_dir, env)
        train_s = [json.loads(p.read_text())["metrics"]["conv/train_time_s"] for p in sweep_dir.glob("*/metrics.json")]
        if len(train_s) != n:
            raise RuntimeError(f"sweep of {n} left {len(train_s)} metrics.json files")
        measured[n] = (wall, sum(train_s))
    (wall1, train1), (wall_n, train_n) = measured[1], measured[jobs]
    return {"command": f"python train.py -m {' '.join(args)} seed=0,...,{jobs - 1}", "jobs": jobs,
            "wall_s": wall_n, "train_s": train_n, "wall_1_job_s": wall1, "train_1_job_s": train1,
            "per_job_overhead_s": ((wall_n - train_n) - (wall1 - train1)) / (jobs - 1),
            "per_job_overhead_with_startup_s": (wall_n - train_n) / jobs}
