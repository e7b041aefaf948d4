"""Vectorized sweeps: a group trains each member exactly as the member's job would train alone (same init,
data order, losses, validations, metrics, diagnostics, TensorBoard tags); jobs group only where they can;
the launcher leaves what the basic launcher leaves, and a re-run into the same sweep skips finished jobs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import make_cfg
from omegaconf import open_dict
from test_sweeps import sweep_dirs
from test_train import cli, job_runs, scalars

from trainstudy import vectorized
from trainstudy.data import load_data
from trainstudy.report import build_report
from trainstudy.train import build, train
from trainstudy.vectorized import (
    GroupInterrupted,
    build_member,
    group_key,
    solo_reason,
    train_group,
)

SHORT = ["data=digits", "trainer.max_steps=30", "val_every_n_steps=5", "log_every_n_steps=10", "progress_bar=false"]
# Each case: what its members share, then one list of overrides per member.
CASES = {
    "multiclass-sgd": ([], [
        ["init=xavier_uniform", "seed=0"],
        ["init=kaiming_normal", "seed=1", "loss=mse"],
        ["init=lsuv", "seed=2", "loss=nll"],
        ["init=orthogonal", "seed=3", "loss=bce", "target.value=0.5", "target.stop_on_reach=true"],
        ["init=normal", "init.std=30", "seed=4", "loss=mse"],  # diverges within a few steps
    ]),
    "multiclass-adamw": (["optim=adamw"], [
        ["init=kaiming_uniform", "seed=0"],
        ["init=trunc_normal", "init.std=0.05", "seed=1", "loss=huber", "diagnostics=false"],
        ["init=default", "seed=2", "loss=mae"],
    ]),
    "binary": (["data.positive_classes=[0,2,4,6,8]"], [
        ["loss=bce", "seed=0"],
        ["loss=mse", "seed=1", "init=xavier_normal"],
    ]),
    "cnn": (["data=mnist", "data.source=bundled", "model=cnn", "trainer.max_steps=10"], [
        ["init=kaiming_normal", "seed=0"],
        ["init=xavier_uniform", "seed=1", "loss=nll"],
    ]),
    "regression": (["data=regression", "optim.lr=0.01"], [
        ["loss=mse", "seed=0"],
        ["loss=mae", "seed=1", "init=kaiming_normal"],
        ["loss=huber", "seed=2", "target.metric=val/mse"],
    ]),
}
REL, ABS = 1e-4, 1e-6  # float tolerance: a batched matmul sums in another order than M single ones
# A conv layer's weight gradient sums batch x positions terms that largely cancel: a grouped (vmapped) conv sums
# them in another order, and at one torch thread its norm after 10 steps differs by up to ~0.3% (losses: 1e-5)
GRAD_REL = 1e-2
TIMES = {"conv/time_to_target_s", "conv/train_time_s"}


def member_cfgs(common: list[str], members: list[list[str]], root: Path, data_dir: Path) -> list:
    cfgs = []
    for i, overrides in enumerate(members):
        cfg = make_cfg([*SHORT, *common, *overrides, f"data_dir={data_dir}"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(root / str(i))
            cfg.paths.tb_dir = str(root / "tb" / str(i))
        cfgs.append(cfg)
    return cfgs


def close(a: object, b: object, rel: float = REL) -> bool:
    """Equal, up to the float tolerance, through dicts and lists; NaN equals NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return (math.isnan(a) and math.isnan(b)) or b == pytest.approx(a, rel=rel, abs=ABS)
    return a == b


