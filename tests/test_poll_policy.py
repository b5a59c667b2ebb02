"""How often the driver asks each engine (issue 19): defaults a site admin accepts, the
spec's and the command line's overrides, jitter and backoff; and watching a campaign
(``status --watch``, the monitor) reads the store only, never the engine."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from engine_calls import ENGINE_COMMANDS, counting_wrappers, read_calls
from unavailable import require_module

from smartbkg_prod.backends.local import LocalBackend
from smartbkg_prod.backends.panda import PandaBackend
from smartbkg_prod.backends.polling import MAX_BACKOFF_S, PollPolicy, PollSchedule
from smartbkg_prod.backends.slurm import SlurmBackend
from smartbkg_prod.cli import main
from smartbkg_prod.errors import SpecError
from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.spec import dump_campaign, load_campaign
from smartbkg_prod.submit import CampaignRunner, max_parallel_jobs


def test_each_engine_has_the_cadence_a_site_admin_accepts():
    assert (LocalBackend.poll_interval_s, LocalBackend.completion_interval_s) == (0.2, None)
    # Slurm: one squeue per 30 s; its jobcomp file (a file read) every 2 s.
    assert (SlurmBackend.poll_interval_s, SlurmBackend.completion_interval_s) == (30.0, 2.0)
    assert PandaBackend.poll_interval_s == 60.0
    htcondor = require_module("smartbkg_prod.backends.htcondor")
    assert htcondor.HTCondorBackend.poll_interval_s == 60.0
    policy = SlurmBackend().poll_policy()
    assert (policy.interval_s, policy.completion_interval_s, policy.jitter) == (30.0, 2.0, 0.1)


def test_remote_engines_get_the_whole_campaign_at_once(small_campaign):
    assert max_parallel_jobs(small_campaign, SlurmBackend()) is None  # its array throttle
    assert max_parallel_jobs(small_campaign, PandaBackend()) == 2  # the spec's max_parallel
    assert max_parallel_jobs(small_campaign, LocalBackend()) == 2
    unlimited = small_campaign.model_copy(
        update={"backend": small_campaign.backend.model_copy(update={"max_parallel": None})}
    )
    assert max_parallel_jobs(unlimited, PandaBackend()) is None  # JEDI brokers one task
    assert max_parallel_jobs(unlimited, LocalBackend()) == os.cpu_count()


def test_spec_and_command_line_set_the_interval_and_the_campaign_id_stays(small_campaign, store):
    spec = small_campaign.model_copy(
        update={"backend": small_campaign.backend.model_copy(update={"poll_interval_s": 5.0})}
    )
    assert spec.campaign_id == small_campaign.campaign_id
    store.campaigns.register(spec, plan_jobs(spec), spec.outputs.directory)
    runner = CampaignRunner(spec, store, SlurmBackend(), spec.outputs.directory)
    assert runner.schedule.policy.interval_s == 5.0
    runner = CampaignRunner(spec, store, SlurmBackend(), spec.outputs.directory, poll_interval=7)
    assert runner.schedule.policy.interval_s == 7.0
    default = CampaignRunner(small_campaign, store, SlurmBackend(), spec.outputs.directory)
    assert default.schedule.policy.interval_s == 30.0


def test_command_line_poll_interval_reaches_the_driver(small_campaign, tmp_path, monkeypatch):
    seen = []
    run = CampaignRunner.run

    def record_policy(runner):
        seen.append(runner.schedule.policy)
        return run(runner)

    monkeypatch.setattr(CampaignRunner, "run", record_policy)
    spec = tmp_path / "small.yaml"
    spec.write_text(dump_campaign(small_campaign))
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    result = CliRunner().invoke(main, ["submit", str(spec), "--db", db, "--poll-interval", "0.05"])
    assert result.exit_code == 0, result.output
    assert [policy.interval_s for policy in seen] == [0.05]
    refused = CliRunner().invoke(main, ["submit", str(spec), "--poll-interval", "0"])
    assert refused.exit_code == 2 and "--poll-interval" in refused.output


def test_spec_refuses_a_poll_interval_that_is_not_positive(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: x\nprocess: bbbar_generic\nevents: 10\nevents_per_job: 5\n"
        "backend:\n  poll_interval_s: 0\n"
    )
    with pytest.raises(SpecError, match="backend.poll_interval_s"):
        load_campaign(spec)


def test_jitter_spreads_each_interval_within_ten_percent():
    schedule = PollSchedule(PollPolicy(interval_s=30.0), rng=random.Random(19))
    delays = [schedule.answered(now=0.0, answer_s=0.01) for _ in range(2000)]
    assert 27.0 <= min(delays) < 27.5 and 32.5 < max(delays) <= 33.0


def test_slow_answers_and_errors_stretch_the_interval_and_a_prompt_answer_restores_it():
    schedule = PollSchedule(PollPolicy(interval_s=30.0, jitter=0.0))
    assert schedule.policy.slow_answer_s == 3.0
    assert [schedule.answered(0.0, answer_s=10.0) for _ in range(3)] == [60.0, 120.0, 240.0]
    assert schedule.answered(0.0, answer_s=0.2) == 30.0
    assert [schedule.failed(0.0) for _ in range(6)][-1] == MAX_BACKOFF_S
    assert schedule.failures == 6
    assert schedule.answered(0.0, answer_s=0.2) == 30.0 and schedule.failures == 0
    local = PollSchedule(PollPolicy(interval_s=0.2, jitter=0.0))
    assert local.answered(0.0, answer_s=0.5) == 0.2  # under a second is never slow


def test_completion_record_is_read_between_queries():
    schedule = PollSchedule(PollPolicy(interval_s=30.0, completion_interval_s=2.0, jitter=0.0))
    assert schedule.arm(now=100.0) == 102.0
    assert schedule.due(101.0) is None
    assert schedule.due(102.0) == "completions"
    assert schedule.arm(now=102.0) == 104.0
    assert schedule.due(130.0) == "query"
    schedule.answered(now=130.0, answer_s=0.1)
    assert schedule.next_query == 160.0
    no_record = PollSchedule(PollPolicy(interval_s=0.2, jitter=0.0))
    assert no_record.arm(now=0.0) == 0.2 and no_record.due(0.1) is None


# What a monitor process does while a Slurm campaign runs: the watch view twice, then
# every page and the metrics; it prints which engine modules it imported.
WATCHER = textwrap.dedent(
    """
    import json, sys, urllib.request
    from smartbkg_prod.cli.monitor import watch
    from smartbkg_prod.monitor.web import start_server
    from smartbkg_prod.store import Store

    url, campaign_id = sys.argv[1], sys.argv[2]
    watch(url, campaign_id, interval=0.5, iterations=2, echo=lambda text: None, clear=False)
    server, thread = start_server(Store(url))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for page in ("/", f"/campaign/{campaign_id}", f"/api/campaigns/{campaign_id}", "/metrics"):
        with urllib.request.urlopen(base + page) as response:
            assert response.status == 200, page
    server.shutdown()
    engines = {"local", "slurm", "htcondor", "panda", "docker_runtime"}
    print(json.dumps(sorted(m for m in sys.modules if m.rsplit(".", 1)[-1] in engines)))
    """
)


def test_watching_a_campaign_reads_the_store_and_never_the_engine(small_campaign, store, tmp_path):
    campaign = small_campaign.model_copy(
        update={"backend": small_campaign.backend.model_copy(update={"name": "slurm"})}
    )
    jobs = plan_jobs(campaign)
    store.campaigns.register(campaign, jobs, tmp_path / "out")
    attempt = store.attempts.start(jobs[0], "slurm")
    store.attempts.set_backend_job_id(campaign.campaign_id, 0, attempt, "4242_0")  # in flight
    log = tmp_path / "calls.log"
    env = {
        **os.environ,
        "PATH": f"{counting_wrappers(tmp_path / 'bin', log, ENGINE_COMMANDS)}:{os.environ['PATH']}",
    }
    watcher = subprocess.run(
        [sys.executable, "-c", WATCHER, store.url, campaign.campaign_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert watcher.returncode == 0, watcher.stderr
    assert json.loads(watcher.stdout.splitlines()[-1]) == []
    status_watch = subprocess.Popen(
        [sys.executable, "-m", "smartbkg_prod.cli", "status", "--watch", "0.5", "--db"]
        + [store.url, campaign.campaign_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first_line = status_watch.stdout.readline()  # the first redraw is on screen
    time.sleep(1.5)  # and a few more
    status_watch.send_signal(signal.SIGINT)
    out, err = status_watch.communicate(timeout=60)
    assert status_watch.returncode == 0, err
    assert campaign.name in first_line + out
    assert read_calls(log) == []
