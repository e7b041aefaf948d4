"""A sweep's TensorBoard views: one run per group with mean ± sample std over seeds, the Custom Scalars layout,
the HParams experiment whose default columns are what the sweep varies and the headline numbers; read back
from a real TensorBoard server over HTTP, and written at the end of every sweep."""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from trainstudy.cli import SweepSummary, write_sweep_report
from trainstudy.report import build_report
from trainstudy.report.tbgroups import CURVES_FILTER, GROUPS, group_curve, tensorboard_url, write_tensorboard

from test_sweeps import free_port, get  # the same server helpers as the sweep's TensorBoard test

# val/acc at steps 0, 10, 20 per (init, seed); seed 2 of each init stopped at step 10 (stop_on_reach)
CURVES = {("xavier", 0): [0.1, 0.5, 0.9], ("xavier", 1): [0.1, 0.6, 0.8], ("xavier", 2): [0.1, 0.95],
          ("zeros", 0): [0.1, 0.1, 0.1], ("zeros", 1): [0.1, 0.1, 0.2], ("zeros", 2): [0.1, 0.1]}


def write_sweep(root: Path) -> Path:
    """Six finished jobs as train and cli leave them (metrics.json, a tb/ run folder each), without training."""
    (root / "tb").mkdir(parents=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["init=xavier,zeros", "seed=0,1,2", "data=digits"]},
                   "sweeper": {"params": None}}}))
    for n, ((init, seed), accs) in enumerate(CURVES.items()):
        overrides = [f"init={init}", f"seed={seed}", "data=digits"]
        steps = 10 * (len(accs) - 1)
        reached = next((10 * i for i, a in enumerate(accs) if a >= 0.9), None)
        result = {
            "status": "ok", "overrides": overrides, "tensorboard": True,
            "hparams": {"data": "digits", "init": init, "lr": 0.05, "seed": seed, "width": 256},
            "metrics": {"conv/reached": int(reached is not None), "conv/steps_to_target": reached,
                        "conv/steps_observed": reached if reached is not None else steps, "conv/steps": steps,
                        "conv/best_val_acc": max(accs[1:]), "conv/best_val_loss": 1.0, "conv/loss_auc": 1.0,
                        "conv/diverged": 0, "conv/diverged_step": None, "test/acc": 0.5, "test/loss": 1.0},
            "target": {"metric": "val/acc", "value": 0.9},
            "curve": [{"step": 10 * i, "val/loss": 2.0 - a, "val/acc": a} for i, a in enumerate(accs)],
            "train_loss": [2.0 - a / 10 * (seed + 1) for a in range(steps)],
        }
        (root / str(n)).mkdir()
        (root / str(n) / "metrics.json").write_text(json.dumps(result))
    return root


def test_group_curve_is_the_mean_and_sample_std_over_the_seeds_at_each_step(tmp_path: Path) -> None:
    report = build_report(write_sweep(tmp_path / "sweep"))
    xavier = next(g for g in report.groups if g.name == "init=xavier")
    rows = {step: (mean, std, n) for step, mean, std, n in group_curve(xavier, "val/acc")}
    assert rows[10] == pytest.approx((statistics.fmean([0.5, 0.6, 0.95]), statistics.stdev([0.5, 0.6, 0.95]), 3))
    assert rows[20] == pytest.approx((0.85, statistics.stdev([0.9, 0.8]), 2))  # seed 2 stopped at step 10
    assert rows[0] == pytest.approx((0.1, 0.0, 3))
    loss = {step: n for step, _, _, n in group_curve(xavier, "train/loss")}
    assert min(loss) == 1 and loss[10] == 3 and loss[20] == 2  # train/loss at steps 1..n


def test_tensorboard_serves_the_group_runs_their_layout_and_the_sweeps_hparams_columns(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    report = build_report(sweep)
    written = write_tensorboard(report)
    write_tensorboard(report)  # a second report replaces the first: no duplicate points
    assert sorted(p.name for p in written["groups"]) == ["init=xavier", "init=zeros"]
    port = free_port()
    tensorboard = Path(sys.executable).parent / "tensorboard"
    server = subprocess.Popen([str(tensorboard), "--logdir", str(sweep / "tb"), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}/data"
    try:
        runs: object = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(runs) < 3:
            try:
                runs = get(f"{base}/runs")
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
            time.sleep(0.5)
        assert sorted(runs) == [".", f"{GROUPS}/init=xavier", f"{GROUPS}/init=zeros"]

        layout = get(f"{base}/plugin/custom_scalars/layout")
        (category,) = layout["category"]
        series = {c["title"].split()[0]: c["margin"]["series"][0] for c in category["chart"]}
        assert set(series) == {"train/loss", "val/acc", "val/loss"}
        assert series["val/acc"] == {"value": "seeds/val/acc/mean", "lower": "seeds/val/acc/lower",
                                     "upper": "seeds/val/acc/upper"}
        # what the margin chart fetches: each series tag of each group run
        got = {}
        for tag in series["val/acc"].values():
            query = urllib.parse.urlencode({"run": f"{GROUPS}/init=xavier", "tag": tag})
            events = get(f"{base}/plugin/custom_scalars/scalars?{query}")["tag_to_events"][tag]
            got[tag.rsplit("/", 1)[1]] = {step: value for _, step, value in events}
        mean, std = statistics.fmean([0.5, 0.6, 0.95]), statistics.stdev([0.5, 0.6, 0.95])
        assert sorted(got["mean"]) == [0, 10, 20]
        assert (got["mean"][10], got["lower"][10], got["upper"][10]) == pytest.approx(
            (mean, mean - std, mean + std), rel=1e-6)

        experiment = get(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        hparams = [(h["name"], h.get("differs", False)) for h in experiment["hparamInfos"]]
        assert hparams[:2] == [("init", True), ("seed", True)]  # what the sweep varies comes first: shown
        assert not any(differs for _, differs in hparams[2:])
        assert {"xavier", "zeros"} == set(dict((h["name"], h) for h in experiment["hparamInfos"])["init"]
                                          ["domainDiscrete"])
        metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
        assert metrics[:6] == ["conv/steps_observed", "conv/reached", "conv/best_val_acc", "test/acc", "test/loss",
                               "conv/steps_to_target"]  # the table shows the first five
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_first_page_url_filters_to_the_curves() -> None:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(tensorboard_url(6007)).query)
    assert query == {"tagFilter": [CURVES_FILTER]}
    assert tensorboard_url(6007).startswith("http://localhost:6007/") and tensorboard_url().endswith("#timeseries")


def test_a_sweep_ends_with_its_report_and_tensorboard_views(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    with caplog.at_level(logging.INFO, logger="trainstudy"):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert (sweep / "report.md").is_file() and (sweep / "tb" / GROUPS / "init=zeros").is_dir()
    assert f"report: {sweep / 'report.md'}" in caplog.text and tensorboard_url() in caplog.text


def test_a_report_that_cannot_be_written_is_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.WARNING, logger="trainstudy"):
        assert write_sweep_report(tmp_path / "empty") == ""
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "\n" not in record.getMessage()
    assert "report was not written" in record.getMessage() and record.exc_info is None


def test_the_tensorboard_script_prints_the_same_first_page() -> None:
    script = (Path(__file__).resolve().parents[1] / "scripts" / "tensorboard.sh").read_text()
    assert f"?tagFilter={urllib.parse.quote(CURVES_FILTER, safe='')}#timeseries" in script
