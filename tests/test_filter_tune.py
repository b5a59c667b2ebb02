"""filter.tune: auto: (k, p_min) chosen for the costs a campaign measures, recorded, reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from smartbkg_prod.filter.speedup import StageCosts, reference_costs, sampling_speedup
from smartbkg_prod.filter.tune import (
    MIN_CONTROL_SKIMMED,
    TuneHistograms,
    best_choice,
    choose_tuning,
    expected_speedup,
)
from smartbkg_prod.spec import Campaign

FAST_SIMULATION = StageCosts(generation_ms=0.11, filter_ms=0.05, simulation_ms=0.1)
REFERENCE = reference_costs(0.05)


def synthetic_events(n: int = 400_000, seed: int = 1):
    """Per-event pass probabilities like the filter's (a few per cent retention, most
    events near zero), the skim decision drawn from them, a 20% control sample."""
    rng = np.random.default_rng(seed)
    q = np.where(rng.random(n) < 0.3, rng.beta(0.8, 6.0, n), rng.beta(0.3, 200.0, n))
    passed = rng.random(n) < q
    control = rng.random(n) < 0.2
    return q, passed, TuneHistograms.of_events(q, q[control & passed])


def test_histogram_speedup_matches_the_event_by_event_one():
    q, passed, histograms = synthetic_events()
    costs = reference_costs(0.05)
    p = np.clip(2.0 * np.sqrt(q), 0.01, 1.0)
    exact = sampling_speedup(p, passed, costs)
    assert expected_speedup(histograms, 2.0, 0.01, costs) == pytest.approx(exact, rel=0.05)


def test_the_choice_beats_the_model_values_and_follows_the_costs():
    _q, _passed, histograms = synthetic_events()
    reference = best_choice(histograms, reference_costs(0.05), 0.002, 1.3, 0.02)
    assert reference.speedup >= reference.model_speedup
    assert reference.p_min < 1.0 and reference.speedup > 1.5
    # Simulation as cheap as generation: dropping events saves little and weights cost
    # statistical power, so the choice keeps far more (a larger k): still below 1.
    fast = best_choice(histograms, FAST_SIMULATION, 0.002, 1.3, 0.02)
    assert fast.speedup > fast.model_speedup
    assert expected_speedup(histograms, fast.scale, fast.p_min, FAST_SIMULATION) == pytest.approx(
        fast.speedup
    )
    assert fast.scale > 3 * reference.scale and fast.speedup < 1.0
    # The p_min floor is the bias limit: never below it.
    assert best_choice(histograms, reference_costs(0.05), 0.05, 1.3, 0.05).p_min >= 0.05


def _choose(histograms, costs=REFERENCE, biased=False):
    return choose_tuning(
        histograms,
        costs,
        {},
        p_min_floor=0.01,
        model_scale=1.3,
        model_p_min=0.01,
        costs_name="reference",
        first_tuned_job=2,
        pilot_jobs_succeeded=2,
        biased=biased,
    )


def test_tuning_is_refused_without_enough_control_events_costs_or_with_bias():
    _q, _passed, histograms = synthetic_events()
    assert _choose(histograms).tuned
    few = TuneHistograms(
        n_all=histograms.n_all,
        n_control_skimmed=[min(c, 1) for c in histograms.n_control_skimmed],
    )
    assert sum(few.n_control_skimmed) < MIN_CONTROL_SKIMMED
    for refused, reason in (
        (_choose(few), "skimmed control events"),
        (_choose(histograms, costs=None), "stage costs"),
        (_choose(histograms, biased=True), "bias alarm"),
    ):
        assert not refused.tuned and reason in refused.note
        assert (refused.scale, refused.p_min) == (1.3, 0.01)


def test_histograms_of_jobs_add_up():
    q, passed, whole = synthetic_events(20_000)
    half = np.arange(len(q)) < 10_000
    parts = [TuneHistograms.of_events(q[m], q[m & passed]) for m in (half, ~half)]
    total = TuneHistograms.total([parts[0], parts[1].model_dump()])
    assert total.n_all == whole.n_all
    assert sum(total.n_all) == len(q)


def test_tune_auto_needs_sample_mode_and_a_control_sample():
    from pathlib import Path

    from smartbkg_prod.spec import FilterConfig, load_campaign

    for options in ({"mode": "sample"}, {"mode": "cut", "control_fraction": 0.1}):
        with pytest.raises(ValueError, match="tune: auto"):
            FilterConfig(model="default", tune="auto", **options)
    FilterConfig(mode="sample", model="default", tune="auto", control_fraction=0.1)
    # Untuned specs keep the identity they had before tuning existed.
    spec = Path(__file__).parent.parent / "job_specs" / "train_800k.yaml"
    assert load_campaign(spec).campaign_id == "filter-train-800k-217c4d36b4ec"


@pytest.mark.slow
def test_tuned_campaign_records_its_choice_reuses_it_on_retry_and_shows_it(tmp_path, store):
    from starlette.testclient import TestClient

    from smartbkg_prod.cli import main
    from smartbkg_prod.monitor.metrics import registry_for
    from smartbkg_prod.monitor.web import create_app
    from smartbkg_prod.physics.rootio import read_output
    from smartbkg_prod.plan import campaign_output_dir
    from smartbkg_prod.submit import submit_campaign
    from smartbkg_prod.tuning import recorded_tuning

    campaign = Campaign(
        name="tuned",
        process="bbbar_generic",
        events=16_000,
        events_per_job=4000,
        seed=616,
        filter={
            "mode": "sample",
            "model": "default",
            "p_min": 0.005,
            "control_fraction": 0.5,
            "tune": "auto",
            "tune_pilot_jobs": 2,
            "tune_costs": "reference",
        },
        outputs={"directory": str(tmp_path / "out")},
        backend={"max_parallel": 2},
    )
    status = submit_campaign(campaign, store=store, poll_interval=0.05)
    assert status.complete
    tuning = recorded_tuning(store, campaign.campaign_id)
    assert tuning.tuned, tuning.note
    assert tuning.pilot_jobs_succeeded == 2 and tuning.p_min >= 0.005
    assert tuning.expected_speedup >= tuning.model_expected_speedup
    reports = {
        r.job_index: r
        for r in store.reports.of_campaign(campaign.campaign_id, successful_only=True)
    }
    assert reports[0].filter_tuning is None and reports[1].filter_tuning is None
    assert reports[2].filter_tuning == {"scale": tuning.scale, "p_min": tuning.p_min}

    # A retry of a tuned job makes the same events with the same weights.
    output = campaign_output_dir(campaign) / f"{campaign.campaign_id}.job000003.root"
    before = read_output(output)
    store.reports.invalidate_outputs(campaign.campaign_id, 3)
    output.unlink()
    submit_campaign(campaign, store=store, poll_interval=0.05)
    after = read_output(output)
    np.testing.assert_array_equal(before.event_number, after.event_number)
    np.testing.assert_array_equal(before.weight, after.weight)
    assert recorded_tuning(store, campaign.campaign_id) == tuning

    page = TestClient(create_app(store)).get(f"/campaign/{campaign.campaign_id}").text
    assert "Filter tuning" in page and "tuned-in-situ" in page
    metrics = registry_for(store)
    labels = {"campaign": campaign.campaign_id}
    assert metrics.get_sample_value("smartbkg_campaign_filter_tuned_p_min", labels) == tuning.p_min
    in_situ = metrics.get_sample_value(
        "smartbkg_campaign_filter_tuned_speedup", {**labels, "estimate": "in_situ"}
    )
    assert in_situ > 1.0
    result = CliRunner().invoke(main, ["status", campaign.campaign_id, "--db", store.url, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)[0]["filter_tuning"]
    assert shown["scale"] == tuning.scale and shown["in_situ_speedup"] == pytest.approx(in_situ)
