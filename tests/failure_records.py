"""Failure records for recovery tests: one failed attempt, its engine code given in the
notation the backends write (``condor:34``, ``pilot:1305/134``, ...)."""

from __future__ import annotations

from smartbkg_prod.recovery.failures import FailureRecord
from smartbkg_prod.recovery.taxonomy import parse_native


def attempt(job, site="T2_A", exit_code=0, attempt=1, native=None, **fields) -> FailureRecord:
    code = parse_native(native)[0] if native else None
    return FailureRecord(
        campaign_id="c", job_index=job, attempt=attempt, site=site, exit_code=exit_code,
        native_source=code.source if code else None, native_code=code.code if code else None,
        native_subcode=code.subcode if code else None, **fields,
    )  # fmt: skip
