"""A user's mistake: one line naming it and what to type instead, a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF
from test_train import cli
from trainstudy.errors import explain


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


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), [
    (["init=kaiminng"], "unknown init option 'kaiminng' (did you mean kaiming?)"),
    (["init=normal", "init.stdd=0.1"], "unknown key 'init.stdd'"),
    (["-m", "init=xavier,kaiminng"], "unknown init option 'kaiminng'"),
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
