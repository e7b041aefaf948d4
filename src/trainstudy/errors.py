"""A user's mistake ends in one line that says what to type instead, and a non-zero exit.

``UserError`` is what our own checks raise. Hydra's composition errors (an unknown option, an unknown key,
an override it cannot parse) are reported by Hydra itself in several lines with a traceback hint; they are
translated here into the same one-line form. ``HYDRA_FULL_ERROR=1`` keeps Hydra's full report.
"""

from __future__ import annotations

import difflib
import errno
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_USER_ERROR = 2
# What creating a run folder or a cache file in the wrong place raises.
WRITE_ERRORS = (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOTDIR, errno.ENOENT, errno.ENOSPC, errno.EEXIST)


class UserError(Exception):
    """A mistake the user can fix (bad override, impossible pair, missing data).

    The message is one line that names the problem and says what to type instead.
    """


def _did_you_mean(word: str, options: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def unknown_key(full_key: str, siblings: list[str]) -> str:
    """``unknown key 'trainer.max_step' (did you mean trainer.max_steps?)``, from the keys next to it.

    ``+key=`` is proposed only when nothing close exists: proposing it for a typo would add the typo.
    """
    parent, _, name = full_key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    hint = _did_you_mean(name, siblings, prefix)
    if hint or not siblings:
        return f"unknown key {full_key!r}{hint}; `python train.py --cfg job` lists every key"
    return (f"unknown key {full_key!r}; {parent or 'the top level'} has: {', '.join(siblings)} "
            f"(to add a new one on purpose: +{full_key}=...)")


def check_arguments(node: Any, key: str) -> None:
    """Stop with one line when a config passes its ``_target_`` an argument the target does not take.

    Otherwise the mistake shows only when the object is built, after the data has loaded, as a TypeError.
    """
    import inspect

    from hydra.utils import get_object

    target = node["_target_"]
    params = inspect.signature(get_object(target)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # it takes any keyword: nothing to check against
    for name in node:
        if not name.startswith("_") and name not in params:
            hint = _did_you_mean(name, list(params), f"{key}.")
            raise UserError(f"unknown key '{key}.{name}': {target} takes no argument {name!r}"
                            + (hint or f"; it takes: {', '.join(params)}"))


def explain(exc: BaseException) -> str | None:
    """One line for a Hydra error a user caused, or None when it is not one of those."""
    from hydra.errors import (
        CompactHydraException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    options = exc.options if isinstance(exc, MissingConfigException) else None
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and options is None:
        options = _group_options(exc.missing_cfg_file.rpartition("/")[0])  # a list (callbacks=[a,b]) names none
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and options is not None:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        options = sorted(o for o in options)
        return (f"unknown {group} option {name!r}{_did_you_mean(name, options)}; "
                f"choose one of: {', '.join(options)}")
    if isinstance(exc, OverrideParseException):
        return f"cannot read an override: {str(exc).splitlines()[0]} (form: key=value, e.g. init.std=0.01)"
    if isinstance(exc, CompactHydraException):
        cause = exc.__cause__
        # OmegaConf's error names the key in full and holds the node it was looked for in.
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
            parent = cause.parent_node
            hidden = {"hydra"} if "." not in cause.full_key else set()  # Hydra's own node, at the top level
            siblings = [k for k in (parent.keys() if isinstance(parent, DictConfig) else [])
                        if isinstance(k, str) and not k.startswith("_") and k not in hidden]
            return unknown_key(cause.full_key, siblings)
        first = str(exc).splitlines()[0]
        return f"{first} {str(cause).splitlines()[0] if cause else ''}".strip()
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG and exc.filename:
        return _name_too_long(str(exc.filename))
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS and exc.filename:
        return (f"cannot write to {exc.filename}: {os.strerror(exc.errno)}; choose a writable folder "
                "(hydra.run.dir=... / hydra.sweep.dir=..., or data_dir=...)")
    return None


def _group_options(group: str) -> list[str] | None:
    """The options of a config group, from the Hydra instance that is composing (None outside one)."""
    from hydra.core.global_hydra import GlobalHydra

    if not group or not GlobalHydra.instance().is_initialized():
        return None
    return GlobalHydra.instance().config_loader().get_group_options(group) or None


def _name_too_long(path: str) -> str:
    """A folder the user named (hydra.run.dir=...) is refused, not shortened: its name is theirs to choose."""
    longest = max(path.split(os.sep), key=lambda part: len(part.encode()))
    size = len(longest.encode())
    what = (f"the folder name {longest[:40]}... is {size} bytes, over the file system's 255" if size > 255
            else f"the path {path[:60]}... is {len(path.encode())} bytes, over the file system's limit")
    return f"{what}; choose a shorter hydra.run.dir=... / hydra.sweep.dir=... (or data_dir=...)"


def report_user_errors(func: Callable[[], Any]) -> Callable[[], Any]:
    """Wrap a function so that a user's mistake exits with one line on stderr instead of a traceback."""

    def wrapped() -> Any:
        try:
            return func()
        except UserError as e:
            message = str(e)
        except Exception as e:  # noqa: BLE001 - translated where it is a user's mistake, re-raised otherwise
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or (message := explain(e)) is None:
                raise
        sys.stderr.write(f"error: {message}\n")
        sys.exit(EXIT_USER_ERROR)

    return wrapped


def install_hydra_one_line_errors() -> None:
    """Route Hydra's own error reporting through ``report_user_errors`` (composition happens inside it).

    ``--help`` composes the config too (to show the groups with the user's overrides) but outside
    ``run_and_report``: its composition errors are routed the same way.
    """
    import hydra._internal.utils as hydra_utils
    from hydra._internal.hydra import Hydra

    original = hydra_utils.run_and_report
    if getattr(original, "_trainstudy", False):
        return
    original_help = Hydra.app_help

    def run_and_report(func: Callable[[], Any]) -> Any:
        return original(report_user_errors(func))

    def app_help(self: Hydra, *args: Any, **kwargs: Any) -> None:
        report_user_errors(lambda: original_help(self, *args, **kwargs))()

    run_and_report._trainstudy = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report
    Hydra.app_help = app_help  # type: ignore[method-assign]
