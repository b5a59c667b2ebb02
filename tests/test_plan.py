"""Planning is deterministic and covers every event exactly once."""

from __future__ import annotations

import json

from click.testing import CliRunner

from smartbkg_prod.backends.base import split_job
from smartbkg_prod.cli import main
from smartbkg_prod.physics.config import PYTHIA_MAX_SEED
from smartbkg_prod.plan import job_seed, plan_jobs
from smartbkg_prod.spec import Campaign


def campaign(**changes) -> Campaign:
    return Campaign(
        **{
            "name": "p",
            "process": "bbbar_mixed",
            "events": 10_007,
            "events_per_job": 1000,
            **changes,
        }
    )


def test_jobs_cover_every_event_once():
    jobs = plan_jobs(campaign())
    assert len(jobs) == 11
    covered = [e for job in jobs for e in range(job.first_event, job.last_event)]
    assert covered == list(range(10_007))
    assert jobs[-1].n_events == 7


def test_plan_is_deterministic_and_seeds_are_distinct():
    first, second = plan_jobs(campaign()), plan_jobs(campaign())
    assert first == second
    seeds = [job.seed for job in first]
    assert len(set(seeds)) == len(seeds)
    assert all(1 <= s <= PYTHIA_MAX_SEED for s in seeds)


def test_seed_depends_on_campaign_seed_and_index():
    assert job_seed(1, 0) != job_seed(2, 0)
    assert job_seed(1, 0) != job_seed(1, 1)
    assert job_seed(1, 5) == job_seed(1, 5)


def test_split_parts_cover_the_parent_range_and_share_its_stream():
    job = plan_jobs(campaign())[3]
    parts = split_job(job, 3)
    assert [p.first_event for p in parts] == [3000, 3334, 3667]
    assert sum(p.n_events for p in parts) == job.n_events
    assert {p.seed for p in parts} == {job.seed}
    assert [p.events_to_skip for p in parts] == [0, 334, 667]


def test_plan_command_json_lists_every_job(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text("name: c\nprocess: continuum_uds\nevents: 2500\nevents_per_job: 1000\n")
    result = CliRunner().invoke(main, ["plan", str(spec), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [j["n_events"] for j in document["jobs"]] == [1000, 1000, 500]
    assert document["campaign_id"].startswith("c-")
