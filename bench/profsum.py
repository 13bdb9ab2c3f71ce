"""``python -m bench.profsum FILE...``: what py-spy's collapsed stacks (``--profile``) say
about watcherd: samples per innermost watcherd function and what it was in (git in a
subprocess, the Docker API, the file system), and inclusive samples per watcherd
function. py-spy counts a thread while it is on the CPU or blocked in most system calls,
so this is where a job's time goes, not only its CPU."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.+) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def _kind(frames: list[str]) -> str:
    """What the innermost library code under watcherd was doing."""
    text = ";".join(frames)
    if "subprocess.py" in text:
        return "subprocess (git)"
    if "docker/" in text or "requests/" in text or "urllib3/" in text:
        return "Docker API"
    if "watchdog/" in text:
        return "watchdog"
    if "logging/" in text:
        return "logging"
    if "yaml/" in text:
        return "yaml"
    return "python / syscalls"


def summarize(paths: list[Path], top: int = 30) -> str:
    innermost: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = re.sub(r"[0-9TZ]{16}-.*$", "<id>", frames[0])
            threads[thread] += count
            total += count
            ours = [i for i, f in enumerate(frames) if "watcherd/" in f]
            if not ours:
                innermost[f"(no watcherd frame) {_kind(frames)}"] += count
                continue
            deepest = ours[-1]
            match = _FRAME.match(frames[deepest])
            where = frames[deepest] if match is None else f"{match['func']}:{match['line']}"
            innermost[f"{where} [{_kind(frames[deepest + 1 :])}]"] += count
            seen = set()
            for i in ours:
                m = _FRAME.match(frames[i])
                name = m["func"] if m else frames[i]
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += count
    lines = [f"{total} samples"]
    lines.append("\nby thread:")
    lines += [f"  {n:7d} {100 * n / total:5.1f}%  {t}" for t, n in threads.most_common(10)]
    lines.append("\ninnermost watcherd line [what it was in]:")
    lines += [f"  {n:7d} {100 * n / total:5.1f}%  {w}" for w, n in innermost.most_common(top)]
    lines.append("\ninclusive, per watcherd function:")
    lines += [f"  {n:7d} {100 * n / total:5.1f}%  {w}" for w, n in inclusive.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize([Path(p) for p in sys.argv[1:]]))
