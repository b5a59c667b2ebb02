"""HTCondor backend, checked with the htcondor2 bindings' own objects (no pool here).

HTCondor ships no daemons in the wheel and Debian has no package, so nothing here ran
against a pool. Submission is checked by parsing the rendered files back with
``htcondor2.Submit`` and expanding each itemdata row the way condor_submit does for each
proc; tracking against event logs and job ads in HTCondor's own formats
(``htcondor_records/``, each file's source in its README) read with ``htcondor2.JobEventLog``
and ``classad2``; the schedd calls through a real ``htcondor2.Schedd`` whose C transport
functions are replaced (``htcondor_wire.py``), the one test double left, because no schedd
can run here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from unavailable import require_module

htcondor2 = require_module("htcondor2")
classad2 = require_module("classad2")

from htcondor_wire import (  # noqa: E402
    RECORDS,
    SCHEDD_ADDRESS,
    ScheddWire,
    install_wire,
    log_blocks,
    use_schedd,
)

from smartbkg_prod.backends.base import JobHandle  # noqa: E402
from smartbkg_prod.backends.htcondor import (  # noqa: E402
    ITEM_COLUMNS,
    PERIODIC_EXPR_INTERVAL_S,
    RELEASE_AFTER_S,
    EventLog,
    HTCondorBackend,
    job_state,
)
from smartbkg_prod.cli import main  # noqa: E402
from smartbkg_prod.errors import SubmitError  # noqa: E402
from smartbkg_prod.plan import JobInput, plan_jobs, read_job_list_entry  # noqa: E402
from smartbkg_prod.spec import Campaign, dump_campaign, load_campaign  # noqa: E402
from smartbkg_prod.submit import render_campaign  # noqa: E402


@pytest.fixture
def condor_campaign(tmp_path: Path) -> Campaign:
    return Campaign(
        name="condortest",
        process="bbbar_generic",
        events=2500,
        events_per_job=1000,
        seed=9,
        resources={"cores": 4, "memory_mb": 6000, "disk_mb": 3000, "walltime_s": 7200, "gpus": 1},
        container={"image": "registry.example/smartbkg-worker:2", "runtime": "docker"},
        backend={
            "name": "htcondor",
            "max_parallel": 20,
            "sites": {"allowed": ["DESY", "KEK"], "excluded": ["BNL"]},
        },
        retry={"max_attempts": 4},
        outputs={"directory": str(tmp_path / "out")},
    )


def parse_back(path: Path) -> htcondor2.Submit:
    return htcondor2.Submit(path.read_text())


def proc_view(description: htcondor2.Submit, row: dict[str, str]) -> htcondor2.Submit:
    """One proc of the cluster: the description with that row's item variables defined."""
    text = str(description).rsplit("queue", 1)[0]
    proc = htcondor2.Submit(text)
    for key, value in row.items():
        proc[key] = value
    return proc


def test_rendered_description_parses_back_with_spec_resources_and_policies(
    condor_campaign, tmp_path
):
    render_campaign(condor_campaign, tmp_path / "dry", backend="htcondor")
    description = parse_back(tmp_path / "dry" / "condortest.sub")
    assert description["universe"] == "container"
    assert description["container_image"] == "docker://registry.example/smartbkg-worker:2"
    assert description["request_cpus"] == "4"
    assert description["request_memory"] == "6000"
    assert description["request_disk"] == str(3000 * 1024)
    assert description["request_gpus"] == "1"
    assert description["max_retries"] == "3"
    assert description["on_exit_hold"] == "ExitCode =?= 10 || ExitCode =?= 20"
    assert description["periodic_release"].startswith("(NumJobStarts < 4)")
    assert "HoldReasonCode =?= 13" in description["periodic_release"]
    assert description["requirements"] == (
        '(TARGET.GLIDEIN_Site =?= "DESY" || TARGET.GLIDEIN_Site =?= "KEK") '
        '&& TARGET.GLIDEIN_Site =!= "BNL"'
    )
    assert description["max_materialize"] == "20"
    assert description["transfer_input_files"] == str(tmp_path / "dry" / "condortest.jobs.jsonl")
    assert description.getQArgs().startswith(",".join(ITEM_COLUMNS) + " from ")


