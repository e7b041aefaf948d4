"""`python train.py --help` tells a newcomer what trainstudy does and what to type; it and `--cfg` start fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

HEAVY = ("torch", "lightning")


def python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """This checkout's code in a fresh interpreter (not whichever trainstudy the environment installed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# Runs train.py as `python train.py` would, then says which heavy packages the process imported on its way.
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write("heavy: %s\\n" % sorted(m for m in {heavy!r} if m in sys.modules)))
sys.argv = [{train!r}, *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def sections(text: str) -> dict[str, str]:
    """The help's ``== Title ==`` sections by the title's first word."""
    out: dict[str, str] = {}
    for block in text.split("\n== ")[1:]:
        title, _, body = block.partition(" ==")
        out[title.split()[0]] = body
    return out


@pytest.fixture(scope="module")
def help_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    return python([str(ROOT / "train.py"), "--help"], tmp_path_factory.mktemp("help"))


@pytest.mark.slow
def test_help_names_every_group_with_its_options(help_run: subprocess.CompletedProcess) -> None:
    assert help_run.returncode == 0, help_run.stderr
    assert "powered by Hydra." not in help_run.stdout  # Hydra's generic template is gone
    groups = sections(help_run.stdout)["Groups"]
    for group in ("data", "model", "init", "loss", "optim", "trainer", "logger", "experiment"):
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in groups


@pytest.mark.slow
def test_help_describes_every_preset_and_launcher(help_run: subprocess.CompletedProcess) -> None:
    found = sections(help_run.stdout)
    presets = [line.split()[0] for line in found["Presets"].splitlines()[1:] if line.strip()]
    assert sorted(presets) == sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        launchers = GlobalHydra.instance().config_loader().get_group_options("hydra/launcher")
    described = [line.split()[0] for line in found["Launchers"].splitlines()[1:] if line.strip()]
    assert sorted(described) == sorted(launchers)  # vectorized, joblib, submitit_* come from installed plugins


@pytest.mark.slow
def test_help_gives_examples_and_hides_internal_paths(help_run: subprocess.CompletedProcess) -> None:
    examples = [line for line in sections(help_run.stdout)["Examples"].splitlines() if line.startswith("python ")]
    assert len(examples) >= 3 and any(" -m " in e for e in examples) and any("experiment=" in e for e in examples)
    assert "paths." not in help_run.stdout and "output_dir" not in help_run.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "needle"), [(["--help"], "== Examples =="), (["--cfg", "job"], "max_steps:")])
def test_help_and_cfg_start_without_torch(flags: list[str], needle: str, tmp_path: Path) -> None:
    proc = python(["-c", PROBE.format(heavy=HEAVY, train=str(ROOT / "train.py")), *flags], tmp_path)
    assert proc.returncode == 0 and needle in proc.stdout, proc.stderr
    assert "heavy: []" in proc.stderr


def test_importing_the_cli_does_not_import_torch(tmp_path: Path) -> None:
    code = f"import sys, trainstudy.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    proc = python(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
