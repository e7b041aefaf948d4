"""Show what an init strategy does, the way the tutorial prints it, and check its std against the formula.

    python scripts/inspect_init.py init=constant init.value=7.7          # Linear(2, 4), as in the tutorial
    python scripts/inspect_init.py init=kaiming_normal init.mode=fan_out --small 1 4 --large 500 1000
    python scripts/inspect_init.py init=xavier_normal --depth 20    # act std per layer of a deep MLP

Takes the same Hydra overrides as train.py (init=..., init.<param>=..., model.activation=...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainstudy.diagnostics import layer_statistics
from trainstudy.errors import UserError
from trainstudy.inits import apply_init
from trainstudy.losses import build_loss
from trainstudy.models import mlp

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", nargs=2, type=int, default=[2, 4], metavar=("IN", "OUT"),
                        help="the Linear layer printed in full (default: 2 4)")
    parser.add_argument("--large", nargs=2, type=int, default=[1000, 1000], metavar=("IN", "OUT"),
                        help="the Linear layer whose statistics are measured (default: 1000 1000)")
    parser.add_argument("--depth", type=int, default=0,
                        help="also print per-layer statistics of an MLP this deep (model.width wide, "
                             "model.activation) on a batch of 512 standard-normal inputs")
    args, overrides = parser.parse_known_args(argv)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    activation = cfg.model.get("activation")
    torch.manual_seed(cfg.seed)
    try:
        small = nn.Linear(*args.small)
        # a batch of standard-normal inputs, for the data-dependent init (lsuv)
        apply_init(nn.Sequential(small), cfg.init, activation, batch=torch.randn(512, args.small[0]))
        large = nn.Linear(*args.large)
        aim = apply_init(nn.Sequential(large), cfg.init, activation, batch=torch.randn(512, args.large[0]))["0"]
        rows = depth_profile(cfg, args.depth) if args.depth else []
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"init={cfg.init.name} on nn.Linear({args.small[0]}, {args.small[1]}):")
    print(small.weight)
    print(small.bias)
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
    sys.exit(main(sys.argv[1:]))
