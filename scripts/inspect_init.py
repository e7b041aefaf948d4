"""Show what an init strategy does, the way the tutorial prints it, and check its std against the formula.

    python scripts/inspect_init.py init=constant init.value=7.7          # Linear(2, 4), as in the tutorial
    python scripts/inspect_init.py init=fixed                            # the tutorial's Linear(2, 2) on x
    python scripts/inspect_init.py init=fixed init.weight=[[1,2,3]] --input [[1,0,0]]   # your own values
    python scripts/inspect_init.py init=kaiming_normal init.mode=fan_out --small 1 4 --large 500 1000
    python scripts/inspect_init.py init=xavier_normal --depth 20    # act std, q and c per layer of a deep MLP
    python scripts/inspect_init.py init=orthogonal model.activation=tanh --depth 20 --full   # + Jacobian, Hessian
    python scripts/inspect_init.py init=mean_field init.sigma_w2=1.76 model.activation=tanh --depth 30
                                                                    # + the mean-field theory beside q and c

Takes the same Hydra overrides as train.py (init=..., init.<param>=..., model.activation=...); a mistake in
them ends in one line, as train.py's do.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainstudy.diagnostics import layer_statistics
from trainstudy.errors import UserError, report_user_errors
from trainstudy.inits import apply_init
from trainstudy.losses import build_loss
from trainstudy.meanfield import ACTIVATIONS as THEORY_ACTIVATIONS
from trainstudy.meanfield import layer_predictions, theory
from trainstudy.models import mlp
from trainstudy.signalprop import full_diagnostics, preact_c, preact_q

CONF = Path(__file__).resolve().parents[1] / "conf"
# The tutorial's fixed example (section 1.4): net = nn.Linear(2, 2); net.weight.data = [[0.1, 0.2], [0.3, 0.4]];
# print(net(torch.tensor([[0.1, 0.95]]))). Its bias was PyTorch's own random init, which no seed recovers;
# the values it printed are pinned here so that `init=fixed` alone prints the tutorial's output.
TUTORIAL_FIXED = {"weight": [[0.1, 0.2], [0.3, 0.4]], "bias": [-0.4744, -0.3748]}
TUTORIAL_INPUT = [[0.1, 0.95]]


def nested_list(text: str) -> list:
    """An --input value: a JSON list of rows, e.g. [[0.1,0.95]]."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"expected a list of rows such as [[0.1,0.95]], got {text!r}")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", nargs=2, type=int, default=None, metavar=("IN", "OUT"),
                        help="the Linear layer printed in full (default: 2 4; for init=fixed, init.weight's shape)")
    parser.add_argument("--large", nargs=2, type=int, default=[1000, 1000], metavar=("IN", "OUT"),
                        help="the Linear layer whose statistics are measured (default: 1000 1000; "
                             "not for init=fixed, whose values fit one layer's shape)")
    parser.add_argument("--input", type=nested_list, default=None, metavar="ROWS",
                        help="also print the small layer's output on this batch, e.g. [[0.1,0.95]] "
                             "(default for init=fixed with no init.weight/init.bias: the tutorial's x)")
    parser.add_argument("--depth", type=int, default=0,
                        help="also print per-layer statistics of an MLP this deep (model.width wide, "
                             "model.activation) on a batch of 512 standard-normal inputs")
    parser.add_argument("--full", action="store_true",
                        help="with --depth: also the Jacobian spectra and the Hessian's top eigenvalue "
                             "(diagnostics=full's measurements), and what each costs")
    args, overrides = parser.parse_known_args(argv)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    fixed = cfg.init.name == "fixed"
    if fixed and cfg.init.weight is None and cfg.init.bias is None:
        cfg.init.weight, cfg.init.bias = TUTORIAL_FIXED["weight"], TUTORIAL_FIXED["bias"]
        args.input = TUTORIAL_INPUT if args.input is None else args.input
    small_shape = args.small or (weight_shape(cfg.init.weight) if fixed and cfg.init.weight is not None else [2, 4])
    activation = cfg.model.get("activation")
    torch.manual_seed(cfg.seed)

    small = nn.Linear(*small_shape)
    # a batch of standard-normal inputs, for the data-dependent init (lsuv)
    apply_init(nn.Sequential(small), cfg.init, activation, batch=torch.randn(512, small_shape[0]))
    output = small(layer_input(args.input, small_shape)) if args.input is not None else None
    large = None
    if not fixed:
        large = nn.Linear(*args.large)
        aim = apply_init(nn.Sequential(large), cfg.init, activation, batch=torch.randn(512, args.large[0]))["0"]
    profile = depth_profile(cfg, args.depth, args.full) if args.depth else None

    x_txt = f", x = {args.input}" if output is not None else ""
    print(f"init={cfg.init.name} on nn.Linear({small_shape[0]}, {small_shape[1]}){x_txt}:")
    if output is not None:
        print(output)  # first, as the tutorial prints it
    print(small.weight)
    print(small.bias)
    if large is None:
        print("\nno std statistics for init=fixed: explicit values aim for no std (and fit one shape only)")
    else:
        w = large.weight
        print(f"\nnn.Linear({args.large[0]}, {args.large[1]}), {w.numel():,} weights: "
              f"mean {w.mean().item():+.5f}  std {w.std().item():.5f}  "
              f"aim {'n/a (no formula fixes it)' if aim is None else f'{aim:.5f}'}")
    if profile:
        print(f"\n{args.depth}-layer {cfg.model.activation} MLP, width {cfg.model.width}, init={cfg.init.name}:")
        print_profile(cfg, profile)
    return 0


