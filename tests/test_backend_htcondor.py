"""HTCondor backend, checked with the htcondor2 bindings' own objects (no pool here).

HTCondor ships no daemons in the wheel and Debian has no package, so submission is
checked by parsing the rendered files back with ``htcondor2.Submit`` and expanding each
itemdata row the way condor_submit does for each proc.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

htcondor2 = pytest.importorskip("htcondor2")

from smartbkg_prod.backends.base import JobHandle  # noqa: E402
from smartbkg_prod.backends.htcondor import ITEM_COLUMNS, HTCondorBackend, job_state  # noqa: E402
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


@pytest.mark.parametrize(
    ("ad", "state", "exit_code", "native"),
    [
        ({"JobStatus": 1}, "pending", None, None),
        ({"JobStatus": 2, "RemoteHost": "slot1@wn01"}, "running", None, None),
        ({"JobStatus": 4, "ExitBySignal": False, "ExitCode": 0}, "done", 0, None),
        ({"JobStatus": 4, "ExitBySignal": False, "ExitCode": 50}, "failed", 50, "exit:50"),
        ({"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9}, "failed", 137, "signal:9"),
        (
            {"JobStatus": 5, "HoldReasonCode": 34, "HoldReasonSubCode": 102, "HoldReason": "mem"},
            "held",
            None,
            "HoldReasonCode=34/102",
        ),
        ({"JobStatus": 5, "HoldReasonCode": 12}, "held", None, "HoldReasonCode=12/0"),
        ({"JobStatus": 3}, "cancelled", None, None),
    ],
)
def test_schedd_ads_map_to_job_states(ad, state, exit_code, native):
    result = job_state(ad, handle())
    assert (result.state, result.exit_code, result.native_code) == (state, exit_code, native)


def test_site_comes_from_the_glidein_site_machine_attribute():
    ad = {"JobStatus": 2, "RemoteHost": "slot1@wn01", "MachineAttrGLIDEIN_Site0": "DESY"}
    assert job_state(ad, handle()).site == "DESY"
    assert job_state({"JobStatus": 2, "RemoteHost": "slot1@wn01"}, handle()).site == "slot1@wn01"


def test_native_codes_are_readable_by_the_recovery_taxonomy():
    taxonomy = pytest.importorskip("smartbkg_prod.recovery.taxonomy")
    code = taxonomy.parse_native_code("HoldReasonCode=34/102")
    assert (code.source, code.code, code.subcode) == ("htcondor", 34, 102)
    assert taxonomy.describe(code).category == "memory"
    assert taxonomy.parse_native_code("signal:9").source == "signal"
    assert taxonomy.parse_native_code("exit:50").source == "exit"


class FakeSchedd:
    """Stands in for htcondor2.Schedd: proc 0 still queued, proc 1 already in the history."""

    def __init__(self):
        self.constraints = []

    def query(self, constraint, projection):
        self.constraints.append(constraint)
        return [{"ClusterId": 12, "ProcId": 0, "JobStatus": 2}]

    def history(self, constraint, projection):
        return [{"ClusterId": 12, "ProcId": 1, "JobStatus": 4, "ExitCode": 0}]


def test_poll_reads_the_queue_then_the_history(monkeypatch):
    schedd = FakeSchedd()
    backend = HTCondorBackend()
    monkeypatch.setattr(backend, "_schedd", lambda: schedd)
    states = backend.poll([handle("12.0"), handle("12.1"), handle("12.2")])
    assert [s.state for s in states] == ["running", "done", "failed"]
    assert schedd.constraints == ["ClusterId == 12"]


def test_without_a_pool_submit_names_the_collector_and_schedd(condor_campaign, monkeypatch):
    monkeypatch.delenv("CONDOR_CONFIG", raising=False)
    with pytest.raises(SubmitError, match=r"no pool reachable \(collector .*, schedd .*\)"):
        HTCondorBackend().submit(condor_campaign, job_inputs(condor_campaign))
    with pytest.raises(SubmitError, match="collector 127.0.0.1:9"):
        HTCondorBackend(collector="127.0.0.1:9", schedd_name="s1").poll([handle()])


def job_inputs(campaign: Campaign) -> list[JobInput]:
    return [
        JobInput(
            job=job, campaign=campaign, output_dir=campaign.outputs.directory, backend="htcondor"
        )
        for job in plan_jobs(campaign)
    ]