@pytest.mark.parametrize("case", CASES)
def test_group_trains_each_member_as_its_job_alone(case: str, tmp_path: Path, data_dir: Path) -> None:
    common, members = CASES[case]
    alone = [train(cfg) for cfg in member_cfgs(common, members, tmp_path / "alone", data_dir)]
    grouped = train_group(member_cfgs(common, members, tmp_path / "group", data_dir))
    for i, (a, g) in enumerate(zip(alone, grouped)):
        assert set(g) - set(a) == {"vectorized"} and set(a) <= set(g)  # metrics.json: the same keys, one more
        assert "test/loss" in g["metrics"] and g["test_split"] == a["test_split"]  # tested once, at the end
        saved = json.loads((tmp_path / "group" / str(i) / "metrics.json").read_text())
        assert (saved["status"], saved["train_loss"]) == (g["status"], g["train_loss"])
        assert g["status"] == a["status"] and g["hparams"] == a["hparams"] and g["target"] == a["target"]
        assert close(a["train_loss"], g["train_loss"]), (i, a["train_loss"][:5], g["train_loss"][:5])
        assert [p["step"] for p in a["curve"]] == [p["step"] for p in g["curve"]]
        assert close(a["curve"], g["curve"]), i
        assert close({k: v for k, v in a["metrics"].items() if k not in TIMES},
                     {k: v for k, v in g["metrics"].items() if k not in TIMES}), (i, a["metrics"], g["metrics"])
        assert close(a["diagnostics"], g["diagnostics"]), i
        tb_alone, tb_group = scalars(tmp_path / "alone" / "tb" / str(i)), scalars(tmp_path / "group" / "tb" / str(i))
        assert tb_alone.keys() == tb_group.keys()
        for tag, points in tb_alone.items():
            if tag not in TIMES:
                assert close([[s, v] for s, v in points], [[s, v] for s, v in tb_group[tag]],
                             GRAD_REL if tag.startswith("grad/") else REL), (i, tag)
    if case == "multiclass-sgd":
        statuses = [g["status"] for g in grouped]
        assert statuses == ["ok", "ok", "ok", "ok", "diverged"]  # and the four others match their solo runs
        stopped = grouped[3]["metrics"]
        assert stopped["conv/reached"] and stopped["conv/steps"] == stopped["conv/steps_to_target"] < 30


