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

# Keyword groups looked for in the last log lines, in the order :func:`diagnose` trusts them
# (a memory kill often also prints a traceback). Each keyword is a word, or a phrase of
# words: matched on word boundaries (regular expressions), never as a substring: "no room
# left" is not "oom", "broom-cache" is not "oom", "eccentric" is not "ecc".
LOG_KEYWORDS: dict[str, tuple[str, ...]] = {
    "memory": (
        r"out of memory", r"out-of-memory", r"memoryerror", r"(?:std::)?bad_alloc",
        r"oom(?:[-_ ]?kill(?:ed|er|s)?)?", r"oom-?killed", r"memory limit", r"memory usage",
        r"exceeded memory", r"exceeds memory", r"exceeded job memory", r"request_memory",
        r"(?:max)?rss", r"cannot allocate memory",
    ),
    "image": (  # a container image that cannot be had here: pull, name, architecture
        r"no image found in manifest list", r"manifest unknown", r"exec format error",
        r"image not found", r"failed to pull", r"pull access denied", r"invalid image name",
        r"unable to handle docker://\S*", r"image'?s? architecture",
    ),
    "preemption": (
        r"preempt(?:ed|ion|ing)?", r"evict(?:ed|ion)?", r"vacat(?:e|ed|ing)",
    ),
    "time": (
        r"time limit", r"walltime", r"wall time", r"wall-clock", r"wall clock", r"sigxcpu",
        r"deadline", r"maxwalltime", r"cpu time", r"job duration", r"execute duration",
        r"run time limit",
    ),
    "site": (
        r"drain(?:ing|ed)?", r"node fail(?:ure)?", r"shutdown", r"heartbeat", r"reconnect",
        r"lost contact", r"proxy", r"connection", r"maintenance",
        r"timed out", r"timeout",  # a service or transfer that did not answer, not the job's time
    ),
    "storage": (
        r"no space", r"stage-out", r"stageout", r"stage out", r"checksum",
        r"permission denied", r"i/o error", r"xrootd", r"quota", r"transfer failed",
        r"disk usage", r"disk limit", r"exceeded disk",
    ),
    "gpu": (r"cuda", r"gpu", r"nvidia", r"ecc"),
    "input": (r"corrupt(?:ed)?", r"no such file", r"cannot open", r"truncated", r"replicas?"),
    "crash": (
        r"segmentation (?:fault|violation)", r"segfault", r"traceback", r"core dumped",
        r"abort(?:ed)?", r"exception", r"illegal instruction", r"bus error",
    ),
}  # fmt: skip
_PATTERNS: dict[str, re.Pattern] = {
    group: re.compile(r"(?<![\w-])(?:" + "|".join(words) + r")(?![\w])", re.IGNORECASE)
    for group, words in LOG_KEYWORDS.items()
}
_GROUP_CATEGORY: dict[str, tuple[Category, bool]] = {
    "memory": (Category.MEMORY, False),
    "image": (Category.SOFTWARE, False),
    "preemption": (Category.SITE, True),
    "time": (Category.WALLTIME, False),
    "site": (Category.SITE, True),
    "storage": (Category.STORAGE, True),
    "gpu": (Category.GPU, True),
    "input": (Category.INPUT, False),
    "crash": (Category.SOFTWARE, False),
}
# What a specific code's own category may be overruled by, from its log: a crash, a
# payload failure or a site code whose log says bad_alloc is out of memory; one whose log
# says the image cannot be had is an image problem; a site code that says preempted was
# preempted. A memory, walltime, storage, input or configuration code keeps its meaning.
OVERRULED = (Category.SOFTWARE, Category.UNKNOWN, Category.SITE)
OVERRULING_GROUPS = ("memory", "image", "preemption")

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
    text = "\n".join(lines)
    return [group for group, pattern in _PATTERNS.items() if pattern.search(text)]


def _refined(info: CodeInfo, group: str, why: str) -> CodeInfo:
    category, transient = _GROUP_CATEGORY[group]
    return replace(
        info,
        name=f"{info.name}; {why}",
        category=category,
        transient=transient,
        generic=False,
        deterministic=group == "image" or (info.deterministic and group != "preemption"),
        site_dependent=group == "image" or info.site_dependent,
        preemption=group == "preemption" or info.preemption,
    )


def diagnose(
    info: CodeInfo,
    lines: Sequence[str],
    memory_ratio: float | None = None,
    walltime_ratio: float | None = None,
) -> CodeInfo:
    """The code's meaning, refined by the log text and resource use.

    Evidence is read for every code, with the trust it deserves: a generic or unknown code
    (names no cause) takes what the log and the resource use say; a specific crash, payload
    or site code (:data:`OVERRULED`) is overruled only by the log's memory, image or
    preemption words (:data:`OVERRULING_GROUPS`): an abort whose log says ``std::bad_alloc``
    is out of memory. Other specific codes are trusted as they are.

    >>> from smartbkg_prod.recovery.taxonomy import FailureCode, describe
    >>> abort = describe(FailureCode("signal", 6))
    >>> diagnose(abort, ["terminate called after throwing an instance of 'std::bad_alloc'"],
    ...          memory_ratio=0.996).category
    <Category.MEMORY: 'memory'>
    >>> diagnose(describe(FailureCode("htcondor", 26)), ["no room left in scratch"]).category
    <Category.UNKNOWN: 'unknown'>
    """
    groups = keyword_groups(lines)
    if not info.generic:
        if info.category not in OVERRULED or info.preemption:
            return info
        overruling = [group for group in groups if group in OVERRULING_GROUPS]
        if not overruling or overruling[0] == "preemption" and info.category is not Category.SITE:
            return info
        group = overruling[0]
        shown = f"; memory at {memory_ratio:.0%} of the request" if memory_ratio else ""
        return _refined(info, group, f"log: {group}{shown if group == 'memory' else ''}")
    stated = memory_from_text(lines) if memory_ratio is None else None
    if stated is not None:
        memory_ratio = stated[0] / stated[1]
    if memory_ratio is not None and memory_ratio >= MEMORY_AT_LIMIT:
        return _refined(info, "memory", f"memory at {memory_ratio:.0%} of the request")
    if groups:
        return _refined(info, groups[0], f"log: {groups[0]}")
    if walltime_ratio is not None and walltime_ratio >= WALLTIME_AT_LIMIT:
        return replace(info, name=f"{info.name}; walltime at {walltime_ratio:.0%} of the request",
                       category=Category.WALLTIME, transient=False, generic=False)  # fmt: skip
    return info
