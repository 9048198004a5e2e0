"""Where trajkit writes outside the paths a user names: one cache directory.

``cache_dir()`` is ``$TRAJKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/trajkit``, else ``~/.cache/trajkit``.
What lives there (the README's "What is written where" lists it): the parsed Bach chorales
(``chorales-<hash>.npz``), the compiled pair kernels, and matplotlib's configuration and font cache
(``matplotlib/``, see :func:`use_matplotlib_cache`). Nothing here is needed for correctness: deleting the
directory only costs recomputation.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """trajkit's cache directory (module doc), or ``parts`` below it; not created here."""
    if os.environ.get("TRAJKIT_CACHE_DIR"):
        base = Path(os.environ["TRAJKIT_CACHE_DIR"]).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trajkit"
    return base.joinpath(*parts)


def use_matplotlib_cache() -> None:
    """Point ``MPLCONFIGDIR`` at ``cache_dir("matplotlib")`` unless the user has set it.

    matplotlib otherwise writes its font cache (and may look for its config) under ``~/.config`` and
    ``~/.cache/matplotlib``; trajkit calls this just before it first imports matplotlib (it reads the
    variable once, at import), so a plot writes nowhere outside trajkit's cache. A cache directory that
    cannot be created leaves matplotlib's own choice in place.
    """
    if os.environ.get("MPLCONFIGDIR"):
        return
    path = cache_dir("matplotlib")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    os.environ["MPLCONFIGDIR"] = str(path)
