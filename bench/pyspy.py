"""py-spy around a measured run, and a summary of where the samples went.

`py-spy` is not a dependency of the project: `.venv/bin/pip install py-spy`
to use `bench/ingest.py --py-spy DIR`. Each profiled run leaves a collapsed
stack file (`*.txt`, one `frame;frame;... count` line per stack, which
speedscope.app and flamegraph.pl read); the summary counts, per function, the
samples it was on the CPU itself (self) and the samples it was anywhere on the
stack (inclusive), both as a share of all samples.

    .venv/bin/python bench/pyspy.py FILE.txt [--top 25]
"""

from __future__ import annotations

import argparse
import linecache
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# "function (path/to/file.py:123)" → "function (path/to/file.py)"
_LINE = re.compile(r":\d+\)$")
_SITE = re.compile(r"^.*/(site-packages|lib/python3\.\d+)/")


def binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recorder:
    """`py-spy record` on one process until `stop()`."""

    def __init__(self, *, pid: int, out: Path, rate: int = 200) -> None:
        exe = binary()
        if exe is None:
            raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
        self.out = out
        # --nonblocking: read the target's memory without pausing it, so the profile
        # costs the daemon (almost) nothing; a few samples may be garbled.
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate),
             "--format", "raw", "--output", str(out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _function(frame: str) -> str:
    """`name (file:line)` without the line, and with the file relative to site-packages
    or the standard library when it is there."""
    name, _, where = _LINE.sub(")", frame.strip()).partition(" (")
    return f"{name} ({_SITE.sub('', where)}" if where else name


# A thread whose innermost Python frame sits on one of these calls is waiting, not working
# (py-spy's own idle detection does not work on every kernel, so the summary does its own).
_BLOCKING = re.compile(r"(\.get\(|\.wait\(|\bselect\(|\.acquire\(|\bsleep\(|\.poll\(|"
                       r"\.recv\(|\.join\()")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.+):(?P<line>\d+)\)$")


def is_idle(frame: str) -> bool:
    """True when `frame` ("name (file:line)") is a wait: its source line is a blocking call."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return False
    source = _source_line(match["file"], int(match["line"]))
    return bool(source and _BLOCKING.search(source))


def _source_line(file: str, line: int) -> str:
    candidates = [Path(file)] if file.startswith("/") else [
        Path(base) / file for base in [*sys.path, str(Path.cwd())] if base]
    for candidate in candidates:
        if candidate.is_file():
            return linecache.getline(str(candidate), line)
    return ""


def summarize(path: Path, top: int = 20) -> dict[str, Any]:
    """Shares of the busy samples (waits left out): self and inclusive per function, and
    self per package."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    ours: Counter[str] = Counter()  # inclusive, the daemon's own functions only
    packages: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        raw = [f for f in stack.split(";") if f]
        if not raw:
            continue
        if is_idle(raw[-1]):
            idle += n
            continue
        frames = [_function(f) for f in raw]
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            anywhere[name] += n
            if _is_daemon_step(name):
                ours[name] += n
        packages[_package(frames[-1])] += n

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"file": str(path), "samples": total, "idle_samples": idle,
            "self": share(own) if total else [],
            "inclusive": share(anywhere) if total else [],
            "daemon_inclusive": share(ours) if total else [],
            "by_package": share(packages) if total else []}


def _is_daemon_step(frame: str) -> bool:
    """A function of the daemon's below the entry points (which are on every stack)."""
    return "(daemon/" in frame and not any(
        entry in frame for entry in ("(daemon/cli.py", "(daemon/__main__.py", "serve (daemon/"))


def _package(frame: str) -> str:
    """Where a frame's code lives: `daemon.store`, `sqlalchemy`, `asyncio`, ..."""
    match = re.search(r"\(([^)]*)\)$", frame)
    where = match.group(1) if match else frame
    where = re.sub(r"\.py$", "", where)
    parts = [p for p in where.split("/") if p and p not in (".", "..")]
    if "daemon" in parts:
        rest = parts[parts.index("daemon"):]
        return ".".join(rest[:2]) if len(rest) > 2 else ".".join(rest)
    return parts[0] if parts else where


def print_summary(summary: dict[str, Any], *, file: Any = sys.stdout, top: int = 20) -> None:
    print(f"{summary['file']}: {summary['samples']} busy samples "
          f"({summary['idle_samples']} waiting, left out)", file=file)
    for title in ("self", "daemon_inclusive", "by_package"):
        print(f"  {title}:", file=file)
        for name, pct in summary[title][:top]:
            print(f"    {pct:5.1f} %  {name}", file=file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print_summary(summarize(args.file, args.top), top=args.top)


if __name__ == "__main__":
    main()