def test_each_proc_gets_its_job_arguments_and_event_range(condor_campaign, tmp_path):
    render_campaign(condor_campaign, tmp_path / "dry", backend="htcondor")
    description = parse_back(tmp_path / "dry" / "condortest.sub")
    rows = list(description.itemdata())
    jobs = plan_jobs(condor_campaign)
    assert len(rows) == len(jobs) == 3
    for row, job in zip(rows, jobs, strict=True):
        proc = proc_view(description, row)
        assert proc.expand("arguments") == (
            f'"-m smartbkg_prod.cli worker --job condortest.jobs.jsonl --index {row["entry"]}"'
        )
        assert (proc.expand("MY.SmartbkgFirstEvent"), proc.expand("MY.SmartbkgNEvents")) == (
            str(job.first_event),
            str(job.n_events),
        )
        entry = read_job_list_entry(tmp_path / "dry" / "condortest.jobs.jsonl", int(row["entry"]))
        assert entry.job == job
        # With file transfer the worker writes into its scratch directory; HTCondor brings
        # the files back to initialdir, the campaign's output directory.
        assert entry.output_dir == "."
        assert proc.expand("initialdir").endswith(condor_campaign.campaign_id)


def test_setqargs_moves_the_items_without_changing_the_jobs(condor_campaign, tmp_path):
    render_campaign(condor_campaign, tmp_path / "dry", backend="htcondor")
    description = parse_back(tmp_path / "dry" / "condortest.sub")
    rows = list(description.itemdata())
    copy = tmp_path / "copy.items"
    copy.write_text((tmp_path / "dry" / "condortest.items").read_text())
    description.setQArgs(f"{','.join(ITEM_COLUMNS)} from {copy}")
    assert list(description.itemdata()) == rows


def test_filter_campaign_without_a_model_renders_a_train_then_produce_dag(
    condor_campaign, tmp_path
):
    campaign = Campaign.model_validate(
        {
            **condor_campaign.model_dump(),
            "filter": {"mode": "sample", "model": str(tmp_path / "model.pt")},
        }
    )
    paths = HTCondorBackend.from_campaign(campaign).render(
        campaign, job_inputs(campaign), tmp_path / "dag"
    )
    dag_file = tmp_path / "dag" / "condortest.dag"
    assert dag_file in paths
    lines = [line.split() for line in dag_file.read_text().splitlines() if line[:1].isalpha()]
    jobs = {words[1]: words[2] for words in lines if words[0] == "JOB"}
    assert jobs == {"train:0": "train.sub", "produce:0": "produce.sub"}
    assert ["PARENT", "train:0", "CHILD", "produce:0"] in lines
    train = parse_back(tmp_path / "dag" / "train.sub")
    training_spec = tmp_path / "dag" / "condortest-train.yaml"
    assert train["arguments"] == (
        f'"-m smartbkg_prod.cli train {training_spec} --out {tmp_path / "model.pt"} '
        '--in-process --workers 4"'
    )
    assert load_campaign(training_spec).filter.mode == "off"
    produce = parse_back(tmp_path / "dag" / "produce.sub")
    assert len(list(produce.itemdata())) == 3


