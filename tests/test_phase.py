"""experiment=edge_of_chaos and the report's trainability phase diagram (Schoenholz et al. 2017, fig. 6): the grid
read back from job folders, the theory's 6 ξ_c drawn over it, the preset's vectorized groups, and (slow) the
preset at a reduced grid trained for real on Fashion-MNIST."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, make_cfg
from matplotlib.image import imread
from scipy.optimize import brentq
from test_report import write_job, write_multirun_yaml
from test_sweeps import preset_params

from trainstudy import datasets, meanfield
from trainstudy.report import build_report, render, write_report
from trainstudy.report.phase import MULTIPLE, phase_diagram, phase_figure, phase_rows
from trainstudy.vectorized import group_key, solo_reason

SIGMAS, DEPTHS, SEEDS = ["1.0", "1.76", "4.0"], ["5", "40"], [0, 1]


def best_of(sigma: float, depth: int, seed: int) -> float:
    """Made-up best val/acc of a job: trainable near the edge, not deep in the ordered or chaotic phase."""
    return round(0.9 - 0.002 * depth * abs(sigma - 1.76) + 0.01 * seed, 4)


def phase_sweep(root: Path, init: str = "mean_field", extra: list[str] | None = None) -> Path:
    write_multirun_yaml(root, [f"init.sigma_w2={','.join(SIGMAS)}", f"model.depth={','.join(DEPTHS)}", "seed=0,1",
                               *(extra or [])])
    n = 0
    for sigma in SIGMAS:
        for depth in DEPTHS:
            for seed in SEEDS:
                overrides = [f"init={init}", f"init.sigma_w2={sigma}", f"model.depth={depth}", f"seed={seed}",
                             *(extra or [])]
                folder = root / str(n)
                n += 1
                result = write_job(folder, overrides, best=best_of(float(sigma), int(depth), seed))
                result["hparams"].update({"activation": "tanh", "init.sigma_w2": float(sigma), "init.sigma_b2": 0.05,
                                          "depth": int(depth)})
                (folder / "metrics.json").write_text(json.dumps(result))
    return root


def test_the_grid_is_each_cells_mean_over_seeds_with_the_theory(tmp_path: Path) -> None:
    phase = phase_diagram(build_report(phase_sweep(tmp_path / "sweep")))
    assert phase is not None
    assert phase.sigma_w2 == [1.0, 1.76, 4.0] and phase.depths == [5, 40]
    for i, d in enumerate(phase.depths):
        for j, s in enumerate(phase.sigma_w2):
            assert phase.values[i, j] == pytest.approx(np.mean([best_of(s, d, seed) for seed in SEEDS]))
            assert phase.seeds[i, j] == 2
    assert (phase.activation, phase.sigma_b2) == ("tanh", 0.05)
    assert phase.critical == pytest.approx(brentq(lambda w: meanfield.theory("tanh", w, 0.05).chi_1 - 1, 1.2, 3.0),
                                           abs=1e-6)
    assert phase.xi_c(1.0) == pytest.approx(3.627, abs=1e-3)  # tanh at sigma_b2 0.05, sigma_w2 1 (issue 13)


def test_the_figure_draws_6_xi_c_over_the_heatmap(tmp_path: Path) -> None:
    phase = phase_diagram(build_report(phase_sweep(tmp_path / "sweep")))
    fig = phase_figure(phase)
    ax = fig.axes[0]
    bound = next(line for line in ax.lines if "ξ_c" in str(line.get_label()))
    xs, ys = bound.get_xdata(), bound.get_ydata()
    for k in (0, 100, 399):
        assert ys[k] == pytest.approx(MULTIPLE * meanfield.theory("tanh", xs[k], 0.05).xi_c)
    assert xs[0] < 1.0 and xs[-1] > 4.0  # across the whole grid
    edge = next(line for line in ax.lines if "edge of chaos" in str(line.get_label()))
    assert edge.get_xdata()[0] == pytest.approx(phase.critical)
    mesh = ax.collections[0].get_array()
    assert np.ma.getdata(mesh).reshape(2, 3) == pytest.approx(phase.values)


def test_the_report_writes_the_figure_and_the_table(tmp_path: Path) -> None:
    report = build_report(phase_sweep(tmp_path / "sweep"))
    written = write_report(report, tmp_path / "out")
    png = tmp_path / "out" / "phase_diagram.png"
    assert png.exists() and (tmp_path / "out" / "phase_diagram.svg").exists()
    assert imread(png).shape[1] == 1050  # WIDTH_IN at 150 dpi
    md = written["md"].read_text()
    assert "## Trainability phase diagram" in md and "![phase_diagram.png](phase_diagram.png)" in md
    header, rows = phase_rows(report)
    assert header == ["depth", "σ_w² 1", "σ_w² 1.76", "σ_w² 4"]
    assert rows[0][0] == "5" and float(rows[0][1]) == pytest.approx(np.mean([best_of(1.0, 5, s) for s in SEEDS]),
                                                                      abs=5e-4)
    xi = [meanfield.theory("tanh", s, 0.05).xi_c for s in (1.0, 1.76, 4.0)]
    assert rows[-2] == ["ξ_c (theory)", *(f"{v:.1f}" for v in xi)]
    assert rows[-1] == [f"{MULTIPLE} ξ_c", *(f"{MULTIPLE * v:.0f}" for v in xi)]
    assert "| ξ_c (theory) |" in render(report, [])


def test_no_theory_for_another_init_and_no_diagram_when_more_varies(tmp_path: Path) -> None:
    phase = phase_diagram(build_report(phase_sweep(tmp_path / "a", init="default")))
    assert phase is not None and phase.activation is None and math.isnan(phase.xi_c(1.0))
    assert not any("ξ_c" in str(line.get_label()) for line in phase_figure(phase).axes[0].lines)
    assert phase_rows(build_report(phase_sweep(tmp_path / "a2", init="default")))[1][-1][0] == "40"  # no ξ_c rows
    root = phase_sweep(tmp_path / "b", extra=["optim.lr=0.01"])
    for n, folder in enumerate(sorted(root.glob("[0-9]*"), key=lambda p: int(p.name))):
        if n % 2:  # half the jobs at another lr: a third key varies
            for name in (".hydra/overrides.yaml", "metrics.json"):
                text = (folder / name).read_text().replace("optim.lr=0.01", "optim.lr=0.1")
                (folder / name).write_text(text)
    report = build_report(root)
    assert "optim.lr" in report.varied and phase_diagram(report) is None and phase_rows(report) is None
    assert not (write_report(report, tmp_path / "out") or {}).get("phase_diagram")
    assert not (tmp_path / "out" / "phase_diagram.png").exists()


def test_the_preset_spans_sigma_w2_1_to_4_and_depths_to_100_one_vectorized_group_per_depth() -> None:
    params = preset_params("edge_of_chaos")
    sigmas = [float(s) for s in params["init.sigma_w2"]]
    depths = [int(d) for d in params["model.depth"]]
    assert min(sigmas) == 1.0 and max(sigmas) == 4.0 and 1.76 in sigmas and max(depths) == 100
    cfg = make_cfg(["experiment=edge_of_chaos", "init.sigma_w2=1.0", "model.depth=100"])
    assert (cfg.data.name, cfg.model.activation, cfg.init.name, cfg.init.sigma_b2) == ("fashion_mnist", "tanh",
                                                                                       "mean_field", 0.05)
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.optim.momentum == 0.0 and cfg.trainer.max_steps <= 500
    other = make_cfg(["experiment=edge_of_chaos", "init.sigma_w2=4.0", "model.depth=100", "seed=3"])
    deeper = make_cfg(["experiment=edge_of_chaos", "init.sigma_w2=1.0", "model.depth=80"])
    assert solo_reason(cfg) is None and group_key(cfg) == group_key(other) != group_key(deeper)


@pytest.mark.slow
@pytest.mark.skipif(not datasets.DEBIAN_FASHION_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_the_preset_at_a_reduced_grid_trains_and_draws_its_phase_diagram(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAINSTUDY_DATA_DIR": str(data_dir)}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "experiment=edge_of_chaos",
                           "hydra/launcher=vectorized", "init.sigma_w2=1.0,1.76,4.0", "model.depth=4,24",
                           "trainer.max_steps=60", "val_every_n_steps=20", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = build_report(sweep)
    phase = phase_diagram(report)
    assert phase is not None and phase.depths == [4, 24] and phase.sigma_w2 == [1.0, 1.76, 4.0]
    assert np.isfinite(phase.values).all() and (phase.seeds == 1).all()
    for folder in sweep.glob("[0-9]*"):  # every cell is its job's best val/acc, and each trained in a group
        result = json.loads((folder / "metrics.json").read_text())
        assert result["vectorized"]["members"] == 3
        cell = phase.values[phase.depths.index(result["hparams"]["depth"]),
                            phase.sigma_w2.index(result["hparams"]["init.sigma_w2"])]
        assert cell == pytest.approx(max(p["val/acc"] for p in result["curve"] if p["step"] > 0))
    assert phase.values.max() > 0.5  # something learns in 60 steps
    assert (sweep / "phase_diagram.png").exists() and "## Trainability phase diagram" in (sweep / "report.md").read_text()
