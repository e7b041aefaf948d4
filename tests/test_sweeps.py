"""Studies as sweeps: the presets compose and run, joblib and submitit launch jobs in other processes
without sharing folders or TensorBoard runs, a sweep survives a failing and a diverging job, and a real
TensorBoard server shows every job with its scalars and hparams."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import CONF, ROOT, make_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from test_train import cli, job_runs, scalars

from trainstudy.inits import STRATEGIES
from trainstudy.report import best_of_rows, build_report, job_rows
from trainstudy.train import validate

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TINY = ["trainer.max_steps=4", "val_every_n_steps=2"]
SHORTER = {"fair_lr": ["optim.lr=0.1,1.0"],  # the shortened run: 2 of its lrs (every job validates above)
           "init_benchmark": ["init=default,lsuv"],  # its 4 workloads, 2 of its inits
           "edge_of_chaos": ["init.sigma_w2=1.0,4.0", "model.depth=2,5"]}  # 4 of its 63 (tests/test_phase.py: more)
STEPS = {"warmup": 51}  # a warmup of 50 steps needs a run longer than that (a shorter one is refused)


def preset_params(name: str) -> dict[str, list[str]]:
    """A preset's hydra.sweeper.params, each value list split."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    return {k: str(v).split(",") for k, v in params.items()}


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "multirun").glob("*/*"))


def test_the_six_presets_are_there() -> None:
    assert set(PRESETS) >= {"init_sweep", "loss_sweep", "deep_relu", "symmetry", "regression_robust", "fair_lr"}


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_global_cites_its_finding_and_every_job_validates(name: str) -> None:
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert f"python train.py -m experiment={name}" in text
    params = preset_params(name)
    assert "seed" in params and len(params) >= 2, params
    varied = {k: v for k, v in params.items() if k != "seed"}
    for values in itertools.product(*varied.values()):
        overrides = [f"experiment={name}", *(f"{k}={v}" for k, v in zip(varied, values))]
        validate(make_cfg(overrides))  # a config error would stop a job of the sweep


def test_presets_say_what_their_finding_needs() -> None:
    beyond_the_tutorial = {"mean_field", "sparse", "identity", "delta_orthogonal", "metainit"}
    assert set(preset_params("init_sweep")["init"]) == set(STRATEGIES) - {"fixed"} - beyond_the_tutorial
    assert len(preset_params("init_sweep")["seed"]) == 3
    assert set(preset_params("loss_sweep")["loss"]) == {"ce", "nll", "bce", "mse", "mae"}
    deep = make_cfg(["experiment=deep_relu"])
    assert (deep.model.depth, deep.model.activation, deep.optim.momentum) == (30, "relu", 0.0)
    assert set(preset_params("deep_relu")["init"]) == {"xavier_normal", "kaiming_normal"}
    assert {"zeros", "ones", "constant"} < set(preset_params("symmetry")["init"])
    robust = make_cfg(["experiment=regression_robust"])
    assert robust.data.outlier_fraction > 0 and robust.target.metric == "val/mse"
    assert set(preset_params("regression_robust")["loss"]) == {"mse", "mae", "huber"}
    assert len(preset_params("fair_lr")["optim.lr"]) >= 3 and len(preset_params("fair_lr")["init"]) >= 3


def test_slurm_preset_is_submitit() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 60)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_cfg_job_and_a_shortened_run(name: str, tmp_path: Path, data_dir: Path) -> None:
    shown = cli([f"experiment={name}", "--cfg", "job"], tmp_path, data_dir)
    assert shown.returncode == 0, shown.stderr
    job = yaml.safe_load(shown.stdout)
    assert job["trainer"]["max_steps"] > 0 and job["target"]["value"] is not None
    assert job["model"] == OmegaConf.to_container(make_cfg([f"experiment={name}"]).model)

    shorter = SHORTER.get(name, [])
    proc = cli(["-m", f"experiment={name}", "seed=0", f"trainer.max_steps={STEPS.get(name, 3)}", "val_every_n_steps=3",
                *shorter],
               tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    varied = {**preset_params(name), **{o.split("=")[0]: o.split("=")[1].split(",") for o in shorter}}
    varied.pop("seed")
    n_jobs = len(list(itertools.product(*varied.values())))
    results = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(results) == n_jobs
    assert {r["status"] for r in results} <= {"ok", "diverged"}
    runs = job_runs(sweep / "tb")
    assert len(runs) == n_jobs, runs  # named by what the preset varies: no job0, job1, ...
    assert all({part.split("=")[0] for part in run.split(",")} == set(varied) for run in runs), runs
    report = build_report(sweep)
    assert report.expected == n_jobs and report.missing == 0 and len(report.groups) == n_jobs
    assert (best_of_rows(report) is not None) == ("optim.lr" in varied)


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """4 jobs, 2 processes at a time."""
    cwd = tmp_path_factory.mktemp("joblib")
    proc = cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data=digits",
                "init=xavier_uniform,kaiming_normal", "seed=0,1", *TINY], cwd, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = sweep_dirs(cwd)
    return sweep, proc


