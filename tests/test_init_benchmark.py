"""experiment=init_benchmark: four workloads (data × model × loss) × five inits × three seeds, and each
workload's jobs train as one vectorized group (what `hydra/launcher=vectorized` groups by)."""

from __future__ import annotations

from conftest import make_cfg
from test_sweeps import preset_params

from trainstudy.vectorized import group_key, solo_reason

WORKLOADS = {"digits_mlp": ("digits", "mlp", "ce"), "fashion_mlp": ("fashion_mnist", "mlp", "ce"),
             "fashion_cnn": ("fashion_mnist", "cnn", "ce"), "regression_mlp": ("regression", "mlp", "mse")}


def test_the_preset_spans_four_workloads_five_inits_three_seeds() -> None:
    params = preset_params("init_benchmark")
    assert set(params["workload"]) == set(WORKLOADS)
    assert len(params["init"]) == 5 and len(params["seed"]) == 3


def test_each_workload_is_one_vectorized_group() -> None:
    keys = set()
    for workload, (data, model, loss) in WORKLOADS.items():
        # the two ends of the group: the first and the last init, other seeds
        a = make_cfg(["experiment=init_benchmark", f"workload={workload}", "init=default", "seed=0"])
        b = make_cfg(["experiment=init_benchmark", f"workload={workload}", "init=lsuv", "seed=2"])
        assert (a.data.name, a.model.name, a.loss.name) == (data, model, loss)
        assert solo_reason(a) is None and solo_reason(b) is None
        assert group_key(a) == group_key(b)
        keys.add(group_key(a))
    assert len(keys) == len(WORKLOADS)
