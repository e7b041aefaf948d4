"""Performance paths keep the numbers: grouped steps train exactly as Lightning's own loop, no host sync per
step, compile and bf16-mixed run, and the benchmark runs (its timings are never asserted)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ROOT, make_cfg
from lightning.pytorch.core.optimizer import LightningOptimizer
from test_data import write_idx

from trainstudy import bench, datasets
from trainstudy.datamodule import DeviceBatches, steps_per_batch
from trainstudy.train import fit, train

SHORT = ["data=digits", "trainer.max_steps=40", "val_every_n_steps=4", "log_every_n_steps=8", "progress_bar=false"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(("intervals", "k"), [((500,), 50), ((10, 50, 500), 10), ((25, 20, 100), 5), ((7, 50, 500), 1),
                                              ((64, 128, 0), 64), ((0,), 64), ((1, 50), 1), ((97,), 1)])
def test_steps_per_batch_divides_every_interval(intervals: tuple[int, ...], k: int) -> None:
    assert steps_per_batch(*intervals) == k


@pytest.mark.parametrize(("start", "max_steps"), [(0, -1), (7, -1), (5, 9), (12, 14)])
def test_device_batches_cut_the_same_steps_into_groups_at_multiples(start: int, max_steps: int) -> None:
    """Groups hold exactly the batches of one step per batch, end at global multiples of k, at max_steps."""
    x, y = torch.arange(31).float(), torch.arange(31)
    steps_per_epoch = 8  # 31 samples, batch 4
    epoch = start // steps_per_epoch

    def items(k: int) -> list:
        return list(DeviceBatches(x, y, 4, seed=3, epoch=lambda: epoch, step=lambda: start, steps_per_batch=k,
                                  max_steps=max_steps))

    singles, groups = items(1), items(3)
    flat = [step for group in groups for step in group]
    assert len(flat) == len(singles) and all(torch.equal(a[0], b[0]) for a, b in zip(flat, [s[0] for s in singles]))
    ends = np.cumsum([len(g) for g in groups]) + start
    assert all(e % 3 == 0 for e in ends[:-1])
    epoch_end = (epoch + 1) * steps_per_epoch
    assert ends[-1] == (min(max_steps, epoch_end) if max_steps > 0 else epoch_end)


def test_grouped_steps_train_exactly_as_lightnings_automatic_optimization(tmp_path: Path, data_dir: Path) -> None:
    # a clipping threshold no gradient reaches leaves the numbers alone but makes Lightning take every step itself
    grouped = train(make_cfg([*SHORT, f"data_dir={data_dir}"], tmp_path / "grouped"))
    lightning = train(make_cfg([*SHORT, f"data_dir={data_dir}", "+trainer.gradient_clip_val=1e9"], tmp_path / "auto"))
    assert len(grouped["train_loss"]) == 40
    assert grouped["train_loss"] == lightning["train_loss"]
    assert grouped["curve"] == lightning["curve"]
    assert grouped["metrics"]["conv/samples_to_target"] == lightning["metrics"]["conv/samples_to_target"]


def test_backward_hooks_run_for_every_step_when_a_callback_has_them(tmp_path: Path, data_dir: Path) -> None:
    """Without such hooks the steps call loss.backward() themselves (see plain_backward): the same numbers."""
    class Backwards(L.Callback):
        seen = 0

        def on_after_backward(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            Backwards.seen += 1

    plain = train(make_cfg([*SHORT, f"data_dir={data_dir}"], tmp_path / "plain"))
    hooked = train(make_cfg([*SHORT, f"data_dir={data_dir}"], tmp_path / "hooked"), callbacks=[Backwards()])
    assert Backwards.seen == 40
    assert hooked["train_loss"] == plain["train_loss"]


class BeforeStep(L.Callback):
    """Records what each on_before_optimizer_step call sees."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.grad_norms: list[float] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule, optimizer: object) -> None:
        assert isinstance(optimizer, torch.optim.Optimizer) and not isinstance(optimizer, LightningOptimizer)
        self.steps.append(trainer.global_step)  # the updates done so far
        self.grad_norms.append(torch.cat([p.grad.flatten() for p in module.parameters()]).norm().item())