NAMES = [f"init={i},seed={s}" for i in ("kaiming_normal", "xavier_uniform") for s in (0, 1)]


@pytest.mark.slow
def test_joblib_sweep_has_distinct_job_folders_and_tensorboard_runs(joblib_sweep) -> None:
    sweep, proc = joblib_sweep
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    folders = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert folders == ["0", "1", "2", "3"]
    overrides = {",".join(sorted(o for o in json.loads((sweep / f / "metrics.json").read_text())["overrides"]
                                 if o.startswith(("init=", "seed=")))) for f in folders}
    assert overrides == set(NAMES)
    assert sorted(p.name for p in (sweep / "tb").iterdir() if p.is_dir()) == ["groups", *NAMES]  # + the groups' runs
    for name in NAMES:
        tags = scalars(sweep / "tb" / name)
        assert [s for s, _ in tags["train/loss"]] == [1, 2, 3, 4]  # one job's steps, not two jobs' mixed
        assert [s for s, _ in tags["val/acc"]] == [0, 2, 4]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"} if body is not None else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_tensorboard_serves_every_job_with_scalars_and_hparams(joblib_sweep) -> None:
    sweep, _ = joblib_sweep
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(["bash", str(ROOT / "scripts" / "tensorboard.sh"), str(sweep)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/data"
    try:
        runs: object = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                runs = get(f"{base}/runs")
                if len(runs) == 7:  # the 4 jobs, the sweep's HParams experiment (".") and 2 group runs
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
            time.sleep(1)
        assert sorted(runs) == [".", "groups/init=kaiming_normal", "groups/init=xavier_uniform", *NAMES]
        tags = get(f"{base}/plugin/scalars/tags")
        for name in NAMES:
            assert {"train/loss", "val/loss", "val/acc", "conv/loss_auc"} <= set(tags[name]), tags.get(name)
        experiment = get(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        assert {"init", "seed", "lr", "loss"} <= {h["name"] for h in experiment["hparamInfos"]}
        assert {"conv/steps", "conv/best_val_acc"} <= {m["name"]["tag"] for m in experiment["metricInfos"]}
        groups = get(f"{base}/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        sessions = {g["name"]: g for g in groups["sessionGroups"]}
        assert sorted(sessions) == NAMES
        for name, group in sessions.items():
            init, seed = (part.split("=")[1] for part in name.split(","))
            assert (group["hparams"]["init"], int(group["hparams"]["seed"])) == (init, int(seed))
            steps = next(m["value"] for m in group["metricValues"] if m["name"]["tag"] == "conv/steps")
            assert steps == 4
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    with pytest.raises(OSError):
        get(f"{base}/runs")


def test_tensorboard_script_without_a_sweep_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "tensorboard.sh")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no sweep folder")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["basic", "joblib"])
def test_sweep_survives_failing_and_diverging_jobs(launcher: list[str], tmp_path: Path, data_dir: Path) -> None:
    # jobs in order: lr=-1 fails (a bad value), precision=bogus fails as Lightning's Trainer refuses it,
    # lr=1e5 diverges, and the job after all of them still trains
    proc = cli(["-m", *launcher, "data=digits", "trainer.precision=bogus,32-true", "optim.lr=-1,1e5,0.05", *TINY],
               tmp_path, data_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    status = {}
    for path in sweep.glob("*/metrics.json"):
        result = json.loads(path.read_text())
        key = tuple(o for o in result["overrides"] if o.startswith(("trainer.precision", "optim.lr")))
        status[key] = (result["status"], result.get("error", ""))
    assert len(status) == 6
    assert status[("trainer.precision=32-true", "optim.lr=0.05")][0] == "ok"
    assert status[("trainer.precision=32-true", "optim.lr=100000.0")][0] == "diverged"
    assert status[("trainer.precision=32-true", "optim.lr=-1")] == (
        "failed", "optim.lr must be a number > 0, got -1 (e.g. optim.lr=0.01)")
    assert status[("trainer.precision=bogus", "optim.lr=0.05")][0] == "failed"
    assert status[("trainer.precision=bogus", "optim.lr=0.05")][1].startswith(
        "Lightning refuses trainer.precision=bogus (ValueError: Precision 'bogus' is invalid")
    assert "Traceback" not in "".join(e for _, e in status.values())
    _, rows = job_rows(build_report(sweep))
    assert sorted(r[3] for r in rows) == ["diverged", "failed", "failed", "failed", "failed", "ok"]


@pytest.mark.slow
def test_submitit_local_runs_the_cluster_code_path(tmp_path: Path, data_dir: Path) -> None:
    proc = cli(["-m", "hydra/launcher=submitit_local", "data=digits", "optim.lr=-1,0.05", *TINY], tmp_path, data_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]  # one job failed, and the exit status says so
    (sweep,) = sweep_dirs(tmp_path)
    assert (sweep / ".submitit").is_dir()
    results = {json.loads(p.read_text())["status"]: p.parent.name for p in sweep.glob("*/metrics.json")}
    assert sorted(results) == ["failed", "ok"] and sorted(results.values()) == ["0", "1"]
    assert job_runs(sweep / "tb") == ["optim.lr=0.05"]
    assert "train/loss" in scalars(sweep / "tb" / "optim.lr=0.05")


# ------------------------------------------------------------------------------------------ long names

LONG_STD = "0.0" + "1" * 300  # a value whose run name passes the file system's 255 bytes


def job_paths_for(overrides: list[str], swept: list[str], sweep: Path, num: int) -> object:
    """cli.job_paths as a sweep's job ``num`` runs it: Hydra's config in multirun mode, multirun.yaml on disk."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from trainstudy.cli import job_paths

    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": swept}, "sweeper": {}}}))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode, cfg.hydra.job.num = RunMode.MULTIRUN, num
        cfg.hydra.sweep.dir, cfg.hydra.runtime.output_dir = str(sweep), str(sweep / str(num))
        cfg.hydra.overrides.task = overrides
    HydraConfig.instance().set_config(cfg)
    try:
        job_paths(cfg)
    finally:
        HydraConfig.instance().cfg = None
    return cfg.paths


def test_long_run_names_are_shortened_deterministically(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    swept = [f"init.std={LONG_STD},{LONG_STD}2", "seed=0,1", "init=normal"]
    first = job_paths_for(["init=normal", f"init.std={LONG_STD}", "seed=0"], swept, sweep, 0)
    name = Path(first.tb_dir).name
    assert len(name.encode()) <= 255 and name.startswith("init.std=0.0111")
    Path(first.tb_dir).mkdir(parents=True)  # the folder TensorBoard's logger will create
    assert list(first.overrides) == ["init=normal", f"init.std={LONG_STD}", "seed=0"]  # metrics.json records these

    # the next job's name differs only past the cut: its own hash; the same overrides again: the same name + ~job
    other = job_paths_for(["init=normal", f"init.std={LONG_STD}2", "seed=0"], swept, sweep, 1)
    again = job_paths_for(["init=normal", f"init.std={LONG_STD}", "seed=0"], swept, sweep, 2)
    assert Path(other.tb_dir).name != name and len(Path(other.tb_dir).name.encode()) <= 255
    assert Path(again.tb_dir).name.endswith(name[-9:] + "~2") and len(Path(again.tb_dir).name.encode()) <= 255
    Path(other.tb_dir).mkdir(), Path(again.tb_dir).mkdir()

    short = job_paths_for(["init=normal", "init.std=0.01", "seed=1"], ["init.std=0.01,0.02", "seed=0,1"], sweep, 3)
    assert Path(short.tb_dir).name == "init.std=0.01,seed=1"  # names that fit stay as they are


def test_a_too_long_run_dir_is_a_one_line_error(tmp_path: Path, data_dir: Path) -> None:
    proc = cli(["data=digits", f"hydra.run.dir={tmp_path / ('x' * 300)}"], tmp_path, data_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "is 300 bytes, over the file system's 255" in proc.stderr


def test_sweep_summary_names_jobs_shows_unreadable_ones_and_counts_right(tmp_path: Path, caplog) -> None:
    """One garbage metrics.json is one row (and a failed sweep), the others are summarised by their run names."""
    import logging

    from omegaconf import OmegaConf

    from trainstudy.cli import SweepSummary

    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [seed=0,1]\n  sweeper: {}\n")
    ok = {"status": "ok", "overrides": ["seed=0"], "metrics": {"conv/steps_to_target": 30, "conv/best_val_acc": 0.96},
          "target": {"metric": "val/acc", "value": 0.95}, "tensorboard": True}
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps(ok))
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "metrics.json").write_text('{"status": "ok", "metr')
    SweepSummary.failed = False
    with caplog.at_level(logging.INFO, logger="trainstudy"):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    text = caplog.text
    assert ": 2 jobs" in text
    assert "seed=0" in text and "reached at step 30 · best val/acc 0.96" in text
    assert "unreadable metrics.json: not JSON (cut short)" in text
    assert f"tensorboard --logdir {tmp_path / 'tb'}" in text  # a job logged to TensorBoard
    assert SweepSummary.failed
    SweepSummary.failed = False
