"""Show what an init strategy does, the way the tutorial prints it, and check its std against the formula.

    python scripts/inspect_init.py init=constant init.value=7.7          # Linear(2, 4), as in the tutorial
    python scripts/inspect_init.py init=fixed                            # the tutorial's Linear(2, 2) on x
    python scripts/inspect_init.py init=fixed init.weight=[[1,2,3]] --input [[1,0,0]]   # your own values
    python scripts/inspect_init.py init=kaiming_normal init.mode=fan_out --small 1 4 --large 500 1000
    python scripts/inspect_init.py init=xavier_normal --depth 20    # act std per layer of a deep MLP

Takes the same Hydra overrides as train.py (init=..., init.<param>=..., model.activation=...); a mistake in
them ends in one line, as train.py's do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainstudy.diagnostics import layer_statistics
from trainstudy.errors import UserError, report_user_errors
from trainstudy.inits import apply_init
from trainstudy.losses import build_loss
from trainstudy.models import mlp

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
    rows = depth_profile(cfg, args.depth) if args.depth else []

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
    if rows:
        print(f"\n{args.depth}-layer {cfg.model.activation} MLP, width {cfg.model.width}, init={cfg.init.name}:")
        print(f"{'layer':>5} {'preact_std':>11} {'act_std':>10} {'grad_std':>10} {'weight_std':>11} {'aim':>8}")
        for r in rows:
            aim_txt = "n/a" if r["weight_std_target"] is None else f"{r['weight_std_target']:.4f}"
            print(f"{r['index']:>5} {r['preact_std']:>11.4g} {r['act_std']:>10.4g} {r['grad_std']:>10.3g} "
                  f"{r['weight_std']:>11.4f} {aim_txt:>8}")
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


def depth_profile(cfg: DictConfig, depth: int) -> list[dict]:
    """Glorot & Bengio's picture as a table: per-layer statistics of a deep MLP at init (cross entropy, 10 classes)."""
    width, activation = cfg.model.width, cfg.model.activation
    x, y = torch.randn(512, width), torch.randint(0, 10, (512,))
    model = mlp(width, 10, depth, width, activation)
    targets = apply_init(model, cfg.init, activation, batch=x)
    loss = build_loss(OmegaConf.create({"name": "ce", "criterion": {"_target_": "torch.nn.CrossEntropyLoss"}}),
                      "multiclass", 10)
    return layer_statistics(model, loss, x, y, targets)


if __name__ == "__main__":
    sys.exit(report_user_errors(lambda: main(sys.argv[1:]))())