def test_filter_campaign_with_a_trained_model_is_a_single_cluster(condor_campaign, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    campaign = Campaign.model_validate(
        {**condor_campaign.model_dump(), "filter": {"mode": "cut", "model": str(model)}}
    )
    paths = HTCondorBackend().render(campaign, job_inputs(campaign), tmp_path / "dry")
    assert [p.name for p in paths] == [
        "condortest.sub",
        "condortest.items",
        "condortest.jobs.jsonl",
    ]


def test_bare_campaign_runs_in_the_vanilla_universe(tmp_path):
    campaign = Campaign(name="bare", process="bbbar_mixed", events=20, events_per_job=10)
    HTCondorBackend(shared_filesystem=True).render(campaign, job_inputs(campaign), tmp_path)
    description = parse_back(tmp_path / "bare.sub")
    assert description["universe"] == "vanilla"
    assert "container_image" not in description
    assert description["should_transfer_files"] == "IF_NEEDED"
    assert str(tmp_path / "bare.jobs.jsonl") in description["arguments"]


def test_cli_dry_run_renders_the_htcondor_submission(condor_campaign, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(dump_campaign(condor_campaign))
    result = CliRunner().invoke(
        main, ["submit", str(spec), "--backend", "htcondor", "--dry-run", str(tmp_path / "dry")]
    )
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "dry" / "condortest.sub") in result.output.splitlines()


def handle(job_id: str = "12.0") -> JobHandle:
    return JobHandle(
        campaign_id="c", job_index=0, attempt=1, backend="htcondor", backend_job_id=job_id
    )


def test_an_image_means_the_container_universe_whatever_the_local_runtime(tmp_path):
    campaign = Campaign(
        name="grid",
        process="bbbar_mixed",
        events=20,
        events_per_job=10,
        container={"image": "registry.example/smartbkg-worker:2", "runtime": "process"},
    )
    HTCondorBackend().render(campaign, job_inputs(campaign), tmp_path)
    description = parse_back(tmp_path / "grid.sub")
    assert description["universe"] == "container"
    assert description["container_image"] == "docker://registry.example/smartbkg-worker:2"


# -- tracking: the job event log, in HTCondor's own format (see htcondor_records/README.md) ----


def logged_states(name: str, max_starts: int | None = None) -> dict[str, tuple]:
    log = EventLog(RECORDS / name)
    return {
        job_id: (state.state, state.exit_code, state.native_code, state.site)
        for job_id, job in log.update().items()
        for state in [job.to_state(handle(job_id), max_starts)]
    }


def test_every_record_parses_with_the_bindings_and_names_its_source():
    readme = (RECORDS / "README.md").read_text()
    for path in sorted(RECORDS.glob("*.log")):
        events = list(htcondor2.JobEventLog(str(path)).events(stop_after=0))
        assert events, path.name
        assert f"`{path.name}`" in readme
    for path in sorted(RECORDS.glob("*.ad*")):
        assert list(classad2.parseAds(path.read_text())), path.name
        assert f"`{path.name}`" in readme


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "terminated_normally.log",
            {
                # 2759.0's submit event is cut before its '...' line: not read yet.
                "2758.0": ("done", 0, None, "<128.105.144.30:32794>"),
            },
        ),
        (
            # The abort logged after 180158.0 terminated does not undo its exit.
            "signal_then_aborted.log",
            {
                "180158.0": ("failed", 139, "signal:11", "<128.105.167.40:43454>"),
                "180159.0": ("done", 0, None, "<128.105.167.40:43454>"),
            },
        ),
        ("signal_retries.log", {"1.0": ("failed", 139, "signal:11", "<1.2.3.5:46937>")}),
        (
            # Evicted, and terminated-but-requeued: back in the queue.
            "evicted.log",
            {"5164.0": ("pending", None, None, None), "3236.0": ("pending", None, None, None)},
        ),
        (
            "held_released_reconnected.log",
            {
                "781.0": ("done", 0, None, "DESY"),
                "781.1": (
                    "cancelled",
                    None,
                    "HoldReasonCode=34/102",
                    "<127.0.0.1:42089?addrs=127.0.0.1-42089>",
                ),
                "781.2": ("pending", None, None, "<127.0.0.1:42089?addrs=127.0.0.1-42089>"),
            },
        ),
    ],
)
def test_recorded_event_logs_give_each_jobs_state(name, expected):
    assert logged_states(name) == expected


