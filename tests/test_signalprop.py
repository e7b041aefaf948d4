"""Signal propagation at step 0 (q, c, Jacobian spectra, the Hessian's top eigenvalue) and the mean-field theory,
each against an independent computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg
from scipy.optimize import brentq
from torch import nn

from trainstudy import meanfield
from trainstudy.diagnostics import layer_statistics
from trainstudy.losses import build_loss
from trainstudy.models import mlp
from trainstudy.signalprop import hessian_max_eig, jacobian_spectra
from trainstudy.train import fit

CE = make_cfg(["loss=ce"]).loss


def mean_field_net(depth: int, width: int, sigma_w2: float, sigma_b2: float, activation: str = "tanh",
                   inputs: int = 32, outputs: int = 10) -> nn.Sequential:
    """W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²), built here by hand."""
    torch.manual_seed(0)
    model = mlp(inputs, outputs, depth, width, activation)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0, math.sqrt(sigma_w2 / layer.in_features))
                layer.bias.normal_(0, math.sqrt(sigma_b2))
    return model


def test_q_and_c_match_a_hand_written_forward_pass() -> None:
    model = mean_field_net(depth=3, width=64, sigma_w2=2.0, sigma_b2=0.1)
    x, y = torch.randn(20, 32), torch.randint(0, 10, (20,))
    rows = layer_statistics(model, build_loss(CE, "multiclass", 10), x, y)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    h = x
    for i, (row, layer) in enumerate(zip(rows, linears)):
        pre = h @ layer.weight.T + layer.bias
        q = sum(float(v) ** 2 for v in pre.flatten()) / pre.numel()
        cosines = [float(pre[a] @ pre[b] / (pre[a].norm() * pre[b].norm()))
                   for a in range(len(pre)) for b in range(len(pre)) if a != b]
        assert row["q"] == pytest.approx(q, rel=1e-5), i
        assert row["c"] == pytest.approx(sum(cosines) / len(cosines), abs=1e-5), i
        h = torch.tanh(pre)
    assert rows[0]["c"] != pytest.approx(rows[-1]["c"], abs=0.01)  # the correlations do move with depth


def jacobian_by_hand(prefix: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Singular values of d prefix(x_i)/dx_i for each example, by torch.func.jacrev on the whole prefix."""
    return [torch.linalg.svdvals(torch.func.jacrev(lambda v: prefix(v.unsqueeze(0)).squeeze(0))(xi)
                                 .reshape(-1, xi.numel()).double()) for xi in x]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_jacobian_spectra_match_svdvals_of_jacrev(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "mlp":
        model, x = mean_field_net(depth=3, width=12, sigma_w2=1.5, sigma_b2=0.05, inputs=6, outputs=3), torch.randn(5, 6)
    else:
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 4), nn.Tanh(),
                              nn.Linear(4, 3))
        x = torch.randn(5, 1, 6, 6)
    rows = jacobian_spectra(model, x, examples=4)
    cuts = [i + 1 for i, m in enumerate(model) if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(rows) == len(cuts)
    for row, cut in zip(rows, cuts):
        sv = torch.cat(jacobian_by_hand(nn.Sequential(*list(model)[:cut]), x[:4]))
        assert row["jac_sv_mean_sq"] == pytest.approx(float(sv.pow(2).mean()), rel=1e-4)
        assert row["jac_sv_std"] == pytest.approx(float(sv.std()), rel=1e-4)


def test_orthogonal_tanh_is_nearer_isometry_than_relu() -> None:
    """Pennington et al. 2017: orthogonal weights keep a tanh net's Jacobian spectrum narrow, not a ReLU one's."""
    spread = {}
    for act in ("tanh", "relu"):
        torch.manual_seed(0)
        model = mlp(64, 64, 12, 64, act)
        for layer in model:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=1.0 if act == "tanh" else math.sqrt(2))
                nn.init.zeros_(layer.bias)
        row = jacobian_spectra(model, 0.1 * torch.randn(4, 64))[-1]
        spread[act] = row["jac_sv_std"] / math.sqrt(row["jac_sv_mean_sq"])
    assert spread["tanh"] < spread["relu"] / 3, spread


def test_hessian_top_eigenvalue_matches_eigvalsh_of_the_full_hessian() -> None:
    model = mean_field_net(depth=2, width=5, sigma_w2=1.5, sigma_b2=0.05, inputs=4, outputs=3)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss = build_loss(CE, "multiclass", 3)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def of_flat(v: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(v.split([math.prod(s) for s in shapes]), shapes))))
        return loss(torch.func.functional_call(model, parts, (x,)), y)

    expected = float(torch.linalg.eigvalsh(torch.func.hessian(of_flat)(flat)).max())
    got = hessian_max_eig(model, loss, x, y, max_iter=2000, tol=1e-7)
    assert got["converged"] and 1 < got["iterations"] < 2000 and got["tol"] == 1e-7
    assert got["max_eig"] == pytest.approx(expected, rel=1e-3)
    assert all(p.grad is None for p in model.parameters())


