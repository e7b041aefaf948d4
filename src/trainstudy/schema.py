"""What each key a user types accepts: one table, checked before anything is loaded.

A rule says the kind of value (a whole number, a number, true/false, one of some words), its range, and an
example of a good value; a value that breaks it ends the run with one line that says what to type instead.
Which keys a torch class takes is errors.check_arguments's to say; the values it takes are said here. The
Trainer's own refusals (``trainer.accelerator=tpu`` on a machine without one) become the same one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from trainstudy.errors import UserError

# seed_everything hands the seed to numpy, whose seeds are 32-bit
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Rule:
    """The values one key accepts."""

    kind: str                       # "whole", "number", "flag" or "choice"
    example: str                    # a good value, shown in the error
    low: float | None = None
    high: float | None = None
    low_open: bool = False          # low itself is refused
    high_open: bool = False
    words: tuple[str, ...] = ()     # words accepted besides numbers (auto, all); a choice's only values
    also: tuple[int, ...] = ()      # numbers accepted outside the range (-1: no limit)
    nullable: bool = False
    length: int | None = None       # a list of this many values, each following the rule
    note: str = ""                  # why, or what a special value means

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.length is not None:
            return (isinstance(value, (list, tuple, ListConfig)) and len(value) == self.length
                    and all(value_ok(self, v) for v in value))
        return value_ok(self, value)

    def wanted(self, value: Any) -> str:
        """What the key must be, in words: ``a whole number >= 1 (or -1 for no limit)``."""
        if self.kind == "flag":
            text = ", ".join([*self.words, "true or false"])
        elif self.kind == "choice":
            text = " or ".join(self.words)
        else:
            bounded = self.low is not None or self.high is not None
            finite = "finite " if not bounded or (isinstance(value, float) and not math.isfinite(value)) else ""
            noun = (f"a list of {self.length} {finite}numbers" if self.length is not None
                    else f"a {finite}{'whole ' if self.kind == 'whole' else ''}number")
            text = " or ".join([*self.words, f"{noun} {self.range_text()}".strip()])
        return " ".join(p for p in (text, self.note) if p)

    def range_text(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return ""


def _number(x: float | None) -> str:
    return str(x) if isinstance(x, int) or x is None else f"{x:g}"


def value_ok(rule: Rule, value: Any) -> bool:
    """One value against a rule's kind and range (bool is not a number here, whatever Python says)."""
    if isinstance(value, str) and value in rule.words:
        return True
    if rule.kind == "flag":
        return isinstance(value, bool)
    if rule.kind == "choice" or isinstance(value, bool):
        return False
    if rule.kind == "whole" and not isinstance(value, int):
        return False
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if value in rule.also:
        return True
    below = rule.low is not None and (value <= rule.low if rule.low_open else value < rule.low)
    above = rule.high is not None and (value >= rule.high if rule.high_open else value > rule.high)
    return not (below or above)


def whole(low: int | None = None, high: int | None = None, example: str = "1", **kw: Any) -> Rule:
    return Rule("whole", example, low, high, **kw)


def number(low: float | None = None, high: float | None = None, example: str = "0.1", **kw: Any) -> Rule:
    return Rule("number", example, low, high, **kw)


def flag(example: str = "true") -> Rule:
    return Rule("flag", example)


def choice(*words: str, example: str | None = None, note: str = "") -> Rule:
    return Rule("choice", example or words[0], words=words, note=note)


NO_LIMIT = "(or -1 for no limit)"