def test_the_log_is_read_as_it_grows_and_suspended_or_disconnected_jobs_run(tmp_path):
    path = tmp_path / "growing.log"
    log = EventLog(path)
    assert log.update() == {}  # not written yet
    seen = []
    for block in log_blocks("held_released_reconnected.log"):
        if not block.startswith(("0", "1", "2")) or "(781.000.000)" not in block:
            continue
        with path.open("a") as stream:
            # HTCondor writes an event in pieces; the reader waits for its '...' line.
            head, tail = block[: len(block) // 2], block[len(block) // 2 :]
            stream.write(head)
            stream.flush()
            before = log.update()["781.0"].state if "781.0" in log.jobs else None
            stream.write(tail)
        state = log.update()["781.0"].to_state(handle("781.0"), max_starts=3)
        seen.append((block[:3], before, state.state, state.native_code))
    assert [(event, state, native) for event, _, state, native in seen] == [
        ("000", "pending", None),
        ("001", "running", None),
        ("028", "running", None),
        ("012", "held", "HoldReasonCode=13/256"),
        ("013", "pending", None),
        ("001", "running", None),
        ("022", "running", None),  # disconnected: the shadow reconnects
        ("023", "running", None),
        ("010", "running", None),  # suspended: resumes where it stopped
        ("011", "running", None),
        ("005", "done", None),
    ]
    # While an event is half written the state is the previous event's.
    assert [before for _, before, _, _ in seen[1:]] == [state for _, _, state, _ in seen[:-1]]


def test_transient_holds_carry_the_periodic_release_deadline_others_none(tmp_path):
    path = tmp_path / "held.log"
    blocks = log_blocks("held_released_reconnected.log")
    # Submitted, started, then held: 781.0 for a transfer error, 781.1 for memory.
    path.write_text(
        "".join(b for b in blocks if b[:3] in ("000", "001") and "(781.00" in b)
        + "".join(b for b in blocks if "Job was held." in b)
    )
    jobs = EventLog(path).update()
    transient = jobs["781.0"]
    assert (transient.state, transient.hold_code) == ("held", 13)
    held_at = transient.held_since
    assert transient.to_state(handle(), max_starts=3).release_by == (
        held_at + RELEASE_AFTER_S + PERIODIC_EXPR_INTERVAL_S
    )
    # periodic_release asks for NumJobStarts < max_attempts: no start left, no release.
    assert transient.to_state(handle(), max_starts=1).release_by is None
    memory = jobs["781.1"].to_state(handle(), max_starts=3)
    assert (memory.state, memory.native_code, memory.release_by) == (
        "held",
        "HoldReasonCode=34/102",
        None,
    )
    assert "cgroup memory limit" in memory.native_reason


# -- the schedd: real job ads, and a real Schedd whose transport is replaced -----------------


def real_ad(**changes) -> classad2.ClassAd:
    """HTCondor's recorded job ad (idle_after_spooling.ad) with attributes set as the schedd
    sets them for another state."""
    ad = classad2.parseOne((RECORDS / "idle_after_spooling.ad").read_text())
    for key, value in changes.items():
        ad[key] = value
    return ad


@pytest.mark.parametrize(
    ("changes", "state", "exit_code", "native"),
    [
        ({}, "pending", None, None),
        ({"JobStatus": 2}, "running", None, None),
        ({"JobStatus": 7}, "running", None, None),  # suspended
        ({"JobStatus": 6}, "running", None, None),  # transferring output
        ({"JobStatus": 4, "ExitCode": 0}, "done", 0, None),
        ({"JobStatus": 4, "ExitCode": 50}, "failed", 50, "exit:50"),
        ({"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9}, "failed", 137, "signal:9"),
        # The recorded ad's HoldReasonCode is `undefined` (classad2.Value.Undefined == 2):
        # it must not read as code 2.
        ({"JobStatus": 5}, "held", None, "HoldReasonCode=0/0"),
        (
            {"JobStatus": 5, "HoldReasonCode": 34, "HoldReasonSubCode": 102},
            "held",
            None,
            "HoldReasonCode=34/102",
        ),
        ({"JobStatus": 3}, "cancelled", None, None),
    ],
)
def test_real_job_ads_map_to_job_states(changes, state, exit_code, native):
    result = job_state(real_ad(**changes), handle())
    assert (result.state, result.exit_code, result.native_code) == (state, exit_code, native)


def test_a_held_ad_gets_its_release_deadline_from_entered_current_status():
    ad = real_ad(JobStatus=5, HoldReasonCode=13, NumJobStarts=1)
    entered = ad["EnteredCurrentStatus"]
    state = job_state(ad, handle(), max_starts=3)
    assert state.release_by == entered + RELEASE_AFTER_S + PERIODIC_EXPR_INTERVAL_S
    assert job_state(ad, handle(), max_starts=1).release_by is None


def test_site_comes_from_the_glidein_site_machine_attribute():
    ad = real_ad(JobStatus=2, RemoteHost="slot1@wn01", MachineAttrGLIDEIN_Site0="DESY")
    assert job_state(ad, handle()).site == "DESY"
    assert job_state(real_ad(JobStatus=2, RemoteHost="slot1@wn01"), handle()).site == "slot1@wn01"


def test_native_codes_are_readable_by_the_recovery_taxonomy():
    from smartbkg_prod.recovery import taxonomy

    code = taxonomy.parse_native_code("HoldReasonCode=34/102")
    assert (code.source, code.code, code.subcode) == ("htcondor", 34, 102)
    assert taxonomy.describe(code).category == "memory"
    assert taxonomy.parse_native_code("signal:9").source == "signal"
    assert taxonomy.parse_native_code("exit:50").source == "exit"


@pytest.fixture
def wire(monkeypatch) -> ScheddWire:
    return install_wire(monkeypatch)


def schedd_backend(monkeypatch, **options) -> HTCondorBackend:
    return use_schedd(monkeypatch, HTCondorBackend(**options))


def test_poll_answers_from_the_event_log_without_asking_the_schedd(monkeypatch, wire, tmp_path):
    backend = schedd_backend(monkeypatch, max_starts=3)
    path = tmp_path / "c.htcondor.log"
    path.write_text((RECORDS / "held_released_reconnected.log").read_text())
    backend.follow(781, path)
    states = backend.poll([handle("781.0"), handle("781.1"), handle("781.2")])
    assert [s.state for s in states] == ["done", "cancelled", "pending"]
    assert wire.calls == []


def test_a_resumed_driver_follows_its_clusters_through_the_stored_event_log(
    monkeypatch, wire, tmp_path
):
    """Issue 24: a new backend instance (a restarted driver) is given handles rebuilt from
    the store, the event log's path among them, and answers from that log alone."""
    path = tmp_path / "c.htcondor.log"
    path.write_text((RECORDS / "held_released_reconnected.log").read_text())
    handles = [
        handle(job_id).model_copy(update={"log": str(path)}) for job_id in ("781.0", "781.2")
    ]
    backend = schedd_backend(monkeypatch, max_starts=3)
    backend.adopt([(stored, None) for stored in handles])
    assert [s.state for s in backend.poll(handles)] == ["done", "pending"]
    assert wire.calls == []


def test_completions_read_finished_jobs_from_the_event_log_only(monkeypatch, wire, tmp_path):
    backend = schedd_backend(monkeypatch, max_starts=3)
    path = tmp_path / "c.htcondor.log"
    path.write_text((RECORDS / "held_released_reconnected.log").read_text())
    backend.follow(781, path)
    handles = [handle("781.0"), handle("781.1"), handle("781.2"), handle("9.0")]
    finished = backend.completions(handles)  # 781.2 is pending; cluster 9 has no log
    assert [(s.handle.backend_job_id, s.state) for s in finished] == [
        ("781.0", "done"),
        ("781.1", "cancelled"),
    ]
    assert wire.calls == []
    assert (HTCondorBackend.poll_interval_s, HTCondorBackend.completion_interval_s) == (60.0, 2.0)


def test_jobs_the_log_cannot_tell_come_from_the_queue_then_the_history(monkeypatch, wire, tmp_path):
    backend = schedd_backend(monkeypatch)
    wire.queue = list(classad2.parseAds((RECORDS / "query_running_idle.ads").read_text()))
    wire.history = [real_ad(ClusterId=7, ProcId=10, JobStatus=4, ExitCode=0)]
    states = backend.poll([handle("7.0"), handle("7.8"), handle("7.10"), handle("7.11")])
    assert [s.state for s in states] == ["running", "pending", "done", "lost"]
    assert "neither its event log" in states[3].native_reason
    assert wire.calls == [
        ("query", SCHEDD_ADDRESS, "ClusterId == 7"),
        ("history", SCHEDD_ADDRESS, "ClusterId == 7"),
    ]


def test_a_lost_event_log_hands_its_jobs_to_the_schedd(monkeypatch, wire, tmp_path):
    backend = schedd_backend(monkeypatch)
    path = tmp_path / "c.htcondor.log"
    path.write_text((RECORDS / "terminated_normally.log").read_text())
    backend.follow(2758, path)
    assert backend.poll([handle("2758.0")])[0].state == "done"
    path.unlink()
    wire.queue = [real_ad(ClusterId=2758, ProcId=0, JobStatus=2)]
    assert backend.poll([handle("2758.0")])[0].state == "running"
    assert wire.calls == [("query", SCHEDD_ADDRESS, "ClusterId == 2758")]


def test_cancel_removes_through_schedd_act_with_our_reason(monkeypatch, wire):
    backend = schedd_backend(monkeypatch)
    backend.cancel([handle("12.0"), handle("12.1")])
    assert wire.calls == [
        (
            "act",
            SCHEDD_ADDRESS,
            "12.0, 12.1",
            int(htcondor2.JobAction.Remove),
            "cancelled by smartbkg-prod",
        )
    ]


def test_an_unreachable_schedd_is_a_submit_error_through_the_real_transport(monkeypatch):
    backend = HTCondorBackend()
    location = classad2.ClassAd({"MyAddress": "<127.0.0.1:9>", "CondorVersion": "x"})
    monkeypatch.setattr(backend, "_schedd", lambda: htcondor2.Schedd(location))
    with pytest.raises(SubmitError, match="cannot remove jobs"):
        backend.cancel([handle()])
    with pytest.raises(SubmitError, match="cannot query the schedd: .*Failed to connect"):
        backend.poll([handle()])


def test_without_a_pool_submit_names_the_collector_and_schedd(condor_campaign, monkeypatch):
    monkeypatch.delenv("CONDOR_CONFIG", raising=False)
    with pytest.raises(SubmitError, match=r"cannot reach the local schedd .* through collector"):
        HTCondorBackend().submit(condor_campaign, job_inputs(condor_campaign))
    with pytest.raises(SubmitError, match="cannot reach schedd s1 through collector 127.0.0.1:9"):
        HTCondorBackend(collector="127.0.0.1:9", schedd_name="s1").poll([handle()])


def job_inputs(campaign: Campaign) -> list[JobInput]:
    return [
        JobInput(
            job=job, campaign=campaign, output_dir=campaign.outputs.directory, backend="htcondor"
        )
        for job in plan_jobs(campaign)
    ]
