"""Ctrl-C and SIGTERM: the first signal decides, a later one never cuts a run's record short.

What the first SIGINT or SIGTERM does depends on where the process is (``during`` sets it for a block):

- starting (composing, importing, loading data), or after a run (its end line, a sweep's report): one line
  that says where (``now``), exit 128 + the signal; there is nothing to save.
  The top-level process leaves at once (``exit_process``): an exception raised from a signal handler lands
  wherever start-up was, and library code that catches everything there (omegaconf building a config, numpy's
  lazy attributes in the middle of an import) turns it into an unrelated traceback. A sweep's worker, whose
  caller must hear of it, raises SystemExit (``exit_now``);
- training: the run stops cleanly (``stop_training``): Lightning saves the checkpoint, ``train.fit`` writes an
  "interrupted" metrics.json and the process exits 128 + the signal;
- writing a record, or waiting on a sweep's workers (``note``): it is only noted; the code that runs then
  looks at ``first()`` when it is done.

Every later signal is only noted: Ctrl-C pressed twice, or a signal that reaches a sweep's worker both from
the terminal and from the sweep's own process, stops the run as the first one did. Once the process exits
(its atexit functions), later ones are ignored: Python's finalization would otherwise restore the default
action, and a second Ctrl-C in that last fraction of a second would kill the process by the signal.

Light on purpose (no torch): ``train.py`` installs it before its heavy imports.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("trainstudy")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
Action = Callable[[signal.Signals], None]


BEFORE_TRAINING = "before training started; nothing to resume"
_where = BEFORE_TRAINING


def now(where: str) -> None:
    """Where the process is, as the one line of ``exit_now`` and ``exit_process`` says it from here: before a
    run (``BEFORE_TRAINING``), after one ("after the run finished: ..."), writing a sweep's report."""
    global _where
    _where = where


def exit_now(sig: signal.Signals) -> None:
    """Outside training: nothing to save, so one line and out (no traceback from wherever the process was)."""
    log.warning("interrupted (%s) %s", sig.name, _where)
    raise SystemExit(128 + sig)


_on_exit: list[Callable[[], None]] = []


def on_exit(fn: Callable[[], None]) -> None:
    """Run ``fn`` too when ``exit_process`` leaves at once (the claimed run folder's clean-up). The atexit
    functions do not run then: half-imported modules' ones misbehave (torch's FakeTensor stats printed
    "cache_hits: 0" after the one line)."""
    _on_exit.append(fn)


def exit_process(sig: signal.Signals) -> None:
    """The top-level process outside training: one line, the ``on_exit`` functions and logging's flush, then
    out with 128 + the signal, without unwinding through whatever code was running (see the module's
    docstring)."""
    log.warning("interrupted (%s) %s", sig.name, _where)
    for fn in reversed(_on_exit):
        try:
            fn()
        except Exception:  # noqa: BLE001 - a clean-up that fails must not keep the process from leaving
            pass
    logging.shutdown()
    os._exit(128 + sig)


def note(sig: signal.Signals) -> None:
    """Only remember it (``first()``): what runs now finishes, then stops because of it."""


def stop_training(sig: signal.Signals) -> None:
    """Stop a training loop the way Ctrl-C stops it (Lightning: checkpoint, then SystemExit); a SIGTERM that
    Lightning's own handler also saw is left to Lightning, which stops at the end of the batch."""
    if sig == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is not _handle:
        return
    raise KeyboardInterrupt


_first: signal.Signals | None = None
_action: Action = exit_now


def _handle(signum: int, _frame: FrameType | None) -> None:
    global _first
    sig = signal.Signals(signum)
    if _first is not None:
        log.debug("%s again: still stopping because of %s", sig.name, _first.name)
        return
    _first = sig
    _action(sig)


def first() -> str | None:
    """The name of the first SIGINT or SIGTERM this process received, if any."""
    return _first.name if _first is not None else None


def exit_status() -> int | None:
    """128 + the first signal (the shell's convention for a process a signal stopped), or None."""
    return 128 + _first if _first is not None else None


def install(action: Action = exit_now) -> None:
    """Handle SIGINT and SIGTERM in this process from now on; ``action`` is what the first one does outside
    any ``during`` block. Only the main thread can install signal handlers; elsewhere this does nothing."""
    global _action, _quiet_registered
    try:
        for sig in SIGNALS:
            signal.signal(sig, _handle)
    except ValueError:
        return
    _action = action
    if not _quiet_registered:  # registered first, so it runs last of the atexit functions
        atexit.register(_ignore_later_signals)
        _quiet_registered = True


_quiet_registered = False


def _ignore_later_signals() -> None:
    """At exit, once a signal decided the exit status: later ones are ignored (not noted, since finalization
    would reset a Python handler to the default action, which kills the process with the later signal)."""
    if _first is None:
        return
    try:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


@contextmanager
def during(action: Action) -> Iterator[None]:
    """The first signal that arrives inside the block does ``action``; the handlers are installed for the
    block if ``install`` was not called (a library user's process gets its own handlers back after it)."""
    global _action
    previous_handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    installed_here = any(h is not _handle for h in previous_handlers.values())
    previous_action, _action = _action, action
    if installed_here:
        try:
            for sig in SIGNALS:
                signal.signal(sig, _handle)
        except ValueError:  # not the main thread: signals are not ours to handle
            installed_here = False
    try:
        yield
    finally:
        _action = previous_action
        if installed_here:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
