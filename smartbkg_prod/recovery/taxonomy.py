"""Failure taxonomy: every code a failed attempt can carry, mapped to one category.

A failed attempt carries the worker's own exit code (:class:`~smartbkg_prod.exitcodes.ExitCode`)
and, where an engine saw the failure, that engine's native code. Both land in the same
small set of :class:`Category` values, each code with a ``transient`` flag: whether a plain
retry (same seed, same resources) is usually enough. Engine codes are read together with
the source they came from, because engines reuse numbers across fields (PanDA's
``taskBuffer`` 100 is a kill, ``jobDispatcher`` 100 a lost heartbeat).

>>> code = parse_native_code("HoldReasonCode=34/102")
>>> str(code)
'htcondor:34/102 JobOutOfResources (memory limit)'
>>> describe(code).category
<Category.MEMORY: 'memory'>
>>> describe(FailureCode("slurm", "NODE_FAIL")).transient
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from smartbkg_prod.exitcodes import ExitCode


class Category(StrEnum):
    """Where a failure comes from; the worker's ExitCode.category uses the same words."""

    SITE = "site"  # site infrastructure: node, batch system, network, credentials
    STORAGE = "storage"  # stage-in/stage-out, local disk, storage element
    MEMORY = "memory"
    WALLTIME = "walltime"
    GPU = "gpu"
    INPUT = "input"  # an input file or replica missing or corrupt
    SOFTWARE = "software"  # payload crash, container, setup scripts
    PHYSICS_CONFIG = "physics_config"  # invalid spec, generator configuration
    UNKNOWN = "unknown"
    SUCCESS = "success"


class Source(StrEnum):
    """Which system a code came from (the field a number is read together with)."""

    WORKER = "worker"  # smartbkg_prod.exitcodes.ExitCode
    EXIT = "exit"  # a plain process exit status that is not one of ours
    SIGNAL = "signal"  # killed by signal n (shell status 128 + n)
    HTCONDOR = "htcondor"  # HoldReasonCode (+ HoldReasonSubCode)
    SLURM = "slurm"  # job state (+ exit code or signal)
    PILOT = "pilot"  # PanDA pilot error code (pilotErrorCode)
    JOB_DISPATCHER = "jobDispatcher"  # PanDA server jobDispatcherErrorCode
    TASK_BUFFER = "taskBuffer"  # PanDA server taskBufferErrorCode
    WMCORE = "wmcore"  # CMS WMCore exit codes


@dataclass(frozen=True)
class CodeInfo:
    """What a code means: short name, category, and whether a plain retry usually helps."""

    name: str
    category: Category
    transient: bool


@dataclass(frozen=True)
class FailureCode:
    """One code as an engine reported it: ``(source, code, subcode)``.

    ``code`` is an int for numeric codes and the state name for Slurm.
    ``token`` is the compact canonical form used in features and in the store.
    """

    source: str
    code: int | str
    subcode: int | None = None

    @property
    def token(self) -> str:
        tail = "" if self.subcode is None else f"/{self.subcode}"
        return f"{self.source}:{self.code}{tail}"

    def __str__(self) -> str:
        info = describe(self)
        return f"{self.token} {info.name}"


def _info(name: str, category: Category, transient: bool) -> CodeInfo:
    return CodeInfo(name, category, transient)


S, ST, M, W, G, I, SW, P, U = (  # noqa: E741 - short aliases keep the tables readable
    Category.SITE,
    Category.STORAGE,
    Category.MEMORY,
    Category.WALLTIME,
    Category.GPU,
    Category.INPUT,
    Category.SOFTWARE,
    Category.PHYSICS_CONFIG,
    Category.UNKNOWN,
)

