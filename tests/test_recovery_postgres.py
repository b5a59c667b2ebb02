"""The review loop on a real PostgreSQL server: recovery's tables are not SQLite-only."""

from __future__ import annotations

import pytest
from test_recovery_review import by_job, fail

from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.recovery.apply import apply_decisions
from smartbkg_prod.recovery.records import latest_model_blob
from smartbkg_prod.recovery.review import (
    accept,
    current_policy,
    override,
    refresh_recommendations,
    train,
)
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import CANCELLED, Store

pytest_plugins = ["postgres_fixture"]
pytestmark = pytest.mark.postgres


def test_review_loop_and_model_storage_on_postgres(postgres_url, tmp_path):
    store = Store(postgres_url)
    assert store.sql_engine.dialect.name == "postgresql"
    campaign = Campaign(name="pg", process="bbbar_mixed", events=1000, events_per_job=250)
    store.campaigns.register(campaign, plan_jobs(campaign), output_dir=tmp_path)
    fail(store, campaign, 0, 60)
    fail(store, campaign, 1, 50, peak_rss_mb=2050, progress=0.8)
    recs = by_job(refresh_recommendations(store))
    accept(store, recs[0].id, operator="alice")
    override(store, recs[1].id, "split_job", operator="bob")
    assert all(result.applied for result in apply_decisions(store))
    assert sorted(store.campaigns.split_jobs(campaign.campaign_id)) == [4, 5]
    assert store.campaigns.job_states(campaign.campaign_id)[1] == CANCELLED
    assert store.campaigns.job_overrides(campaign.campaign_id) == {}
    result = train(store, min_labels=2)
    policy = current_policy(store)
    assert policy.name == result.model and policy.model.n_labels == 2
    assert latest_model_blob(store)[1] == result.model
