"""Property-based fuzzing of job reports: ``read_report``/``parse_report``, the store and
``monitor collect``. A malformed report is a ReportError (or one warning line and exit 1
from collect), never a traceback; a report that validates can always be stored."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fuzz_inputs import FUZZ, mutate, mutations
from hypothesis import given
from hypothesis import strategies as st

from smartbkg_prod.cli import main
from smartbkg_prod.errors import StoreError
from smartbkg_prod.monitor.collect import ingest_reports, read_report_files
from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.report import JobReport, ReportError, parse_report, read_report
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import Store

CAMPAIGN = Campaign(name="fuzzreport", process="bbbar_mixed", events=40, events_per_job=10)
VALID = JobReport(
    campaign_id=CAMPAIGN.campaign_id,
    campaign_name=CAMPAIGN.name,
    job_index=1,
    attempt=1,
    first_event=10,
    n_events=10,
    seed=3,
    started_at=1.0e9,
    finished_at=1.0e9 + 5,
    wall_seconds=5.0,
    cpu_seconds=4.0,
    exit_code=0,
    error_class="success",
    events_generated=10,
    outputs=[{"path": "/x.root", "size_bytes": 10, "sha256": "0" * 64, "events": 10}],
).model_dump(mode="json")
FIELDS = [(key,) for key in VALID if key != "provenance"] + [("outputs",), ("surprise",)]


def mutated(changes) -> dict:
    data = copy.deepcopy(VALID)
    for path, action, value in changes:
        mutate(data, path, action, value)
    return data


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('reports') / 'jobs.db'}")
    store.campaigns.register(CAMPAIGN, plan_jobs(CAMPAIGN), Path("/tmp/unused"))
    return store


@FUZZ
@given(changes=mutations(FIELDS, max_size=3))
def test_mutated_reports_are_valid_and_storable_or_a_report_error(changes, store):
    data = mutated(changes)
    try:
        report = parse_report(data, "r.json")
    except ReportError as error:
        assert str(error).startswith("r.json: ") and "problem(s)" in str(error)
        return
    # Whatever validates must go into the store (or be rejected with a reason).
    result = ingest_reports(store, [report])
    assert result.stored + result.duplicates + len(result.rejected) == 1
    try:
        store.reports.record(report)
    except StoreError as error:  # e.g. a job index the campaign does not have
        assert result.rejected and report.campaign_id in str(error)


@FUZZ
@given(content=st.binary(max_size=500) | st.text(max_size=300).map(str.encode))
def test_arbitrary_report_files_are_report_errors(content, tmp_path_factory):
    path = tmp_path_factory.mktemp("bytes") / "x.attempt1.report.json"
    path.write_bytes(content)
    with pytest.raises(ReportError, match=str(path)):
        read_report(path)
    reports, errors = read_report_files([path])
    assert reports == [] and len(errors) == 1


@pytest.mark.parametrize(
    "content",
    [b"", b"{}", b"[]", b"null", b'{"campaign_id": 1}', b"\xff\xfe", b"NaN", b"1e999999"],
)
def test_collect_warns_and_exits_1_for_bad_report_files(content, tmp_path):
    (tmp_path / "bad.attempt1.report.json").write_bytes(content)
    good = JobReport.model_validate(VALID)
    db = f"sqlite:///{tmp_path / 'collect.db'}"
    Store(db).campaigns.register(CAMPAIGN, plan_jobs(CAMPAIGN), tmp_path)
    (tmp_path / "good.attempt1.report.json").write_text(good.model_dump_json())
    result = CliRunner().invoke(main, ["monitor", "collect", str(tmp_path), "--db", db])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "1 stored" in result.output and "1 unreadable" in result.output


def test_deeply_nested_report_is_a_report_error(tmp_path):
    path = tmp_path / "deep.attempt1.report.json"
    path.write_text("[" * 100_000)
    with pytest.raises(ReportError, match="nested too deeply"):
        read_report(path)


def test_collect_survives_a_deeply_nested_report_file(tmp_path):
    path = tmp_path / "deep.attempt1.report.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    reports, errors = read_report_files([path])
    assert reports == [] and len(errors) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"started_at": float("nan")},
        {"wall_seconds": float("inf")},
        {"attempt": 2**70},
        {"exit_code": -(2**64)},
        {"events_generated": 2**63},
    ],
)
def test_reports_the_store_cannot_hold_are_rejected_at_parse_time(change):
    # A NaN time used to be stored as NULL, fail the insert and be counted as a duplicate.
    with pytest.raises(ReportError):
        parse_report(json.loads(json.dumps({**VALID, **change})), "r.json")