# HTCondor HoldReasonCode, from htcondor/htcondor src/condor_utils/condor_holdcodes.h.
# Codes >= 1000 are vacate reasons (the job was evicted, not held): transient by nature.
HTCONDOR_HOLD: dict[int, CodeInfo] = {
    0: _info("Unspecified", U, False),
    1: _info("UserRequest", U, False),
    3: _info("JobPolicy (periodic_hold)", U, False),
    4: _info("CorruptedCredential", S, True),
    5: _info("JobPolicyUndefined", U, False),
    6: _info("FailedToCreateProcess", S, True),
    7: _info("UnableToOpenOutput", ST, True),
    8: _info("UnableToOpenInput", ST, True),
    12: _info("TransferOutputError", ST, True),
    13: _info("TransferInputError", ST, True),
    14: _info("IwdError", S, True),
    15: _info("SubmittedOnHold", U, False),
    16: _info("SpoolingInput", U, True),
    21: _info("StartdHeldJob", S, True),
    22: _info("UnableToInitUserLog", S, True),
    26: _info("SystemPolicy (SYSTEM_PERIODIC_HOLD)", U, False),
    27: _info("SystemPolicyUndefined", U, False),
    32: _info("MaxTransferInputSizeExceeded", I, False),
    33: _info("MaxTransferOutputSizeExceeded", ST, False),
    34: _info("JobOutOfResources", M, False),  # refined by subcode below
    35: _info("InvalidDockerImage", SW, False),
    36: _info("FailedToCheckpoint", S, True),
    43: _info("PreScriptFailed (DAGMan)", SW, False),
    44: _info("PostScriptFailed (DAGMan)", SW, False),
    45: _info("SingularityTestFailed", S, True),  # a node's container runtime, not the image
    46: _info("JobDurationExceeded", W, False),
    47: _info("JobExecuteExceeded", W, False),
    1002: _info("ShadowException", S, True),
    1007: _info("StarterError", S, True),
    1008: _info("ReconnectFailed", S, True),
    1013: _info("StartdShutdown", S, True),
    1014: _info("StartdDraining", S, True),
}
# JobOutOfResources subcodes (same header): which limit was exceeded.
HTCONDOR_OUT_OF_RESOURCES: dict[int, CodeInfo] = {
    102: _info("JobOutOfResources (memory limit)", M, False),
    104: _info("JobOutOfResources (disk limit)", ST, False),
}

# PanDA pilot error codes, from PanDAWMS/pilot3 pilot/common/errorcodes.py (pilot 3.7).
# The pilot itself treats only the stage-out family as recoverable; the transient flags of
# the other codes are operational judgement (see FAILURES.md).
PILOT: dict[int, CodeInfo] = {
    1098: _info("NOLOCALSPACE", ST, True),
    1099: _info("STAGEINFAILED", ST, True),
    1100: _info("REPLICANOTFOUND", I, False),
    1103: _info("NOSUCHFILE", I, False),
    1110: _info("SETUPFAILURE", SW, False),
    1124: _info("OUTPUTFILETOOLARGE", ST, False),
    1137: _info("STAGEOUTFAILED", ST, True),
    1141: _info("PUTMD5MISMATCH", ST, True),
    1144: _info("PANDAKILL", U, False),  # killed on purpose: never retry blindly
    1145: _info("GETMD5MISMATCH", ST, True),
    1150: _info("LOOPINGJOB", SW, False),
    1151: _info("STAGEINTIMEOUT", ST, True),
    1152: _info("STAGEOUTTIMEOUT", ST, True),
    1163: _info("NOPROXY", S, True),
    1165: _info("MISSINGOUTPUTFILE", SW, False),
    1200: _info("KILLSIGNAL", S, True),
    1201: _info("SIGTERM", S, True),
    1203: _info("SIGSEGV", SW, False),
    1204: _info("SIGXCPU", W, False),  # CPU-time limit: more time, not a plain retry
    1212: _info("PAYLOADOUTOFMEMORY", M, False),
    1213: _info("REACHEDMAXTIME", W, False),
    1220: _info("UNKNOWNPAYLOADFAILURE", U, False),
    1223: _info("BADALLOC", M, False),
    1235: _info("PAYLOADEXCEEDMAXMEM", M, False),
    1305: _info("PAYLOADEXECUTIONFAILURE", SW, False),
    1306: _info("container runtime failure", SW, True),
    1309: _info("container image mount failure", SW, True),
    1316: _info("service unavailable", S, True),
    1318: _info("communication failure", S, True),
    1326: _info("NOREPLICAS", I, False),
    1333: _info("NOREMOTESPACE", ST, True),
    1356: _info("pre-process failure", SW, False),
    1357: _info("post-process failure", SW, False),
    1360: _info("IMAGENOTFOUND", SW, False),
    1367: _info("COMMANDTIMEDOUT", S, True),
}
# PanDA server fields, from PanDAWMS/panda-server pandaserver/taskbuffer/ErrorCode.py and
# jobdispatcher/ErrorCode.py: the same number means different things per field.
JOB_DISPATCHER: dict[int, CodeInfo] = {100: _info("EC_Watcher (lost heartbeat)", S, True)}
TASK_BUFFER: dict[int, CodeInfo] = {100: _info("EC_Kill (killed by user or operator)", U, False)}

