"""Progress bars that stay quiet when output is not a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm


class _Silent:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **kwargs: Any) -> None:
        return None


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar on stderr when ``enabled`` and stderr is a TTY, else a no-op object."""
    if not (enabled and sys.stderr.isatty()):
        yield _Silent()
        return
    bar = tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
