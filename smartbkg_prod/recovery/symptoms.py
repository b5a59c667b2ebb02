"""What a failure's log text and resource use say when its code does not.

Many codes name no cause: a kill signal, a site's ``SYSTEM_PERIODIC_HOLD`` (HTCondor hold
26), Slurm's ``CANCELLED``, PanDA's "unknown payload failure", or a code missing from the
tables. For those, :func:`diagnose` reads the last log lines (the hold reason, the pilot's
error diagnostic, slurmstepd's ``CANCELLED ... DUE TO TIME LIMIT``) and the memory and
walltime used against what was requested, in that order of trust.

>>> memory_from_text(["Job has gone over cgroup memory limit of 4096 megabytes. "
...                   "Peak usage: 6144 megabytes."])
(6144.0, 4096.0)
>>> from smartbkg_prod.recovery.taxonomy import FailureCode, describe
>>> diagnose(describe(FailureCode("htcondor", 26)), ["job used 6144 of 4096 MB"]).category
<Category.MEMORY: 'memory'>
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from smartbkg_prod.recovery.taxonomy import Category, CodeInfo

# Keyword groups looked for in the last log lines (lower-cased substring match), in the
# order :func:`diagnose` trusts them: a memory kill often also prints a traceback.
LOG_KEYWORDS: dict[str, tuple[str, ...]] = {
    "memory": (
        "out of memory", "out-of-memory", "memoryerror", "bad_alloc", "oom", "memory limit",
        "memory usage", "exceeded memory", "exceeds memory", "exceeded job memory",
        "request_memory", "rss",
    ),
    "time": (
        "time limit", "walltime", "wall time", "wall-clock", "sigxcpu", "deadline",
        "maxwalltime", "cpu time", "job duration", "execute duration", "run time limit",
    ),
    "site": (
        "drain", "preempt", "evict", "vacate", "node failure", "node fail", "shutdown",
        "heartbeat", "reconnect", "lost contact", "proxy", "connection", "maintenance",
        "timed out", "timeout",  # a service or transfer that did not answer, not the job's time
    ),
    "storage": (
        "no space", "stage-out", "stageout", "stage out", "checksum", "permission denied",
        "i/o error", "xrootd", "quota", "transfer failed", "disk usage", "disk limit",
        "exceeded disk",
    ),
    "gpu": ("cuda", "gpu", "nvidia", "ecc"),
    "input": ("corrupt", "no such file", "cannot open", "truncated", "replica"),
    "crash": ("segmentation", "segfault", "traceback", "core dumped", "abort", "exception"),
}  # fmt: skip
_GROUP_CATEGORY: dict[str, tuple[Category, bool]] = {
    "memory": (Category.MEMORY, False),
    "time": (Category.WALLTIME, False),
    "site": (Category.SITE, True),
    "storage": (Category.STORAGE, True),
    "gpu": (Category.GPU, True),
    "input": (Category.INPUT, False),
    "crash": (Category.SOFTWARE, False),
}
# A generic kill with the memory (walltime) use at this fraction of the request was the
# limit's enforcement: cgroup samples peak a little under the limit.
MEMORY_AT_LIMIT = 0.95
WALLTIME_AT_LIMIT = 0.98

_UNIT_MB = {"k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2}
_AMOUNT = r"(\d+(?:\.\d+)?)\s*(kb|kib|mb|mib|gb|gib|tb|megabytes?|gigabytes?|[kmgt])?\b"
# "memory limit of 4096 megabytes ... usage: 6144 megabytes" (HTCondor's cgroup hold);
# "used 6144 of 4096 MB"; "6144 MB > 4096 MB"; "MemoryUsage = 6144 ... RequestMemory = 4096".
_LIMIT = re.compile(r"(?:memory\s+limit|requestmemory|request_memory)\s*(?:of|=|:)?\s*" + _AMOUNT)
_USAGE = re.compile(
    r"(?:usage|memoryusage|residentsetsize_mb|peak rss|rss)\s*(?:of|=|:)?\s*" + _AMOUNT
)
_USED_OF = re.compile(
    r"(?:used|using|uses|reached|peak(?:\s+usage)?)\s*(?:of\s+)?" + _AMOUNT
    + r"\s*(?:of|out of|/|over|above|>|exceeding|exceeds)\s*(?:the\s+|a\s+|its\s+)?"
    r"(?:requested\s+|limit\s+of\s+|request\s+of\s+)?" + _AMOUNT
)  # fmt: skip
_OVER = re.compile(
    _AMOUNT + r"\s*(?:>|exceeds?|over|above)\s*(?:the\s+)?(?:limit\s+of\s+)?" + _AMOUNT
)


def _mb(number: str, unit: str | None, default_unit: str | None = None) -> float:
    unit = (unit or default_unit or "m").lower()
    return float(number) * _UNIT_MB[unit[0]]


def memory_from_text(lines: Sequence[str]) -> tuple[float, float] | None:
    """(used MB, limit MB) when a log line states both, else None."""
    for line in lines:
        text = line.lower()
        if not any(word in text for word in ("memory", "rss", "mb", "megabyte")):
            continue
        limit, usage = _LIMIT.search(text), _USAGE.search(text)
        if limit and usage:
            return _mb(*usage.groups()), _mb(*limit.groups())
        memory_context = any(word in text for word in ("memory", "rss", "ram"))
        for pattern in (_USED_OF, _OVER):
            match = pattern.search(text)
            if match is None:
                continue
            used_unit, limit_unit = match.group(2), match.group(4)
            if not (memory_context or used_unit or limit_unit):
                continue
            used = _mb(match.group(1), used_unit, limit_unit)
            limit_mb = _mb(match.group(3), limit_unit, used_unit)
            if limit_mb > 0:
                return used, limit_mb
    return None


def keyword_groups(lines: Sequence[str]) -> list[str]:
    """The keyword groups found in the log lines, most trusted first."""
    text = "\n".join(lines).lower()
    return [group for group, words in LOG_KEYWORDS.items() if any(word in text for word in words)]


def diagnose(
    info: CodeInfo,
    lines: Sequence[str],
    memory_ratio: float | None = None,
    walltime_ratio: float | None = None,
) -> CodeInfo:
    """The code's meaning, refined by the log text and resource use where the code is
    generic (names no cause) or unknown. Specific codes are trusted as they are.
    """
    if not info.generic:
        return info
    stated = memory_from_text(lines) if memory_ratio is None else None
    if stated is not None:
        memory_ratio = stated[0] / stated[1]
    if memory_ratio is not None and memory_ratio >= MEMORY_AT_LIMIT:
        return replace(info, name=f"{info.name}; memory at {memory_ratio:.0%} of the request",
                       category=Category.MEMORY, transient=False, generic=False)  # fmt: skip
    groups = keyword_groups(lines)
    if groups:
        category, transient = _GROUP_CATEGORY[groups[0]]
        return replace(info, name=f"{info.name}; log: {groups[0]}", category=category,
                       transient=transient, generic=False)  # fmt: skip
    if walltime_ratio is not None and walltime_ratio >= WALLTIME_AT_LIMIT:
        return replace(info, name=f"{info.name}; walltime at {walltime_ratio:.0%} of the request",
                       category=Category.WALLTIME, transient=False, generic=False)  # fmt: skip
    return info
