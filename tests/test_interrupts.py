"""Ctrl-C and SIGTERM: a joblib sweep stops cleanly whether the signal reaches its process or its whole process
group; the first signal decides and a second one never cuts a record short; start-up interrupts end in one line.

The subprocess tests start their child in a session of its own and kill what is left of its group at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CONF, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_vectorized import member_cfgs

from trainstudy import interrupts, vectorized
from trainstudy.vectorized import GroupInterrupted, train_group

# a million steps (over an hour): a run only ends "interrupted", and within the tests' timeouts, if the signal stopped it
LONG = ["data=digits", "trainer.max_steps=1000000", "trainer.max_epochs=-1", "checkpoint.every_n_steps=20"]
MESSAGE = "before training started; nothing to resume"


def start(args: list[str], cwd: Path, data_dir: Path) -> tuple[subprocess.Popen, Path]:
    """``python train.py args`` in a session (and process group) of its own; its output goes to a file."""
    log = cwd / "output.txt"
    env = {**os.environ, "TRAINSTUDY_DATA_DIR": str(data_dir)}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def group_alive(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies waiting for their reaper don't)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen]]:
    """The processes a test starts; whatever is left of their groups is killed at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        for pid in group_alive(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes in /proc")
@pytest.mark.parametrize("to", ["parent", "group"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_joblib_sweep_cleanly(to: str, sig: signal.Signals, tmp_path: Path, data_dir: Path,
                                               cleanup: list[subprocess.Popen]) -> None:
    sweep = tmp_path / "sweep"
    proc, log = start(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *LONG, "seed=0,1,2",
                       f"hydra.sweep.dir={sweep}"], tmp_path, data_dir)
    cleanup.append(proc)
    wait_until(lambda: all((sweep / j / "checkpoints" / "last.ckpt").exists() for j in "01"), proc)
    sent = time.time()
    if to == "group":  # what Ctrl-C at a terminal, or a batch system stopping a job, does
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    # records within seconds (asserted below); the exit itself waits for loky to join its workers: ~12 s on a
    # quiet machine, and once over 120 s while a pip resolve shared its two cores
    proc.wait(timeout=300)
    output = log.read_text()
    assert proc.returncode == 128 + sig, output[-3000:]
    for job in "01":  # both running jobs: stopped with their checkpoint and record, within seconds
        record = sweep / job / "metrics.json"
        assert json.loads(record.read_text())["status"] == "interrupted"
        # promptly: ~2 s on a quiet machine, 120 s once on a loaded one (a bound in steps: see LONG)
        assert record.stat().st_mtime - sent < 240
        assert (sweep / job / "checkpoints" / "last.ckpt").stat().st_mtime - sent < 240
    assert not (sweep / "2").exists()  # queued, never started
    assert not (sweep / ".stopping").exists()
    assert "Traceback" not in output
    assert f"sweep interrupted ({sig.name}): 2 jobs stopped with a checkpoint, 1 not started" in output
    assert f"python train.py resume={sweep / '0'}" in output and "checkpoint.every_n_steps=20 seed=2" in output
    assert "2 jobs\n  seed=" in output  # the summary table
    deadline = time.monotonic() + 30  # workers and loky's resource tracker leave with the sweep
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_alive(proc.pid) == []


@pytest.mark.slow
@pytest.mark.parametrize("second", ["stopping", "exiting"])
def test_ctrl_c_twice_still_writes_the_record(second: str, tmp_path: Path, data_dir: Path,
                                              cleanup: list[subprocess.Popen]) -> None:
    run = tmp_path / "run"
    proc, log = start([*LONG, f"hydra.run.dir={run}"], tmp_path, data_dir)
    cleanup.append(proc)
    wait_until(lambda: (run / "checkpoints" / "last.ckpt").exists(), proc)
    os.killpg(proc.pid, signal.SIGINT)
    if second == "stopping":  # while the run saves its checkpoint and record
        time.sleep(0.02)
    else:  # after its last line, as Python finalizes (which once reset the handler: killed by SIGINT, -2)
        wait_until(lambda: "interrupted (SIGINT) at step" in log.read_text(), proc, timeout=120)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    output = log.read_text()
    assert proc.returncode == 128 + signal.SIGINT, output
    assert "Traceback" not in output
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    assert "interrupted (SIGINT) at step" in output and f"python train.py resume={run}" in output


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "when"), [(signal.SIGTERM, "loading"), (signal.SIGINT, "loading"),
                                           (signal.SIGTERM, "importing")], ids=["SIGTERM-loading",
                                                                                "SIGINT-loading", "SIGTERM-importing"])
