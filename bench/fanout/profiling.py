"""Sample the daemon with py-spy during a window and summarise where time goes.

py-spy runs ``--nonblocking`` (it reads the target's memory without pausing
it), so the profiled window's figures move little. The raw output is
collapsed stacks (``frame;frame;... count``); the summary ranks functions
by self time (the innermost frame), functions by inclusive time (anywhere
on the stack), and packages by self time. Percentages are of the samples
in which the process was running Python code (py-spy leaves idle waits out).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import trio

__all__ = ["pyspy_available", "record", "render", "summarize"]

_ATTRS_GENERATED = "<attrs generated methods "
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def pyspy_available() -> str | None:
    """The py-spy executable next to this Python, or on the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pyspy: str, pid: int, seconds: float, out: Path, *, rate: int = 100) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    await trio.run_process(
        [pyspy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", str(rate),
         "--nonblocking", "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )


def _package(path: str) -> str:
    """Who owns a source file: a third-party package, a project package, or a stdlib module.

    py-spy prints paths relative to their ``sys.path`` entry when it can
    (``trio/_core/_run.py``), absolute otherwise.
    """
    if path.startswith(_ATTRS_GENERATED):  # "<attrs generated methods trio._core._run.CancelStatus>"
        return path.removeprefix(_ATTRS_GENERATED).split(".")[0]
    parts = Path(path).parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    if not parts:
        return path
    if parts[0] in ("perpstream", "actors") and len(parts) > 2:
        return f"{parts[0]}/{parts[1]}"
    if len(parts) > 1 and not Path(path).is_absolute():
        return parts[0]
    return Path(path).stem


def _name(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, frame
    file = match["file"]
    short = "/".join(Path(file).parts[-2:])
    return f"{match['function']} ({short})", _package(file)


def summarize(raw: Path, *, top: int = 20) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_name(f) for f in stack.split(";")]
        function, package = frames[-1]
        self_time[function] += count
        packages[package] += count
        for seen in {name for name, _ in frames}:
            inclusive[seen] += count

    def ranked(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": name, "pct": round(100 * n / total, 1)} for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self": ranked(self_time) if total else [],
        "inclusive": ranked(inclusive) if total else [],
        "packages_self": ranked(packages) if total else [],
    }


def render(profile: dict[str, Any], title: str) -> str:
    """A summary's self time by package and its top functions, under ``title``."""
    lines = [f"{title} ({profile['samples']} samples, raw stacks: {profile['raw']}); self time by package:"]
    lines += [f"  {entry['pct']:5.1f}%  {entry['name']}" for entry in profile["packages_self"][:12]]
    lines.append("top functions by self time:")
    lines += [f"  {entry['pct']:5.1f}%  {entry['name']}" for entry in profile["self"][:15]]
    return "\n".join(lines)