# Keys absent from a config (momentum under optim=adam) are not checked; init.* parameters are checked by
# their strategies (inits.validate_init), whose signatures say which each one takes.
RULES: dict[str, Rule] = {
    "seed": whole(0, SEED_MAX, example="0", nullable=True, note="(or null to draw one)"),
    "threads": whole(1, example="2", words=("all",)),
    "val_every_n_steps": whole(1, example="10", words=("auto",)),
    "log_every_n_steps": whole(1, example="50"),
    "diagnostics": Rule("flag", "full", words=("default", "full"), note="(true: default; false: none)"),
    "compile": flag("false"),
    "progress_bar": flag(),
    "checkpoint.every_n_steps": whole(0, example="500", note="(0: never)"),
    "target.value": number(example="0.9", nullable=True),
    "target.stop_on_reach": flag(),
    "optim.lr": number(0, example="0.01", low_open=True),
    "optim.momentum": number(0, 1, example="0.9"),
    "optim.dampening": number(0, 1, example="0"),
    "optim.weight_decay": number(0, example="0.0001"),
    "optim.eps": number(0, example="1e-08", low_open=True),
    "optim.betas": number(0, 1, example="[0.9,0.999]", high_open=True, length=2),
    "optim.nesterov": flag("false"),
    "optim.amsgrad": flag("false"),
    "loss.criterion.delta": number(0, example="1.0", low_open=True),
    "loss.criterion.label_smoothing": number(0, 1, example="0.1"),
    # evaluate() weighs each chunk's loss by its size: that is a mean's arithmetic
    "loss.criterion.reduction": choice("mean", note="(the study compares mean losses)"),
    "trainer.max_epochs": whole(1, example="10", also=(-1,), nullable=True, note=NO_LIMIT),
    "trainer.max_steps": whole(1, example="1000", also=(-1,), note=NO_LIMIT),
    "trainer.accumulate_grad_batches": whole(1, example="1"),
    "trainer.gradient_clip_val": number(0, example="1.0", nullable=True),
}

HYDRA_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}


def _present(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig) or leaf not in node:
        return False, None
    return True, node[leaf]


def _shown(value: Any, quoted: bool = True) -> str:
    """A value as the user typed it: null for None, 'abc' quoted unless ``quoted`` is False."""
    plain = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
    return "null" if plain is None else (repr(plain) if quoted else str(plain))


def check_values(cfg: DictConfig) -> None:
    """Every key of RULES that the config has; UserError on the first value a rule refuses."""
    for key, rule in RULES.items():
        present, value = _present(cfg, key)
        if present and not rule.accepts(value):
            raise UserError(f"{key} must be {rule.wanted(value)}, got {_shown(value)} (e.g. {key}={rule.example})")


def check_argv(argv: list[str]) -> list[str]:
    """Refuse, before Hydra makes any folder, a run or sweep folder given as nothing."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in ("hydra.run.dir", "hydra.sweep.dir") and not value.strip(" '\""):
            raise UserError(f"{key.lstrip('+~')} is empty, which would write into the current folder; "
                            f"give a folder ({key.lstrip('+~')}=outputs/mine) or leave it out")
    return argv


def build_trainer(make: Callable[[], Any], trainer_cfg: Mapping[str, Any]) -> Any:
    """``make()`` the Trainer; its refusal of an argument becomes one line naming the key."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - Lightning raises many kinds for a bad argument
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
        keys = refused_keys(trainer_cfg, reason)
        if not keys:  # no argument to blame: not the user's to fix
            raise
        named = " ".join(f"trainer.{k}={_shown(trainer_cfg[k], quoted=False)}" for k in keys)
        raise UserError(f"Lightning refuses {named} ({reason}); change it, or use trainer=default") from None


def refused_keys(trainer_cfg: Mapping[str, Any], reason: str) -> list[str]:
    """The trainer keys to blame: those the error names (``Trainer(devices=0)``), else each one a Trainer
    refuses on its own."""
    keys = [k for k in trainer_cfg if k not in HYDRA_KEYS]
    named = [k for k in keys if f"{k}=" in reason]
    if named:
        return named
    import lightning as L  # here, not at the top: the command line checks its argv with this module

    alone = []
    for key in keys:
        value = trainer_cfg[key]
        try:
            L.Trainer(**{key: OmegaConf.to_object(value) if isinstance(value, (DictConfig, ListConfig)) else value},
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        except Exception:  # noqa: BLE001 - any refusal names the key
            alone.append(key)
    return alone
