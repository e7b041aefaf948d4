"""A run or sweep folder belongs to one process: default folders are taken fresh, named ones are locked, an
earlier sweep's folder is not written over."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainstudy import claims
from trainstudy.errors import UserError

HOLD = "import sys, time; from pathlib import Path; from trainstudy.claims import claim; claim(Path(sys.argv[1])); " \
       "print('held', flush=True); time.sleep(60)"


def test_a_folder_another_live_process_holds_is_refused_with_its_pid(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(claims.__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"is in use by another run \(pid {holder.pid}\)"):
            claims.claim(folder)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    time.sleep(0.1)
    claims.claim(folder)  # the kernel dropped the dead holder's lock: nothing stale to clean up
    claims.claim(folder)  # and a process may claim what it holds again


def test_default_folders_are_fresh_each_time(tmp_path: Path) -> None:
    pattern = str(tmp_path / "runs" / "2026-12-02" / "14-35-02")
    first, second = claims.fresh_folder(pattern), claims.fresh_folder(pattern)
    assert (first, second) == (pattern, pattern + "_2")  # never the same folder twice, even in one second
    assert (Path(second) / claims.LOCK).read_text() == str(os.getpid())


def test_named_folders_are_claimed_before_hydra_and_earlier_sweeps_kept(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(UserError, match="holds an earlier sweep.*hydra/launcher=vectorized"):
        claims.claim_named(["-m", f"hydra.sweep.dir={sweep}", "seed=0,1"])
    claims.claim_named(["-m", "hydra/launcher=vectorized", f"hydra.sweep.dir={sweep}"])  # skips finished jobs
    assert (sweep / claims.LOCK).exists()
    run = tmp_path / "run"
    monkeypatch.setenv("LOCAL_RANK", "1")  # rank 1 of a DDP run: its rank 0 holds the folder
    claims.claim_named([f"hydra.run.dir={run}"])
    assert not run.exists()
    monkeypatch.delenv("LOCAL_RANK")
    claims.claim_named([f"hydra.run.dir='{run}'"])
    assert (run / claims.LOCK).read_text() == str(os.getpid())
