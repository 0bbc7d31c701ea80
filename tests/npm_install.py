"""``npm ci`` for a folder of the repository, one installer at a time.

The suite may run on several workers, each with its own session fixtures:
two of them installing into one ``node_modules`` at once would corrupt it,
so the install (and the check whether it is needed) holds a lock beside it.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

__all__ = ["npm_ci"]

LOCK_NAME = ".npm-ci.lock"


def npm_ci(folder: Path, *, installed: tuple[str, ...], timeout: float) -> None:
    """Install ``folder``'s locked packages unless every path in ``installed`` (under node_modules) exists."""
    with (folder / LOCK_NAME).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        modules = folder / "node_modules"
        if all((modules / path).exists() for path in installed):
            return
        npm = shutil.which("npm") or "npm"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, check=True, timeout=timeout,
                       capture_output=True)