def weight_shape(weight: object) -> list[int]:
    """(in, out) of the Linear layer an init.weight fits: a [out, in] nested list."""
    try:
        shape = list(torch.as_tensor(OmegaConf.to_object(weight) if OmegaConf.is_config(weight) else weight).shape)
    except (TypeError, ValueError) as e:
        raise UserError(f"init.weight must be a nested list of numbers ({e})") from None
    if len(shape) != 2:
        raise UserError(f"init.weight has shape {shape}; a Linear layer's weight is [out, in], "
                        "e.g. init.weight=[[0.1,0.2],[0.3,0.4]]")
    return [shape[1], shape[0]]


def layer_input(rows: list, shape: list[int]) -> torch.Tensor:
    """The --input batch as a tensor, checked against the layer's in_features."""
    try:
        x = torch.as_tensor(rows, dtype=torch.float32)
    except (TypeError, ValueError) as e:
        raise UserError(f"--input must be a list of rows of numbers ({e})") from None
    if x.dim() != 2 or x.shape[1] != shape[0]:
        example = ",".join(["0.0"] * shape[0])
        raise UserError(f"--input has shape {list(x.shape)} but nn.Linear({shape[0]}, {shape[1]}) takes "
                        f"[batch, {shape[0]}], e.g. --input [[{example}]]")
    return x


def depth_profile(cfg: DictConfig, depth: int, full: bool = False) -> dict:
    """Glorot & Bengio's picture as a table: per-layer statistics of a deep MLP at init (cross entropy, 10 classes);
    with ``full`` also the Jacobian spectra and the Hessian. Also the inputs' q and c, and the seconds each took."""
    width, activation = cfg.model.width, cfg.model.activation
    x, y = torch.randn(512, width), torch.randint(0, 10, (512,))
    model = mlp(width, 10, depth, width, activation)
    targets = apply_init(model, cfg.init, activation, batch=x)
    loss = build_loss(OmegaConf.create({"name": "ce", "criterion": {"_target_": "torch.nn.CrossEntropyLoss"}}),
                      "multiclass", 10)
    t0 = time.perf_counter()
    rows = layer_statistics(model, loss, x, y, targets)
    t1 = time.perf_counter()
    hessian = full_diagnostics(model, loss, x, y, rows) if full else None
    return {"rows": rows, "hessian": hessian, "q_in": float(preact_q(x)), "c_in": float(preact_c(x)),
            "seconds": (t1 - t0, time.perf_counter() - t1 if full else None)}


def print_profile(cfg: DictConfig, profile: dict) -> None:
    """The per-layer table; the mean-field theory beside q and c for init=mean_field on tanh or relu."""
    rows, hessian = profile["rows"], profile["hessian"]
    activation = cfg.model.activation
    mean_field = cfg.init.name == "mean_field" and activation in THEORY_ACTIVATIONS
    if mean_field:
        sw2, sb2 = float(cfg.init.sigma_w2), float(cfg.init.sigma_b2)
        t = theory(activation, sw2, sb2)
        print(f"mean-field theory ({activation}, sigma_w2={sw2:g}, sigma_b2={sb2:g}): q* {t.q_star:.4g} · "
              f"chi_1 {t.chi_1:.4g} ({t.phase}) · c* {t.c_star:.4g} · xi_c {t.xi_c:.4g} layers")
        predicted = layer_predictions(activation, sw2, sb2, profile["q_in"], profile["c_in"], len(rows))
    default_s, full_s = profile["seconds"]
    print(f"inputs: q {profile['q_in']:.4g}, c {profile['c_in']:.4f} · step-0 statistics took {default_s:.3f} s")
    if hessian:
        state = "converged" if hessian["converged"] else "not converged"
        print(f"loss Hessian's top eigenvalue {hessian['max_eig']:.5g} ({hessian['iterations']} Hessian-vector "
              f"products, tol {hessian['tol']:g}, {state}) · the Jacobians and the Hessian took {full_s:.3f} s more")
    header = f"{'layer':>5} {'preact_std':>11} {'act_std':>10} {'grad_std':>10} {'weight_std':>11} {'aim':>8} " \
             f"{'q':>9} {'c':>7}"
    header += f" {'q theory':>9} {'c theory':>8}" if mean_field else ""
    header += f" {'jac_sv_mean_sq':>14} {'jac_sv_std':>10}" if hessian else ""
    print(header)
    for i, r in enumerate(rows):
        aim_txt = "n/a" if r["weight_std_target"] is None else f"{r['weight_std_target']:.4f}"
        line = (f"{r['index']:>5} {r['preact_std']:>11.4g} {r['act_std']:>10.4g} {r['grad_std']:>10.3g} "
                f"{r['weight_std']:>11.4f} {aim_txt:>8} {r['q']:>9.4g} {r['c']:>7.4f}")
        if mean_field:
            line += f" {predicted[i][0]:>9.4g} {predicted[i][1]:>8.4f}"
        if hessian:
            line += f" {_number(r['jac_sv_mean_sq']):>14} {_number(r['jac_sv_std']):>10}"
        print(line)


def _number(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


if __name__ == "__main__":
    sys.exit(report_user_errors(lambda: main(sys.argv[1:]))())
