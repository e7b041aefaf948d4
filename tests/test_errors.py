"""A user's mistake: one line naming it and what to type instead, a non-zero exit, no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import CONF, make_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_train import cli

from trainstudy import datasets
from trainstudy import train as train_mod
from trainstudy.errors import UserError, explain
from trainstudy.schema import SEED_MAX, check_argv
from trainstudy.train import train, validate


def compose_error(overrides: list[str]) -> Exception:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"), pytest.raises(Exception) as err:
        compose(config_name="config", overrides=overrides)
    return err.value


@pytest.mark.parametrize(("overrides", "needle"), [
    (["init=kaiminng"], "unknown init option 'kaiminng' (did you mean kaiming?); choose one of: constant,"),
    (["loss=cee"], "unknown loss option 'cee' (did you mean ce?); choose one of: bce, ce, huber, mae, mse, nll"),
    (["data=mnistt"], "unknown data option 'mnistt'"),
    (["init.stdd=0.1"], "unknown key 'init.stdd'"),
    (["init.std=[1,"], "cannot read an override"),
])
def test_hydra_composition_errors_become_one_line(overrides: list[str], needle: str) -> None:
    message = explain(compose_error(overrides))
    assert message is not None and needle in message and "\n" not in message


@pytest.mark.parametrize(("overrides", "meant"), [
    (["seeed=1"], "seed"),
    (["trainer.max_step=5"], "trainer.max_steps"),
    (["data.batchsize=3"], "data.batch_size"),
    (["init=normal", "init.stdd=0.1"], "init.std"),
])
def test_key_typo_suggests_the_key_and_never_adding_the_typo(overrides: list[str], meant: str) -> None:
    message = explain(compose_error(overrides))
    typo = overrides[-1].split("=")[0]
    assert message is not None and message.startswith(f"unknown key '{typo}' (did you mean {meant}?)")
    assert f"+{typo}=" not in message


def test_unknown_key_with_nothing_close_lists_its_neighbours_and_how_to_add_it() -> None:
    message = explain(compose_error(["trainer.zzz=1"]))
    assert message is not None and "did you mean" not in message
    assert "trainer has: accelerator, devices, max_epochs, max_steps" in message and "+trainer.zzz=..." in message


@pytest.mark.parametrize(("overrides", "needle"), [
    (["+trainer.foo=1"], "unknown key 'trainer.foo': lightning.Trainer takes no argument 'foo'; it takes: "),
    (["+trainer.max_step=5"], "(did you mean trainer.max_steps?)"),
    (["+optim.nesterv=true"], "torch.optim.SGD takes no argument 'nesterv' (did you mean optim.nesterov?)"),
    (["loss=huber", "+loss.criterion.delt=2"], "(did you mean loss.criterion.delta?)"),
])
def test_an_argument_the_target_does_not_take_stops_before_data(overrides: list[str], needle: str) -> None:
    with pytest.raises(UserError, match=re.escape(needle)):
        validate(make_cfg(["data=digits", *overrides]))  # the checks that run before anything loads


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), [
    (["init=kaiminng"], "unknown init option 'kaiminng' (did you mean kaiming?)"),
    (["init=normal", "init.stdd=0.1"], "unknown key 'init.stdd'"),
    (["-m", "init=xavier,kaiminng"], "unknown init option 'kaiminng'"),
    (["seeed=1"], "unknown key 'seeed' (did you mean seed?)"),
    (["trainer.max_step=5"], "unknown key 'trainer.max_step' (did you mean trainer.max_steps?)"),
    (["data.batchsize=3"], "unknown key 'data.batchsize' (did you mean data.batch_size?)"),
    (["data=digits", "+trainer.foo=1"], "unknown key 'trainer.foo': lightning.Trainer takes no argument 'foo'"),
    (["init=normall", "--help"], "unknown init option 'normall' (did you mean normal?)"),  # help composes too
    (["seeed=1", "--cfg", "job"], "unknown key 'seeed' (did you mean seed?)"),
])
def test_cli_hydra_errors_one_line_exit_2(args: list[str], needle: str, tmp_path: Path, data_dir: Path) -> None:
    proc = cli(args, tmp_path, data_dir)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


@pytest.mark.slow
def test_cli_output_folder_not_writable(tmp_path: Path, data_dir: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = cli([f"hydra.run.dir={blocker}/run", "data=digits"], tmp_path, data_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: cannot write to {blocker}/run" in proc.stderr


def corrupt_idx(data_dir: Path) -> None:
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 7)  # header cut short
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")


def corrupt_cifar(data_dir: Path) -> None:
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")


# Issue 6's list of bad inputs that our own checks answer (Hydra's own — unknown option/key — are tested above).
BAD_INPUTS = [
    ("3 wrong type", ["init=normal", "init.std=abc"], None, "init.std must be a number"),
    ("3 wrong type", ["optim.lr=-1"], None, "optim.lr must be a number > 0"),
    ("3 wrong type", ["trainer.max_epochs=0"], None, "trainer.max_epochs must be a whole number >= 1"),
    ("4 std<=0", ["init=normal", "init.std=0"], None, "init.std must be > 0"),
    ("4 uniform a>=b", ["init=uniform", "init.a=1", "init.b=0"], None, "init.a < init.b"),
    ("4 trunc a>=b", ["init=trunc_normal", "init.a=2", "init.b=1"], None, "init.a < init.b"),
    ("4 mode", ["init=kaiming_normal", "init.mode=fan_avg"], None, "fan_in or fan_out"),
    ("4 nonlinearity", ["init=kaiming_uniform", "init.nonlinearity=swish"], None, "unknown init.nonlinearity"),
    ("5 fixed shape", ["init=fixed", "init.weight=[[1.0]]"], None, "has shape [1, 1] but layer"),
    ("5 fixed layer", ["init=fixed", "init.layer=9", "init.weight=[[1.0]]"], None, "is not a layer of this model"),
    ("6 ce on regression", ["data=regression", "loss=ce"], None, "loss=ce does not fit the regression task"),
    ("6 bce on regression", ["data=diabetes", "loss=bce"], None, "loss=bce does not fit the regression task"),
    ("7 empty", ["data.positive_classes=[]"], None, "data.positive_classes is empty"),
    ("7 every class", ["data.positive_classes=[0,1,2,3,4,5,6,7,8,9]"], None, "covers every class"),
    ("7 missing class", ["data.positive_classes=[3,12]"], None, "names [12], which digits lacks"),
    ("8 no mnist", ["data=mnist", "data.source=full"], None, "MNIST is not in"),
    ("9 corrupt idx", ["data=mnist", "data.source=full"], corrupt_idx, "train-images-idx3-ubyte"),
    ("9 corrupt cifar", ["data=cifar10"], corrupt_cifar, "cannot read CIFAR-10 batch"),
    ("10 data_dir", ["data_dir={blocker}/data"], None, "cannot be created"),
    ("11 target", ["target.value=1.5"], None, "must lie in (0, 1]"),
    ("12 memory", ["model.width=2000000"], None, "more than the"),
    ("13 gpu", ["trainer=gpu"], None, "has no GPU"),
]


@pytest.mark.parametrize(("case", "overrides", "prepare", "needle"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_before_training(case: str, overrides: list[str], prepare, needle: str,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if case.startswith("13") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (tmp_path / "blocker").write_text("")
    if prepare:
        prepare(data_dir)

    def no_network(*_a: object, **_k: object) -> None:
        raise OSError("no network (test)")

    monkeypatch.setattr(datasets, "download", no_network)
    args = ["data=digits", f"data_dir={data_dir}", *[o.format(blocker=tmp_path / "blocker") for o in overrides]]
    cfg = make_cfg(args, tmp_path)
    with pytest.raises(UserError) as err:
        train(cfg)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "run" / "metrics.json").exists()  # nothing that looks like a finished run


def test_slurm_launcher_off_a_cluster_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainstudy import cli

    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    for launcher in ("slurm", "submitit_slurm"):
        with pytest.raises(UserError, match="needs a SLURM cluster.*submitit_local"):
            cli.check_launcher(["-m", f"hydra/launcher={launcher}", "seed=0,1"])
    cli.check_launcher(["-m", "hydra/launcher=joblib"])  # other launchers need no srun
    monkeypatch.setattr(cli.shutil, "which", lambda name: "/usr/bin/srun")
    cli.check_launcher(["-m", "hydra/launcher=slurm"])  # on a cluster: launched as configured


# Issue 14, item 6: values nobody validated. Each is refused by validate() (schema.RULES, check_arguments, the
# init strategies) in one line, before any data is loaded.
UNCHECKED_VALUES = [
    (["seed=-1"], "seed must be a whole number in [0, 4294967295]"),
    (["seed=abc"], "seed must be a whole number"),
    (["seed=2**70"], "got '2**70'"),
    ([f"seed={2**70}"], f"got {2**70}"),
    (["seed=1.5"], "seed must be a whole number"),
    (["optim.momentum=-1"], "optim.momentum must be a number in [0, 1], got -1 (e.g. optim.momentum=0.9)"),
    (["optim.weight_decay=-1"], "optim.weight_decay must be a number >= 0"),
    (["+optim.betas=[0.9]"], "unknown key 'optim.betas': torch.optim.SGD takes no argument 'betas'"),
    (["optim=adam", "+optim.betas=[0.9]"], "optim.betas must be a list of 2 numbers in [0, 1), got [0.9]"),
    (["log_every_n_steps=0"], "log_every_n_steps must be a whole number >= 1"),
    (["checkpoint.every_n_steps=abc"], "checkpoint.every_n_steps must be a whole number >= 0"),
    (["checkpoint.every_n_steps=-1"], "checkpoint.every_n_steps must be a whole number >= 0"),
    (["init=trunc_normal", "init.mean=100"], "init=trunc_normal needs init.mean within 2 init.std of [init.a, init.b]"),
    (["init=uniform", "init.a=-inf", "init.b=inf"], "init.a must be a finite number, got -inf"),
    (["optim.lr=nan"], "optim.lr must be a finite number > 0, got nan"),
    (["optim.lr=inf"], "optim.lr must be a finite number > 0, got inf"),
    (["init=constant", "init.value=nan"], "init.value must be a finite number, got nan"),
    (["data=regression", "loss=huber", "loss.criterion.delta=-1"], "loss.criterion.delta must be a number > 0"),
    (["+loss.criterion.label_smoothing=2"], "loss.criterion.label_smoothing must be a number in [0, 1]"),
    (["+loss.criterion.reduction=none"], "loss.criterion.reduction must be mean"),
    (["+trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches must be a whole number >= 1"),
    (["target.stop_on_reach=maybe"], "target.stop_on_reach must be true or false, got 'maybe'"),
    (["diagnostics=sometimes"], "diagnostics must be default, full, true or false"),
    (["trainer.max_steps=null"], "trainer.max_steps must be a whole number >= 1 (or -1 for no limit), got null"),
]


@pytest.mark.parametrize(("overrides", "needle"), UNCHECKED_VALUES, ids=[" ".join(c[0]) for c in UNCHECKED_VALUES])
def test_unchecked_values_are_refused_in_one_line(overrides: list[str], needle: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(*_a: object, **_k: object) -> None:
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(train_mod, "load_data", no_loading)
    with pytest.raises(UserError) as err:
        train(make_cfg(["data=digits", f"data_dir={tmp_path / 'data'}", *overrides], tmp_path))
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "run").exists()


def test_good_values_pass_the_schema() -> None:
    validate(make_cfg(["seed=null", "optim=adam", "+optim.betas=[0.9,0.99]", "trainer.max_epochs=null",
                       "+loss.criterion.label_smoothing=0.1", "checkpoint.every_n_steps=0", "threads=all"]))
    validate(make_cfg([f"seed={SEED_MAX}", "data=regression", "loss=huber", "loss.criterion.delta=0.5"]))


@pytest.mark.parametrize(("overrides", "needle"), [
    (["trainer.accelerator=tpu"], "Lightning refuses trainer.accelerator=tpu ("),
    (["trainer.devices=0"], "Lightning refuses trainer.devices=0 (MisconfigurationException"),
    (["trainer.precision=17"], "Lightning refuses trainer.precision=17 ("),
])
def test_trainer_refusals_name_the_key(overrides: list[str], needle: str, tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(UserError) as err:
        train(make_cfg(["data=digits", f"data_dir={data_dir}", *overrides], tmp_path))
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("init", [["init=normal", "init.std=1e30"], ["init=constant", "init.value=1e30"]])
def test_huge_init_values_diverge_cleanly(init: list[str], tmp_path: Path, data_dir: Path) -> None:
    result = train(make_cfg(["data=digits", f"data_dir={data_dir}", "trainer.max_steps=4", "val_every_n_steps=2",
                             "progress_bar=false", *init], tmp_path))
    assert result["status"] == "diverged" and result["metrics"]["conv/diverged_step"] == 1


def test_empty_run_folder_is_refused_before_hydra() -> None:
    with pytest.raises(UserError, match="hydra.run.dir is empty, which would write into the current folder"):
        check_argv(["init=xavier", "hydra.run.dir="])
    with pytest.raises(UserError, match="hydra.sweep.dir is empty"):
        check_argv(["-m", "hydra.sweep.dir=''"])
    assert check_argv(["hydra.run.dir=outputs/x"]) == ["hydra.run.dir=outputs/x"]


@pytest.mark.slow
def test_cli_refused_runs_leave_no_run_folder(tmp_path: Path, data_dir: Path) -> None:
    for args in (["seed=abc"], ["trainer.devices=0", "data=digits"], ["hydra.run.dir="]):
        run = tmp_path / "run"
        given = args if args == ["hydra.run.dir="] else [*args, f"hydra.run.dir={run}"]
        proc = cli(given, tmp_path, data_dir)
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, proc.stderr
        assert not run.exists() and not (tmp_path / ".hydra").exists(), args
