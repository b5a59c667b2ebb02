"""Failure taxonomy: engine and worker codes map to categories with a transient flag."""

from __future__ import annotations

import pytest

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.recovery.taxonomy import (
    Category,
    FailureCode,
    describe,
    exit_status_code,
    parse_native_code,
)

# (native code as a backend stores it, category, transient)
CODE_TABLE = [
    ("HoldReasonCode=34/102", Category.MEMORY, False),
    ("HoldReasonCode=34 HoldReasonSubCode=104", Category.STORAGE, False),
    ("HoldReasonCode=12/28", Category.STORAGE, True),
    ("HoldReasonCode=13/5", Category.STORAGE, True),
    ("HoldReasonCode=35", Category.SOFTWARE, False),
    ("HoldReasonCode=46", Category.WALLTIME, False),
    ("HoldReasonCode=1014", Category.SITE, True),
    ("HoldReasonCode=1099", Category.SITE, True),  # unknown vacate code: still transient
    ("slurm:OUT_OF_MEMORY", Category.MEMORY, False),
    ("slurm:TIMEOUT", Category.WALLTIME, False),
    ("slurm:NODE_FAIL", Category.SITE, True),
    ("slurm:PREEMPTED", Category.SITE, True),
    ("slurm:BOOT_FAIL", Category.SITE, True),
    ("slurm:CANCELLED", Category.UNKNOWN, False),
    ("slurm:FAILED/139", Category.SOFTWARE, False),
    ("slurm:FAILED/50", Category.MEMORY, False),
    ("slurm:FAILED/137", Category.SITE, True),
    ("pilot:1212", Category.MEMORY, False),
    ("pilot:1213", Category.WALLTIME, False),
    ("pilot:1137", Category.STORAGE, True),
    ("pilot:1099", Category.STORAGE, True),
    ("pilot:1305", Category.SOFTWARE, False),
    ("pilot:1326", Category.INPUT, False),
    ("pilot:1144", Category.UNKNOWN, False),
    ("jobDispatcher:100", Category.SITE, True),
    ("taskBuffer:100", Category.UNKNOWN, False),
    ("wmcore:8021", Category.INPUT, True),
    ("wmcore:50660", Category.MEMORY, False),
    ("wmcore:60307", Category.STORAGE, True),
    ("wmcore:71302", Category.SITE, True),
    ("wmcore:8501", Category.PHYSICS_CONFIG, False),
    ("wmcore:139", Category.SOFTWARE, False),
    ("signal:9", Category.SITE, True),
    ("signal:11", Category.SOFTWARE, False),
    ("worker:60", Category.STORAGE, True),
    ("worker:10", Category.PHYSICS_CONFIG, False),
]


@pytest.mark.parametrize(("native", "category", "transient"), CODE_TABLE)
def test_native_code_maps_to_category_and_transient_flag(native, category, transient):
    info = describe(parse_native_code(native))
    assert (info.category, info.transient) == (category, transient)


def test_same_number_means_different_things_per_panda_field():
    dispatcher = describe(parse_native_code("jobDispatcher:100"))
    task_buffer = describe(parse_native_code("taskBuffer:100"))
    assert dispatcher.transient and not task_buffer.transient


def test_every_worker_exit_code_keeps_its_own_category():
    for code in ExitCode:
        info = describe(FailureCode("worker", int(code)))
        assert info.category.value == code.category
        assert info.transient == code.transient


@pytest.mark.parametrize(
    ("status", "token"), [(50, "worker:50"), (137, "signal:9"), (143, "signal:15"), (77, "exit:77")]
)
def test_exit_status_is_read_as_worker_code_signal_or_plain_exit(status, token):
    assert exit_status_code(status).token == token


def test_failure_code_reads_like_an_engine_message():
    assert str(parse_native_code("HoldReasonCode=34/102")) == (
        "htcondor:34/102 JobOutOfResources (memory limit)"
    )
    assert str(FailureCode("slurm", "NODE_FAIL")) == "slurm:NODE_FAIL node failure"


@pytest.mark.parametrize("text", ["", "HoldReason=3", "lsf:12", "pilot:abc", "34/102"])
def test_unreadable_native_code_is_a_clear_error(text):
    with pytest.raises(ValueError, match="native code"):
        parse_native_code(text)


def test_unknown_codes_fall_back_to_unknown_not_transient():
    info = describe(FailureCode("pilot", 4242))
    assert info.category is Category.UNKNOWN and not info.transient


def test_a_pilot_payload_failure_is_read_with_the_payloads_exit_status():
    # pilot:1305/40: the pilot ran the payload, which exited 40 (our SIMULATION failure).
    refined = describe(parse_native_code("pilot:1305/40"))
    assert refined.name == "PAYLOADEXECUTIONFAILURE (SIMULATION)"
    assert refined.category == ExitCode.SIMULATION.category
    # A pilot code that is not a payload failure keeps its own meaning.
    assert describe(parse_native_code("pilot:1149/40")).name == "TRFDOWNLOADFAILURE"


def test_an_engines_bare_exit_status_does_not_hide_the_workers_code():
    from smartbkg_prod.recovery.failures import FailureRecord

    def record(native):
        return FailureRecord(
            campaign_id="c", job_index=0, exit_code=40, native_source=native[0],
            native_code=native[1], native_subcode=native[2],
        )  # fmt: skip

    assert record(("exit", 40, None)).failure_code.token == "worker:40"
    assert record(("pilot", 1305, 40)).failure_code.token == "pilot:1305/40"
    assert record(("slurm", "FAILED", 40)).failure_code.token == "slurm:FAILED/40"
