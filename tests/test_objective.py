"""What main() returns to a sweeper that optimizes: steps to target (+inf when not reached) or the target metric's
best, the worst value for a diverged or failed job, a direction that matches, and a real Optuna sweep over it."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import CONF, make_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from test_train import cli

from trainstudy.cli import check_sweeper
from trainstudy.errors import UserError
from trainstudy.objective import check_sweeper_direction, direction, objective_value, validate_objective
from trainstudy.train import train

TINY = ["data=digits", "trainer.max_steps=10", "trainer.max_epochs=-1", "val_every_n_steps=2", "diagnostics=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Three tiny digits runs: one reaches its target, one can't (val/acc 1.0 in 10 steps), one diverges at step 4
    (after a validation at step 2)."""
    tmp = tmp_path_factory.mktemp("objective")
    settings = {"reached": ["target.value=0.3"], "not_reached": ["target.value=1.0"], "diverged": ["optim.lr=1000"]}
    return {name: train(make_cfg([*TINY, f"data_dir={tmp / 'data'}", *extra], tmp / name))
            for name, extra in settings.items()}


def test_steps_to_target_is_the_step_reached_and_inf_otherwise(runs: dict[str, dict]) -> None:
    cfg = make_cfg(["data=digits"])
    reached = runs["reached"]["metrics"]["conv/steps_to_target"]
    assert reached is not None and objective_value(cfg, runs["reached"]) == float(reached)
    assert runs["not_reached"]["metrics"]["conv/steps"] == 10  # it ran: its censored steps are not its score
    assert objective_value(cfg, runs["not_reached"]) == math.inf
    assert runs["diverged"]["status"] == "diverged" and objective_value(cfg, runs["diverged"]) == math.inf


def test_best_is_the_target_metrics_best_and_a_diverged_run_the_worst(runs: dict[str, dict]) -> None:
    cfg = make_cfg(["data=digits", "objective=best"])
    for name in ("reached", "not_reached"):  # reached or not, the best val/acc the run measured
        assert objective_value(cfg, runs[name]) == runs[name]["metrics"]["conv/best_val_acc"]
    assert runs["diverged"]["metrics"]["conv/best_val_acc"] is not None  # it did hold a value before it blew up
    assert objective_value(cfg, runs["diverged"]) == -math.inf


@pytest.mark.parametrize(("overrides", "worst"), [([], math.inf), (["objective=best"], -math.inf),
                                                  (["objective=best", "data=regression"], math.inf)])
def test_a_failed_job_scores_the_worst_never_nan(overrides: list[str], worst: float) -> None:
    cfg = make_cfg(overrides)
    failed = {"status": "failed", "error": "optim.lr must be a number > 0, got -1", "overrides": []}
    assert objective_value(cfg, failed) == worst
    assert objective_value(cfg, None) == worst


@pytest.mark.parametrize(("overrides", "wanted"), [
    ([], "minimize"),
    (["objective=best"], "maximize"),
    (["objective=best", "target.metric=val/loss"], "minimize"),
    (["objective=best", "data=regression"], "minimize"),
    (["objective=best", "data=regression", "target.metric=val/mse"], "minimize"),
])
def test_direction_follows_the_objective_and_target_metric(overrides: list[str], wanted: str) -> None:
    assert direction(make_cfg(overrides)) == wanted


def test_a_typo_in_objective_is_one_line() -> None:
    with pytest.raises(UserError, match=r"^objective must be steps_to_target .* got 'bset' \(e\.g\. objective=best\)$"):
        validate_objective(make_cfg(["objective=bset"]))


def test_a_sweeper_going_the_wrong_way_is_refused() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = compose(config_name="config", overrides=["objective=best"], return_hydra_config=True)
    check_sweeper_direction(config)  # the basic sweeper optimizes nothing
    job = make_cfg(["objective=best"])
    OmegaConf.set_struct(job, False)
    wrong = OmegaConf.merge(job, {"hydra": {"sweeper": {"direction": "minimize"}}})  # as Optuna's conf has it
    with pytest.raises(UserError, match="is better larger: set hydra.sweeper.direction=maximize$"):
        check_sweeper_direction(wrong)
    check_sweeper_direction(OmegaConf.merge(job, {"hydra": {"sweeper": {"direction": "maximize"}}}))


def test_hparams_search_without_the_optuna_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "hydra_plugins.hydra_optuna_sweeper" else find_spec(name, *a))
    check_sweeper(["init=kaiming", "hparams_search=null"])
    with pytest.raises(UserError, match=r'^hparams_search=lr_optuna needs .* pip install -e "\.\[optuna\]"$'):
        check_sweeper(["-m", "hparams_search=lr_optuna"])


@pytest.mark.slow
def test_optuna_sweep_minimizes_steps_to_target(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra is not installed")
    proc = cli(["-m", "hparams_search=lr_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=3",
                "trainer.max_steps=20", "target.value=0.5", "diagnostics=false"], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = sorted((tmp_path / "outputs" / "multirun").glob("*/*"))
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scores = {}
    for path in sweep.glob("*/metrics.json"):
        result = json.loads(path.read_text())
        lr = next(float(o.split("=", 1)[1]) for o in result["overrides"] if o.startswith("optim.lr="))
        steps = result["metrics"]["conv/steps_to_target"]
        scores[lr] = math.inf if steps is None or result["status"] != "ok" else steps
    assert len(scores) == 3 and all(1e-3 <= lr <= 1.0 for lr in scores)
    assert found["best_value"] == min(scores.values()) < math.inf  # Optuna minimized exactly what main() returned
    assert scores[found["best_params"]["optim.lr"]] == found["best_value"]


@pytest.mark.slow
def test_optuna_sweep_with_the_wrong_direction_stops_before_any_job(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra is not installed")
    proc = cli(["-m", "hparams_search=lr_optuna", "hydra.sweeper.direction=maximize"], tmp_path, data_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.direction=maximize but objective=steps_to_target of val/acc is better smaller: "
        "set hydra.sweeper.direction=minimize")
    assert not list((tmp_path / "outputs" / "multirun").glob("*/*/metrics.json"))