# Slurm job states, from the JOB STATE CODES section of slurm.schedmd.com/sacct.html.
# FAILED and CANCELLED are refined by the exit code / signal in the subcode.
SLURM: dict[str, CodeInfo] = {
    "OUT_OF_MEMORY": _info("out of memory (cgroup limit)", M, False),
    "TIMEOUT": _info("time limit reached", W, False),
    "DEADLINE": _info("deadline reached", W, False),
    "NODE_FAIL": _info("node failure", S, True),
    "PREEMPTED": _info("preempted", S, True),
    "BOOT_FAIL": _info("node boot failure", S, True),
    "REQUEUED": _info("requeued", S, True),
    "CANCELLED": _info("cancelled by user or administrator", U, False),
    "FAILED": _info("non-zero exit code", U, False),
}

# Unix signals (signal(7)); shells and batch systems report them as status 128 + n.
SIGNALS: dict[int, CodeInfo] = {
    1: _info("SIGHUP", S, True),
    2: _info("SIGINT", U, False),
    6: _info("SIGABRT", SW, False),
    7: _info("SIGBUS", SW, False),
    9: _info("SIGKILL (likely a batch-system kill)", S, True),
    11: _info("SIGSEGV", SW, False),
    15: _info("SIGTERM", S, True),
    24: _info("SIGXCPU", W, False),
    25: _info("SIGXFSZ", ST, False),
}

# CMS WMCore exit codes, from dmwm/WMCore src/python/WMCore/WMExceptions.py (WM_JOB_ERROR_CODES).
# 1-512 are Unix signals and are read through SIGNALS above.
WMCORE: dict[int, CodeInfo] = {
    8004: _info("std::bad_alloc", M, False),
    8020: _info("FileOpenError (likely a site problem)", ST, True),
    8021: _info("FileReadError", I, True),
    8028: _info("FileOpenError with fallback", ST, True),
    8030: _info("exceeded maximum VSize", M, False),
    8031: _info("exceeded maximum RSS", M, False),
    8032: _info("exceeded maximum time", W, False),
    8033: _info("FileWriteError (usually local disk)", ST, True),
    8501: _info("EventGenerationFailure", P, False),
    11003: _info("software area not found", S, True),
    50115: _info("no valid job report (often a segfault)", SW, False),
    50513: _info("setup scripts failed", S, True),
    50660: _info("too much RAM", M, False),
    50662: _info("too much disk", ST, False),
    50664: _info("too much wall clock", W, False),
    60307: _info("stage-out failure", ST, True),
    60311: _info("stage-out site plugin failure", ST, True),
    60403: _info("stage-out timeout", ST, True),
    60450: _info("no output files in report", ST, True),
    71101: _info("no site matches white/blacklist", S, False),
    71102: _info("only site aborted", S, True),
    71103: _info("only site draining", S, True),
    71301: _info("killed: site aborted", S, True),
    71302: _info("killed: site draining", S, True),
    71303: _info("killed: site down", S, True),
    71304: _info("killed: too much wall clock", W, False),
    71305: _info("killed: too much wall clock", W, False),
    71306: _info("killed: too much wall clock", W, False),
    71307: _info("killed: too much wall clock", W, False),
    99109: _info("uncaught exception in step (commonly stage-out)", ST, True),
    99303: _info("job report lost", S, True),
    99305: _info("input too large for a pilot lifetime", W, False),
    99400: _info("removed by condor_rm or SYSTEM_PERIODIC_REMOVE", U, False),
}

_UNKNOWN = CodeInfo("unknown code", Category.UNKNOWN, False)


