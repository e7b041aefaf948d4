"""How paths are shown to a user: the way they would type them."""

from __future__ import annotations

from pathlib import Path


def shown(path: str | Path) -> str:
    """``path`` relative to the current folder where it lies inside it, else as it is (a run and a sweep alike)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
