"""Lightning's own callbacks see the study's validations at their step: callback_metrics, EarlyStopping,
ModelCheckpoint, the callbacks group's composition and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF, make_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException

from trainstudy.data import load_data
from trainstudy.errors import UserError, explain
from trainstudy.train import fit, train, validate

QUICK = ["data=digits", "progress_bar=false", "val_every_n_steps=5", "trainer.max_epochs=-1"]


class Seen(L.Callback):
    """What a user's callback sees of the run's metrics, at each validation and at each batch's end."""

    def __init__(self) -> None:
        self.validations: list[tuple[int, float, float]] = []
        self.batch_ends: list[tuple[int, float | None]] = []

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        self.validations.append((trainer.global_step, float(m["val/acc"]), float(m["val/loss"])))

    def on_train_batch_end(self, trainer: L.Trainer, *_: object) -> None:
        value = trainer.callback_metrics.get("val/acc")
        self.batch_ends.append((trainer.global_step, None if value is None else float(value)))


def test_callback_metrics_hold_each_validation_at_its_step(tmp_path: Path, data_dir: Path) -> None:
    seen = Seen()
    result = train(make_cfg([*QUICK, f"data_dir={data_dir}", "trainer.max_steps=20"], tmp_path), callbacks=[seen])
    # every validation from step 1 on (step 0 measures the init), with exactly the curve's values
    assert seen.validations == [(p["step"], p["val/acc"], p["val/loss"]) for p in result["curve"][1:]]


def test_early_stopping_stops_when_val_acc_stops_improving(tmp_path: Path, data_dir: Path) -> None:
    patience = 3
    result = train(make_cfg([*QUICK, f"data_dir={data_dir}", "trainer.max_steps=3000", "callbacks=early_stopping",
                             f"callbacks.early_stopping.patience={patience}"], tmp_path))
    curve = [p["val/acc"] for p in result["curve"][1:]]
    assert result["metrics"]["conv/steps"] < 3000
    assert result["metrics"]["conv/steps"] == result["curve"][-1]["step"]  # it stopped at a validation
    # the last `patience` validations did not beat the best before them; every earlier window did improve
    assert max(curve[-patience:]) <= max(curve[:-patience])


def test_model_checkpoint_keeps_the_weights_of_the_best_validation(tmp_path: Path, data_dir: Path) -> None:
    cfg = make_cfg([*QUICK, f"data_dir={data_dir}", "trainer.max_steps=60", "callbacks=[model_checkpoint]"],
                   tmp_path)
    result, module = fit(cfg)
    folder = tmp_path / "run" / "checkpoints" / "model_checkpoint"
    best, = folder.glob("best-*.ckpt")
    assert (folder / "last.ckpt").is_file() and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    module.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    splits = load_data(cfg.data, cfg.data_dir)
    _, acc = module.evaluate(splits.x_val, splits.y_val)
    assert acc == result["metrics"]["conv/best_val_acc"]
    assert best.name == f"best-step={next(p['step'] for p in result['curve'][1:] if p['val/acc'] == acc)}.ckpt"


def test_a_callback_by_target_acting_at_batch_ends_sees_every_validation(tmp_path: Path, data_dir: Path) -> None:
    seen = Seen()
    mc = "+callbacks.every_10"
    cfg = make_cfg([*QUICK, f"data_dir={data_dir}", "trainer.max_steps=40",
                    f"{mc}._target_=lightning.pytorch.callbacks.ModelCheckpoint", f"{mc}.monitor=val/acc",
                    f"{mc}.mode=max", f"{mc}.every_n_train_steps=10", f"{mc}.dirpath={tmp_path / 'every_10'}"],
                   tmp_path)
    with pytest.warns(UserWarning, match="pre-optimization state"):  # Lightning's note on manual optimization
        result = train(cfg, callbacks=[seen])
    acc = {p["step"]: p["val/acc"] for p in result["curve"]}
    # Lightning batches end at every validation step, where callback_metrics hold that step's values
    assert {step for step, _ in seen.batch_ends} >= set(acc) - {0}
    assert all(value == acc[step] for step, value in seen.batch_ends if step in acc)
    ckpt = torch.load(next((tmp_path / "every_10").glob("*.ckpt")), weights_only=False)
    best_score = next(v for k, v in ckpt["callbacks"].items() if "ModelCheckpoint" in k)["best_model_score"]
    assert float(best_score) == max(acc[s] for s in (10, 20, 30, 40))


def test_the_studys_checkpoint_keeps_lightnings_callback_state(tmp_path: Path, data_dir: Path) -> None:
    train(make_cfg([*QUICK, f"data_dir={data_dir}", "trainer.max_steps=10", "callbacks=early_stopping"], tmp_path))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("EarlyStopping"))
    assert state["patience"] == 5 and state["best_score"] > 0.1  # resume= restores it with the weights


def test_callbacks_compose_as_a_list_and_in_the_templates_list_style(tmp_path: Path) -> None:
    assert set(make_cfg(["callbacks=[early_stopping,model_checkpoint]"]).callbacks) == {"early_stopping",
                                                                                        "model_checkpoint"}
    assert not make_cfg([]).callbacks  # default: the study's own only
    (tmp_path / "callbacks").mkdir()
    (tmp_path / "callbacks" / "mine.yaml").write_text(
        "defaults:\n  - early_stopping\n  - lr_monitor\n  - _self_\nearly_stopping:\n  patience: 9\n")
    cfg = make_cfg([f"hydra.searchpath=[file://{tmp_path}]", "callbacks=mine"])
    assert set(cfg.callbacks) == {"early_stopping", "lr_monitor"} and cfg.callbacks.early_stopping.patience == 9


@pytest.mark.parametrize(("overrides", "message"), [
    (["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/mse"],
     "callbacks.early_stopping.monitor=val/mse is a metric this run never logs; it logs: val/loss, val/acc"),
    (["data=regression", "loss=mse", "callbacks=model_checkpoint", "callbacks.model_checkpoint.monitor=val/acc"],
     "monitor=val/acc is a metric this run never logs; it logs: val/loss, val/mse"),
    (["+callbacks.x._target_=lightning.pytorch.callbacks.EarlyStoping"], "callbacks.x._target_=.* cannot be imported"),
    (["+callbacks.x._target_=torch.nn.Linear"], "is not a Lightning callback"),
    (["callbacks=early_stopping", "+callbacks.early_stopping.patiense=3"], "did you mean callbacks.early_stopping.patience"),
])
def test_a_bad_callback_is_one_line_before_any_data(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        validate(make_cfg(overrides))


def test_an_unknown_callbacks_option_in_a_list_names_the_options() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # as while train.py composes
        with pytest.raises(MissingConfigException) as e:
            compose(config_name="config", overrides=["callbacks=[early_stopping,model_chekpoint]"])
        assert explain(e.value).startswith("unknown callbacks option 'model_chekpoint' (did you mean "
                                           "model_checkpoint?); choose one of: default, early_stopping")
