"""Shared test helpers: compose the project's real configs, run tiny trainings in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def make_cfg(overrides: list[str] | None = None, tmp_path: Path | None = None) -> DictConfig:
    """The config `python train.py <overrides>` would run, with its folders under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    if tmp_path is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.tb_dir = str(tmp_path / "run" / "tb")
    return cfg


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data_dir for the whole session, so the bundled digits are parsed once and then cached."""
    return tmp_path_factory.mktemp("data")