@pytest.mark.parametrize("init", ["xavier_uniform", "lsuv", "fixed"])
def test_member_init_is_the_ordinary_runs_init_bit_for_bit(init: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = make_cfg(["data=digits", f"init={init}", "seed=7", f"data_dir={data_dir}"], tmp_path)  # a member logs
    L.seed_everything(7, verbose=False)
    splits = load_data(cfg.data, cfg.data_dir)
    alone, _ = build(cfg, splits)
    torch.manual_seed(123)  # whatever ran before, a member draws from its own seed
    member = build_member(cfg, splits, torch.device("cpu"))
    for (name, p), q in zip(alone.model.named_parameters(), member.module.model.parameters()):
        assert torch.equal(p, q), name


def test_an_interrupted_group_writes_what_it_has(tmp_path: Path, data_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = vectorized._validate

    def interrupt_at_step_10(members, stacked, losses, splits, classification, clock, step):  # noqa: ANN001
        if step == 10:
            raise KeyboardInterrupt
        real(members, stacked, losses, splits, classification, clock, step)

    monkeypatch.setattr(vectorized, "_validate", interrupt_at_step_10)
    cfgs = member_cfgs([], [["seed=0"], ["seed=1"]], tmp_path, data_dir)
    with pytest.raises(GroupInterrupted, match="SIGINT") as info:
        train_group(cfgs)
    for i, result in enumerate(info.value.results):
        saved = json.loads((tmp_path / str(i) / "metrics.json").read_text())
        assert saved["status"] == result["status"] == "interrupted"
        assert len(saved["train_loss"]) == 10 and [p["step"] for p in saved["curve"]] == [0, 5]


def key(overrides: list[str]) -> str:
    return group_key(make_cfg(["data=digits", *overrides]))


def test_what_members_may_differ_in_and_what_they_may_not() -> None:
    base = key([])
    for same in (["seed=3"], ["init=lsuv"], ["init=orthogonal", "init.gain=2"], ["loss=mse"], ["loss=nll"],
                 ["target.value=0.5"], ["target.stop_on_reach=true"], ["diagnostics=false"]):
        assert key(same) == base, same
    for other in (["optim.lr=0.1"], ["optim=adam"], ["optim.momentum=0"], ["data.batch_size=32"],
                  ["model.width=64"], ["model.activation=tanh"], ["trainer.max_steps=7"], ["val_every_n_steps=3"],
                  ["data=mnist"], ["data.split_seed=1"]):
        assert key(other) != base, other
    binary = ["data.positive_classes=[1,3]"]
    assert key([*binary, "loss=ce"]) == key([*binary, "loss=nll"]) != key([*binary, "loss=bce"])  # 2 outputs vs 1
    assert key([*binary, "loss=bce"]) == key([*binary, "loss=mse"])


@pytest.mark.parametrize(("overrides", "reason"), [
    (["compile=true"], "compile"),
    (["trainer=ddp"], "trainer."),
    (["trainer.precision=bf16-mixed"], "precision"),
    (["+trainer.gradient_clip_val=1.0"], "gradient_clip_val"),
    (["trainer.max_epochs=-1", "trainer.max_steps=-1"], "forever"),
    (["optim._target_=torch.optim.LBFGS"], "LBFGS"),
    (["scheduler=warmup_cosine"], "scheduler=warmup_cosine (the vectorized loop keeps the lr constant)"),
    (["callbacks=[lr_monitor,early_stopping]"], "callbacks.lr_monitor is a Lightning callback"),
    (["logger=wandb"], "logger=wandb opens one run at a time"),
])
def test_jobs_that_run_on_their_own_say_why(overrides: list[str], reason: str) -> None:
    assert solo_reason(make_cfg(["data=digits"])) is None
    assert reason in (solo_reason(make_cfg(["data=digits", *overrides])) or "")


@pytest.mark.slow
def test_launcher_leaves_what_the_basic_launcher_leaves_and_skips_finished_jobs(tmp_path: Path,
                                                                                 data_dir: Path) -> None:
    sweep_args = ["data=digits", "init=xavier_uniform,lsuv", "seed=0,1", "optim.lr=-1,0.05",
                  "trainer.max_steps=6", "val_every_n_steps=3"]
    (tmp_path / "basic").mkdir()
    (tmp_path / "vec").mkdir()
    basic = cli(["-m", *sweep_args], tmp_path / "basic", data_dir)
    vec = cli(["-m", "hydra/launcher=vectorized", *sweep_args], tmp_path / "vec", data_dir)
    assert basic.returncode == vec.returncode == 1, vec.stderr[-3000:]  # the lr=-1 jobs fail, as they should
    assert "vectorized group of 4 jobs" in vec.stdout and "Traceback" not in vec.stdout + vec.stderr
    (b_sweep,), (v_sweep,) = sweep_dirs(tmp_path / "basic"), sweep_dirs(tmp_path / "vec")
    assert job_runs(v_sweep / "tb") == job_runs(b_sweep / "tb")
    for job in sorted(p.name for p in b_sweep.iterdir() if p.name.isdigit()):
        b, v = json.loads((b_sweep / job / "metrics.json").read_text()), \
            json.loads((v_sweep / job / "metrics.json").read_text())
        assert (b["status"], b["overrides"]) == (v["status"], v["overrides"])
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            assert (v_sweep / job / ".hydra" / name).is_file()
        assert (v_sweep / job / ".hydra" / "overrides.yaml").read_text() == \
            (b_sweep / job / ".hydra" / "overrides.yaml").read_text()
        if b["status"] == "ok":
            assert close(b["train_loss"], v["train_loss"]) and close(b["curve"], v["curve"])
            assert v["vectorized"] == {"members": 4}
    b_report, v_report = build_report(b_sweep), build_report(v_sweep)
    assert (v_report.expected, v_report.missing, len(v_report.groups)) == \
        (b_report.expected, b_report.missing, len(b_report.groups)) == (8, 0, 4)

    finished = {p: p.read_text() for p in v_sweep.glob("*/metrics.json") if '"status": "ok"' in p.read_text()}
    again = cli(["-m", "hydra/launcher=vectorized", f"hydra.sweep.dir={v_sweep}", *sweep_args], tmp_path / "vec",
                data_dir)
    assert again.returncode == 1 and again.stdout.count("finished earlier") == 4, again.stdout[-3000:]
    assert all(p.read_text() == text for p, text in finished.items())  # not trained again
    assert len(job_runs(v_sweep / "tb")) == 4  # the failed jobs ran again, and still log nothing