def test_an_interrupt_during_start_up_is_one_line(sig: signal.Signals, when: str, tmp_path: Path,
                                                   cleanup: list[subprocess.Popen]) -> None:
    run = tmp_path / "run"
    # a data_dir of its own: the digits are parsed and cached in this run, a long enough start-up to hit
    proc, log = start([*LONG, f"hydra.run.dir={run}"], tmp_path, tmp_path / "data")
    cleanup.append(proc)
    if when == "loading":  # Hydra has written the run's config: the task is validating and loading its data
        wait_until(lambda: (run / ".hydra" / "overrides.yaml").exists(), proc)
    else:
        time.sleep(1.0)  # past the interpreter's start, inside the imports or composition
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert proc.returncode == 128 + sig, lines
    assert lines[-1] == f"interrupted ({sig.name}) {MESSAGE}" and "Traceback" not in log.read_text()
    assert not (run / "metrics.json").exists()


DRIVER = """
import atexit, os, signal, sys, time
from pathlib import Path
from trainstudy import interrupts
interrupts.install(interrupts.{action})  # as train.py does, before its imports
interrupts.on_exit(lambda: Path(sys.argv[1]).write_text("ran"))  # a clean-up (the run folder's claim)
atexit.register(lambda: print("an atexit function's output"))  # not run: half-imported modules' misbehave

def library_code():  # start-up code that turns whatever it meets into an error of its own (a bare except, or
    try:  # state left half-made: numpy's lazy attributes recursing mid-import, omegaconf's half-built node)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except BaseException as e:
        raise RuntimeError("library code failed") from e

library_code()
print("not stopped")
"""


@pytest.mark.parametrize("action", ["exit_process", "exit_now"])
def test_a_start_up_signal_inside_code_that_catches_everything_is_one_line(action: str, tmp_path: Path) -> None:
    script, ran = tmp_path / "driver.py", tmp_path / "atexit.txt"
    script.write_text(DRIVER.format(action=action))
    proc = subprocess.run([sys.executable, str(script), str(ran)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if action == "exit_now":  # a SystemExit raised there comes out as the other error: why the process leaves
        assert proc.returncode == 1 and "RuntimeError: library code failed" in proc.stderr  # at once
        return
    assert proc.returncode == 128 + signal.SIGTERM, lines
    assert lines == [f"interrupted (SIGTERM) {MESSAGE}"]
    assert ran.read_text() == "ran"


def test_a_second_sigterm_waits_for_every_members_record(tmp_path: Path, data_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupts, "_first", None)  # this process's signals stay this test's
    real_validate, real_finish = vectorized._validate, vectorized.finish_run

    def sigterm_at_step_10(members, stacked, losses, splits, classification, clock, step):
        if step == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        real_validate(members, stacked, losses, splits, classification, clock, step)

    def sigterm_again(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(vectorized, "_validate", sigterm_at_step_10)
    monkeypatch.setattr(vectorized, "finish_run", sigterm_again)
    cfgs = member_cfgs([], [["seed=0"], ["seed=1"]], tmp_path, data_dir)
    with pytest.raises(GroupInterrupted, match="SIGTERM"):
        train_group(cfgs)
    for i in range(2):
        assert json.loads((tmp_path / str(i) / "metrics.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # pytest's process gets its own handler back


def test_joblib_option_is_the_stoppable_launcher() -> None:
    """The option is taken over from a Hydra hook (joblib_launcher.JoblibOption): fails loudly if Hydra changes."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("trainstudy_launcher.joblib_launcher.StoppableJoblibLauncher")
    assert (cfg.hydra.launcher.n_jobs, cfg.hydra.launcher.pre_dispatch) == (2, "2*n_jobs")  # the stock keys


AFTER_THE_RUN = """
import os, runpy, signal, sys, time
import trainstudy.cli as cli

where = sys.argv[1]
real = getattr(cli, where)

def signalled(*args, **kwargs):  # a SIGTERM arrives while the finished run's end (or sweep's report) is written
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    return real(*args, **kwargs)

setattr(cli, where, signalled)
sys.argv = [{train!r}, *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["end_line", "write_sweep_report"])
def test_a_signal_after_the_run_says_its_record_is_complete(where: str, tmp_path: Path, data_dir: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(AFTER_THE_RUN.format(train=str(ROOT / "train.py")))
    sweep = where == "write_sweep_report"
    args = [*(["-m", "seed=0", f"hydra.sweep.dir={tmp_path / 'sweep'}"] if sweep else
              [f"hydra.run.dir={tmp_path / 'run'}"]),
            "data=digits", "trainer.max_steps=10", "val_every_n_steps=5", f"data_dir={data_dir}"]
    proc = subprocess.run([sys.executable, str(script), where, *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and MESSAGE not in output
    if sweep:
        assert "interrupted (SIGTERM) while writing the sweep's report; every job's record is complete" in output
        assert "(python scripts/report.py sweep writes the report)" in output  # the folder as the user sees it
        record = tmp_path / "sweep" / "0" / "metrics.json"
    else:
        assert "interrupted (SIGTERM) after the run finished; its record is complete (" in output
        record = tmp_path / "run" / "metrics.json"
    assert json.loads(record.read_text())["status"] == "ok"