def test_hessian_top_eigenvalue_when_the_largest_in_size_is_negative() -> None:
    # loss = Σ_i s_i (x_i · w)² / n with x = the identity: the Hessian is diag(2 s_i / n) = diag(-5, 2, 1)
    model = nn.Linear(3, 1, bias=False)

    class Signed(nn.Module):
        def forward(self, out: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return (s * out.squeeze(1) ** 2).mean()

    got = hessian_max_eig(model, Signed(), torch.eye(3), torch.tensor([-7.5, 3.0, 1.5]), max_iter=500, tol=1e-8)
    assert got["max_eig"] == pytest.approx(2.0, rel=1e-4)


def test_full_diagnostics_land_in_metrics_json_and_tensorboard_and_leave_training_alone(
        tmp_path: Path, data_dir: Path) -> None:
    short = ["data=digits", f"data_dir={data_dir}", "trainer.max_steps=20", "val_every_n_steps=10",
             "progress_bar=false", "model.depth=3", "model.width=32"]
    full = fit(make_cfg([*short, "diagnostics=full"], tmp_path / "full"))[0]
    off = fit(make_cfg([*short, "diagnostics=false"], tmp_path / "off"))[0]
    assert full["train_loss"] == off["train_loss"]  # the Hessian's start vector comes from its own generator
    written = json.loads((tmp_path / "full" / "run" / "metrics.json").read_text())["diagnostics"]
    assert len(written["layers"]) == 4 and written["hessian"]["max_eig"] > 0
    for row in written["layers"]:
        assert row["q"] > 0 and -1 <= row["c"] <= 1 and row["jac_sv_mean_sq"] > 0 and row["jac_sv_std"] >= 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "full" / "run" / "tb")).Reload()
    assert [e.step for e in events.Scalars("init/jac_sv_mean_sq")] == [1, 2, 3, 4]
    assert [e.value for e in events.Scalars("init/q")] == pytest.approx([r["q"] for r in written["layers"]])
    assert events.Scalars("init/hessian_max_eig")[0].value == pytest.approx(written["hessian"]["max_eig"])


def test_default_diagnostics_measure_q_and_c_but_not_the_costly_ones(tmp_path: Path, data_dir: Path) -> None:
    result = fit(make_cfg(["data=digits", f"data_dir={data_dir}", "trainer.max_steps=5", "val_every_n_steps=5",
                           "progress_bar=false"], tmp_path))[0]
    rows = result["diagnostics"]["layers"]
    assert all("q" in r and "c" in r and "jac_sv_mean_sq" not in r for r in rows)
    assert "hessian" not in result["diagnostics"]


# --- the mean-field theory, against integrals done another way here (a fine grid and scipy's root finder) ---

GRID = np.linspace(-10, 10, 1001)
PDF = np.exp(-GRID**2 / 2) / math.sqrt(2 * math.pi) * (GRID[1] - GRID[0])


def grid_expect(f, q: float) -> float:
    return float(np.sum(PDF * f(math.sqrt(q) * GRID)))


def grid_pair(f, q: float, c: float) -> float:
    z1, z2 = GRID[:, None], GRID[None, :]
    return float(np.sum(PDF[:, None] * PDF[None, :] * f(math.sqrt(q) * z1)
                        * f(math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2))))


def sech2(u: np.ndarray) -> np.ndarray:
    return 1 / np.cosh(u) ** 2


def tanh_q_chi(sw2: float, sb2: float) -> tuple[float, float]:
    q = brentq(lambda q: sw2 * grid_expect(lambda u: np.tanh(u) ** 2, q) + sb2 - q, 1e-6, 100)
    return q, sw2 * grid_expect(lambda u: sech2(u) ** 2, q)


def tanh_by_grid(sw2: float, sb2: float) -> tuple[float, float, float, float]:
    q, chi = tanh_q_chi(sw2, sb2)
    c = 1.0
    if chi > 1:
        c = brentq(lambda c: (sw2 * grid_pair(np.tanh, q, c) + sb2) / q - c, 0.0, 1 - 1e-6)
    chi_c = chi if c == 1.0 else sw2 * grid_pair(sech2, q, c)
    return q, chi, c, -1 / math.log(chi_c)


def test_tanh_ordered_phase_matches_the_papers_numbers_and_an_independent_integral() -> None:
    t = meanfield.theory("tanh", 1.0, 0.05)
    assert (round(t.q_star, 3), round(t.chi_1, 3), round(t.xi_c, 1)) == (0.194, 0.759, 3.6)
    q, chi, c, xi = tanh_by_grid(1.0, 0.05)
    assert (t.q_star, t.chi_1, t.c_star, t.xi_c) == pytest.approx((q, chi, c, xi), rel=1e-5)
    assert t.phase == "ordered" and t.c_star == 1.0


def test_tanh_chaotic_phase_has_c_star_below_one_and_its_own_depth_scale() -> None:
    t = meanfield.theory("tanh", 4.0, 0.05)
    q, chi, c, xi = tanh_by_grid(4.0, 0.05)
    assert t.phase == "chaotic" and chi > 1 and c < 0.9
    assert (t.q_star, t.chi_1, t.c_star, t.xi_c) == pytest.approx((q, chi, c, xi), rel=1e-4)
    assert t.xi_c != pytest.approx(-1 / math.log(t.chi_1), rel=0.1)  # ξ_c is taken at c*, not at c = 1