def describe(code: FailureCode) -> CodeInfo:
    """Category, name and transient flag of a code; unknown codes map to ``unknown``."""
    source = code.source
    if source == Source.WORKER:
        try:
            worker = ExitCode(int(code.code))
        except ValueError:
            return _UNKNOWN
        return CodeInfo(worker.name, Category(worker.category), worker.transient)
    if source == Source.SIGNAL:
        return SIGNALS.get(int(code.code), CodeInfo(f"signal {code.code}", Category.UNKNOWN, False))
    if source == Source.EXIT:
        return (
            describe(exit_status_code(int(code.code)))
            if _is_known_exit(int(code.code))
            else _UNKNOWN
        )
    if source == Source.HTCONDOR:
        number = int(code.code)
        if number == 34 and code.subcode in HTCONDOR_OUT_OF_RESOURCES:
            return HTCONDOR_OUT_OF_RESOURCES[code.subcode]
        if number in HTCONDOR_HOLD:
            return HTCONDOR_HOLD[number]
        return CodeInfo(f"vacate {number}", Category.SITE, True) if number >= 1000 else _UNKNOWN
    if source == Source.SLURM:
        state = str(code.code)
        info = SLURM.get(state, _UNKNOWN)
        if state in {"FAILED", "CANCELLED"} and code.subcode:
            # The exit status says more than the state: 137 = SIGKILL, 50 = our OOM, ...
            refined = describe(exit_status_code(code.subcode))
            if refined.category != Category.UNKNOWN:
                return CodeInfo(f"{state} ({refined.name})", refined.category, refined.transient)
        return info
    table = {
        Source.PILOT: PILOT,
        Source.JOB_DISPATCHER: JOB_DISPATCHER,
        Source.TASK_BUFFER: TASK_BUFFER,
        Source.WMCORE: WMCORE,
    }.get(source)
    if table is None:
        return _UNKNOWN
    number = int(code.code)
    if source == Source.WMCORE and 0 < number <= 512 and number not in table:
        return describe(exit_status_code(number))
    return table.get(number, _UNKNOWN)


def _is_known_exit(status: int) -> bool:
    return exit_status_code(status).source != Source.EXIT


def exit_status_code(status: int) -> FailureCode:
    """A process exit status as a code: ours (< 128), a signal (128 + n), or plain ``exit``.

    >>> exit_status_code(137).token
    'signal:9'
    >>> exit_status_code(50).token
    'worker:50'
    """
    if status in ExitCode._value2member_map_:
        return FailureCode(Source.WORKER.value, status)
    if 128 < status < 160:
        return FailureCode(Source.SIGNAL.value, status - 128)
    return FailureCode(Source.EXIT.value, status)


_HOLD_PATTERN = re.compile(
    r"^HoldReasonCode\s*=\s*(\d+)(?:\s*(?:/|,?\s*HoldReasonSubCode\s*=)\s*(-?\d+))?$", re.IGNORECASE
)
_TOKEN_PATTERN = re.compile(r"^([A-Za-z_]+)\s*:\s*([A-Za-z0-9_]+)(?:\s*/\s*(-?\d+))?$")
_SOURCE_ALIASES = {
    "htcondor": Source.HTCONDOR,
    "condor": Source.HTCONDOR,
    "slurm": Source.SLURM,
    "pilot": Source.PILOT,
    "panda": Source.PILOT,
    "jobdispatcher": Source.JOB_DISPATCHER,
    "taskbuffer": Source.TASK_BUFFER,
    "wmcore": Source.WMCORE,
    "cms": Source.WMCORE,
    "signal": Source.SIGNAL,
    "worker": Source.WORKER,
    "exit": Source.EXIT,
}


def parse_native_code(text: str) -> FailureCode:
    """Read a native code as backends store it (``AttemptRow.native_code``).

    Accepted forms: ``HoldReasonCode=34/102``, ``HoldReasonCode=34 HoldReasonSubCode=102``,
    ``SOURCE:CODE[/SUBCODE]`` with SOURCE one of htcondor, slurm, pilot, jobDispatcher,
    taskBuffer, wmcore, signal, worker, exit (e.g. ``slurm:OUT_OF_MEMORY``,
    ``slurm:FAILED/137``, ``pilot:1212``). Raises ValueError for anything else.
    """
    text = text.strip()
    held = _HOLD_PATTERN.match(text)
    if held:
        subcode = int(held.group(2)) if held.group(2) is not None else None
        return FailureCode(Source.HTCONDOR.value, int(held.group(1)), subcode)
    match = _TOKEN_PATTERN.match(text)
    if not match or match.group(1).lower() not in _SOURCE_ALIASES:
        raise ValueError(
            f"unreadable native code {text!r} (expected e.g. 'HoldReasonCode=34/102', "
            f"'slurm:OUT_OF_MEMORY', 'pilot:1212'; sources: {', '.join(s.value for s in Source)})"
        )
    source = _SOURCE_ALIASES[match.group(1).lower()]
    raw = match.group(2)
    subcode = int(match.group(3)) if match.group(3) is not None else None
    if source == Source.SLURM:
        return FailureCode(source.value, raw.upper(), subcode)
    if not raw.isdigit():
        raise ValueError(f"unreadable native code {text!r}: {source.value} codes are numbers")
    return FailureCode(source.value, int(raw), subcode)
