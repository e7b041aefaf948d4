"""Reading a job's metrics.json as the report and the sweep summary use it: a bad file is a reason, not a crash.

write_json writes the file atomically, but a disk that filled up, a copy cut short or a hand edit can
still leave garbage, half a file, or numbers that are not numbers. ``read_metrics`` checks the fields that are
read later (status, overrides, metrics, target, curve, diagnostics), so that one bad job is shown as such and
the rest of a sweep is reported.
"""

from __future__ import annotations

import errno
import json
import math
import os
from numbers import Real
from pathlib import Path
from typing import Any

from trainstudy.errors import UserError


class _Bad(Exception):
    """What is wrong with a metrics.json, in a few words."""


def _number(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, Real):  # NaN and Infinity read as floats: numbers too
        raise _Bad(f"{where} is {value!r}, not a number")


def _mapping(value: Any, where: str, optional: bool = True) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{where} is a {type(value).__name__}, not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad(f"{where} is a {type(value).__name__}, not a list")
    return value


def _check(result: Any) -> None:
    """Raise _Bad naming the first field whose type the report or the summary could not use."""
    result = _mapping(result, "the file", optional=False)
    for key in ("status", "error"):
        if result.get(key) is not None and not isinstance(result[key], str):
            raise _Bad(f"{key} is {result[key]!r}, not text")
    _list(result.get("overrides"), "overrides")
    for key, value in _mapping(result.get("metrics"), "metrics").items():
        _number(value, f"metrics[{key!r}]")
    target = _mapping(result.get("target"), "target")
    if target.get("metric") is not None and not isinstance(target["metric"], str):
        raise _Bad(f"target.metric is {target['metric']!r}, not a metric name")
    _number(target.get("value"), "target.value")
    for i, point in enumerate(_list(result.get("curve"), "curve")):
        for key, value in _mapping(point, f"curve[{i}]", optional=False).items():
            _number(value, f"curve[{i}][{key!r}]")
        if not isinstance(point.get("step"), int):
            raise _Bad(f"curve[{i}] has no whole-number step")
    _mapping(result.get("hparams"), "hparams")
    diagnostics = _mapping(result.get("diagnostics"), "diagnostics")
    for i, row in enumerate(_list(diagnostics.get("layers"), "diagnostics.layers")):
        for key in ("index", "act_std", "weight_rank"):
            _number(_mapping(row, f"diagnostics.layers[{i}]", optional=False).get(key),
                    f"diagnostics.layers[{i}][{key!r}]")


def _json_safe(value: Any) -> Any:
    """NaN/Inf are not JSON: write them as null (a diverged run's losses)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader (the report on a sweep in progress) never sees half a file. A full disk (or
    any failed write) leaves no half-made file and is a UserError naming the folder."""
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(cannot_write(path.parent, e)) from None


def cannot_write(folder: Path, e: OSError) -> str:
    """One line for a write that failed in ``folder``: a full disk says so and what to do."""
    if e.errno == errno.ENOSPC:
        return (f"the disk holding {folder} is full; free space there or choose another folder "
                "(hydra.run.dir=... / hydra.sweep.dir=...)")
    return f"cannot write in {folder} ({e.strerror or e})"


def read_metrics(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A job's metrics.json: ``(result, None)``; ``(None, None)`` when there is none yet (the job runs, or died
    before writing it); ``(None, "unreadable metrics.json: <reason>")`` when it can't be used."""
    try:
        text = Path(path).read_bytes().decode()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable metrics.json: {type(e).__name__}: {e}"
    if not text.strip():
        return None, "unreadable metrics.json: the file is empty"
    try:
        result = json.loads(text)
        _check(result)
    except json.JSONDecodeError as e:
        cut_short = text.strip() and (e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated"))
        return None, f"unreadable metrics.json: not JSON{' (cut short)' if cut_short else ''}: {e}"
    except _Bad as e:
        return None, f"unreadable metrics.json: {e}"
    return result, None