def test_edge_of_chaos_at_sigma_w2_1_76_where_xi_c_diverges() -> None:
    critical = brentq(lambda w: meanfield.theory("tanh", w, 0.05).chi_1 - 1, 1.2, 3.0, xtol=1e-6)
    assert critical == pytest.approx(brentq(lambda w: tanh_q_chi(w, 0.05)[1] - 1, 1.2, 3.0), abs=1e-4)
    assert critical == pytest.approx(1.76, abs=0.01)
    depth = [meanfield.theory("tanh", w, 0.05).xi_c for w in (critical - 0.2, critical - 0.02, critical + 0.02,
                                                               critical + 0.2)]
    assert depth[1] > 5 * depth[0] and depth[2] > 5 * depth[3]  # the depth scale peaks at the critical point


def test_relu_closed_forms_and_no_fixed_point_above_two() -> None:
    t = meanfield.theory("relu", 1.5, 0.1)
    assert t.q_star == pytest.approx(0.1 / (1 - 1.5 / 2), rel=1e-8)   # q = σ_w² q/2 + σ_b²
    assert t.chi_1 == pytest.approx(0.75, rel=1e-12) and t.xi_c == pytest.approx(-1 / math.log(0.75))
    assert meanfield.theory("relu", 2.5, 0.1).phase == "unbounded"


def test_wide_tanh_net_follows_the_layer_by_layer_prediction() -> None:
    sw2, sb2 = 2.5, 0.05
    model = mean_field_net(depth=8, width=1000, sigma_w2=sw2, sigma_b2=sb2, inputs=200)
    x = torch.randn(64, 200)
    x = x + 0.8 * x[:1]   # correlated inputs, so that c has somewhere to go
    rows = layer_statistics(model, build_loss(CE, "multiclass", 10), x, torch.randint(0, 10, (64,)))
    from trainstudy.signalprop import preact_c, preact_q

    predicted = meanfield.layer_predictions("tanh", sw2, sb2, float(preact_q(x)), float(preact_c(x)), 8)
    for row, (q, c) in zip(rows[:8], predicted):
        assert row["q"] == pytest.approx(q, rel=0.1) and row["c"] == pytest.approx(c, abs=0.05)
    t = meanfield.theory("tanh", sw2, sb2)
    assert rows[7]["q"] == pytest.approx(t.q_star, rel=0.1)


def load_inspect_init():
    import importlib.util

    spec = importlib.util.spec_from_file_location("inspect_init", Path(__file__).parents[1] / "scripts" / "inspect_init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inspect_init_prints_the_theory_beside_the_measured_q_and_c(capsys: pytest.CaptureFixture) -> None:
    from omegaconf import OmegaConf

    from trainstudy.signalprop import preact_c, preact_q

    cfg = OmegaConf.create({"init": {"name": "mean_field", "sigma_w2": 1.0, "sigma_b2": 0.05},
                            "model": {"activation": "tanh", "width": 32}})
    model, x = mean_field_net(depth=4, width=32, sigma_w2=1.0, sigma_b2=0.05), torch.randn(64, 32)
    rows = layer_statistics(model, build_loss(CE, "multiclass", 10), x, torch.randint(0, 10, (64,)))
    profile = {"rows": rows, "hessian": None, "q_in": float(preact_q(x)), "c_in": float(preact_c(x)),
               "seconds": (0.01, None)}
    load_inspect_init().print_profile(cfg, profile)
    out = capsys.readouterr().out.splitlines()
    assert "q* 0.1936 · chi_1 0.759 (ordered) · c* 1 · xi_c 3.627 layers" in out[0]
    predicted = meanfield.layer_predictions("tanh", 1.0, 0.05, profile["q_in"], profile["c_in"], 5)
    table = [line.split() for line in out[-5:]]
    for row, cells, (q, c) in zip(rows, table, predicted):
        assert float(cells[6]) == pytest.approx(row["q"], rel=1e-3) and float(cells[8]) == pytest.approx(q, rel=1e-3)
        assert float(cells[9]) == pytest.approx(c, abs=1e-4)


def test_inspect_init_full_prints_the_jacobian_and_the_hessian(capsys: pytest.CaptureFixture) -> None:
    script = load_inspect_init()
    cfg = make_cfg(["init=orthogonal", "model.activation=tanh", "model.width=32"])
    script.print_profile(cfg, script.depth_profile(cfg, 3, full=True))
    lines = capsys.readouterr().out.splitlines()
    first = lines[-4].split()  # the first layer's Jacobian is its weight: orthogonal, every singular value 1
    assert float(first[-2]) == pytest.approx(1.0, abs=1e-3) and float(first[-1]) < 1e-3
    hessian = next(line for line in lines if line.startswith("loss Hessian's top eigenvalue"))
    assert float(hessian.split()[4]) > 0 and "converged" in hessian