class BeforeStepAndBackward(BeforeStep):
    def on_after_backward(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        pass  # a backward hook: the steps then go through Lightning's optimizer and backward


def test_plain_steps_skip_lightnings_dispatch_but_not_its_hooks(tmp_path: Path, data_dir: Path) -> None:
    """On one CPU device a step calls the torch optimizer itself (plain_optimizer_step); every
    on_before_optimizer_step hook still runs once per step, at the same step and on the same gradients."""
    plain_hook, full_hook = BeforeStep(), BeforeStepAndBackward()
    plain, plain_module = fit(make_cfg([*SHORT, f"data_dir={data_dir}"], tmp_path / "plain"), [plain_hook])
    full, full_module = fit(make_cfg([*SHORT, f"data_dir={data_dir}"], tmp_path / "full"), [full_hook])
    assert plain_module._plain_step and not full_module._plain_step
    assert plain_hook.steps == full_hook.steps == list(range(40))
    assert plain_hook.grad_norms == full_hook.grad_norms
    assert plain["train_loss"] == full["train_loss"] and plain["curve"] == full["curve"]


def test_validation_and_stop_on_reach_inside_a_group_at_their_exact_step(tmp_path: Path, data_dir: Path) -> None:
    """Groups of 50 steps (checkpoints every 50); validation every 7 steps and the stop at the target happen
    between the group's steps, exactly where Lightning's one-step batches have them."""
    run = ["data=digits", "data.batch_size=16", f"data_dir={data_dir}", "trainer.max_steps=200",
           "val_every_n_steps=7", "checkpoint.every_n_steps=50", "target.value=0.7", "target.stop_on_reach=true",
           "progress_bar=false"]
    grouped = train(make_cfg(run, tmp_path / "grouped"))
    lightning = train(make_cfg([*run, "+trainer.gradient_clip_val=1e9"], tmp_path / "auto"))
    reached = grouped["metrics"]["conv/steps_to_target"]
    assert reached is not None and reached % 7 == 0 and reached % 50 != 0
    assert len(grouped["train_loss"]) == grouped["metrics"]["conv/steps"] == reached
    assert [p["step"] for p in grouped["curve"]] == list(range(0, reached + 1, 7))
    assert grouped["train_loss"] == lightning["train_loss"] and grouped["curve"] == lightning["curve"]
    assert grouped["metrics"]["conv/samples_to_target"] == lightning["metrics"]["conv/samples_to_target"]


def test_no_host_sync_per_step(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a tensor back to the host (item, tolist, float, ...) happens at validation and flush points only."""
    reads: list[str] = []

    class Count(L.Callback):  # from after the validation at step 0 to the end of training (then Lightning
        # moves the model back to the CPU)
        counting = False

        def on_train_start(self, *_: object) -> None:
            Count.counting = True

        def on_train_end(self, *_: object) -> None:  # after the tracker's last flush and validation
            Count.counting = False

    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy"):
        def counted(self: torch.Tensor, *args: object, _name: str = name, _original=getattr(torch.Tensor, name),
                    **kwargs: object) -> object:
            if Count.counting:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    cfg = make_cfg(["data=digits", f"data_dir={data_dir}", "trainer.max_steps=90", "val_every_n_steps=30",
                    "log_every_n_steps=30", "diagnostics=false", "checkpoint.every_n_steps=0", "progress_bar=false"],
                   tmp_path)
    result = train(cfg, callbacks=[Count()])
    assert len(result["train_loss"]) == 90
    assert len(reads) <= 9, Counter(reads)  # 3 validations and 3 flushes (and a little slack), not one per step


@pytest.mark.slow  # inductor compiles C++ for the CPU: ~45 s here
def test_compile_flag_trains_the_same_numbers(tmp_path: Path, data_dir: Path) -> None:
    short = ["data=digits", f"data_dir={data_dir}", "trainer.max_steps=6", "val_every_n_steps=3", "diagnostics=false"]
    eager = train(make_cfg(short, tmp_path / "eager"))
    compiled = train(make_cfg([*short, "compile=true"], tmp_path / "compiled"))
    assert compiled["status"] == "ok"
    assert np.allclose(compiled["train_loss"], eager["train_loss"], rtol=1e-4)


def test_bf16_mixed_trains_the_cnn(tmp_path: Path, data_dir: Path) -> None:
    short = ["data=mnist", "data.source=bundled", "data.val_fraction=0.02", "data.batch_size=32", "model=cnn",
             f"data_dir={data_dir}", "trainer.max_steps=6", "val_every_n_steps=3", "diagnostics=false", "trainer=cpu"]
    full = train(make_cfg(short, tmp_path / "fp32"))
    mixed = train(make_cfg([*short, "trainer.precision=bf16-mixed"], tmp_path / "bf16"))
    assert mixed["status"] == "ok" and all(np.isfinite(mixed["train_loss"]))
    assert mixed["train_loss"] != full["train_loss"]  # autocast did run in bfloat16 ...
    assert np.allclose(mixed["train_loss"], full["train_loss"], rtol=0.05)  # ... and stayed close


def fake_fashion_mnist(folder: Path, n_train: int = 120, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = (labels[:, None, None] * 25 + rng.integers(0, 10, (n, 28, 28))).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz=True)


def test_bench_case_runs_every_variant_on_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    fake_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw")
    staged = bench.stage_fashion_mnist(bench.find_fashion_mnist(tmp_path / "data"), tmp_path / "staged", limit=100)
    case = bench.Case("mlp", 32)
    cfg = make_cfg([*case.overrides(), f"data_dir={staged}", "trainer.accelerator=cpu"])
    rows, agreement = bench.run_case(case, cfg, rounds=2, epochs=1, out_dir=tmp_path / "runs")
    assert [r.variant for r in rows] == list(bench.VARIANTS)
    assert all(len(r.epochs) == 2 and r.seconds > 0 for r in rows)  # one timed epoch per round
    assert agreement == 0.0  # raw and trainstudy trained the same model on the same batches
    assert "x raw" in bench.table(rows)
    raw, trainstudy = rows[0], rows[1]
    expected = statistics.median(t.seconds / r.seconds for t, r in zip(trainstudy.epochs, raw.epochs))
    assert bench.paired_ratio(trainstudy, raw) == expected
    assert bench.row_json(trainstudy, raw)["paired_ratio_to_raw"] == expected
    assert bench.paired_ratio(rows[2], raw) is None  # the DataLoader variants don't run next to raw


def test_bench_raw_loop_steps_the_runs_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With scheduler=cosine every variant trains by the run's schedule: raw's losses stay trainstudy's."""
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    fake_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw", n_train=400)
    staged = bench.stage_fashion_mnist(bench.find_fashion_mnist(tmp_path / "data"), tmp_path / "staged")
    case = bench.Case("mlp", 16)
    cfg = make_cfg([*case.overrides(), f"data_dir={staged}", "trainer.accelerator=cpu", "scheduler=cosine",
                    "optim.lr=0.5"])
    rows, agreement = bench.run_case(case, cfg, rounds=1, epochs=1, out_dir=tmp_path / "runs",
                                     variants=("raw", "trainstudy", "tensors"))
    assert [r.variant for r in rows] == ["raw", "trainstudy", "tensors"]
    assert agreement == 0.0  # a raw loop at a constant lr parts from trainstudy's losses after the first step


def test_bench_says_how_to_get_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    with pytest.raises(Exception, match="apt-get install dataset-fashion-mnist"):
        bench.find_fashion_mnist(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not datasets.DEBIAN_FASHION_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_bench_script_tiny_on_real_fashion_mnist(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--tiny", "--extras", "--device", "cpu",
                           "--data-dir", str(tmp_path / "data"), "--json", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert [c["case"] for c in report["cases"]] == ["mlp-128", "mlp-512", "cnn-128"]
    for case in report["cases"]:
        assert [r["variant"] for r in case["rows"]] == list(bench.VARIANTS)
        assert case["raw_vs_trainstudy_first_epoch_max_loss_diff"] == 0.0
    assert "x raw" in proc.stdout
    extras = report["extras"]  # the fixed costs, each measured once here (the figures are not judged)
    assert set(extras["data_loads"]) == {"fashion_mnist", "mnist bundled"}
    assert all(f["cached_median_s"] > 0 for f in extras["data_loads"].values())
    assert extras["startup"]["first_step_s"] > 0 and extras["startup"]["import_torch_lightning_s"] > 0
    assert extras["sweep"]["jobs"] == 2 and extras["sweep"]["train_s"] > 0
    assert "per job beyond training" in proc.stdout


@pytest.mark.gpu
@needs_gpu
def test_gpu_run_matches_the_cpu_run(tmp_path: Path, data_dir: Path) -> None:
    short = ["data=digits", f"data_dir={data_dir}", "trainer.max_steps=20", "val_every_n_steps=10"]
    cpu = train(make_cfg([*short, "trainer=cpu"], tmp_path / "cpu"))
    gpu = train(make_cfg([*short, "trainer=gpu"], tmp_path / "gpu"))
    assert gpu["device"].startswith("cuda")
    assert np.allclose(gpu["train_loss"], cpu["train_loss"], rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@needs_gpu
def test_gpu_bf16_compiled_cnn_and_the_tiny_bench(tmp_path: Path, data_dir: Path) -> None:
    result = train(make_cfg(["data=mnist", "data.source=bundled", "model=cnn", f"data_dir={data_dir}", "trainer=gpu",
                             "trainer.precision=bf16-mixed", "compile=true", "trainer.max_steps=20",
                             "val_every_n_steps=10"], tmp_path / "run"))
    assert result["status"] == "ok" and all(np.isfinite(result["train_loss"]))
    if datasets.DEBIAN_FASHION_DIR.is_dir():
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--tiny", "--device", "cuda"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script runs its minutes-long check")
def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_0(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=60, env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "no CUDA GPU: nothing to check\n", "")
    assert not (tmp_path / "out").exists()  # nothing was run, so nothing was written
