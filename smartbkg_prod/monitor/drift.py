"""Filter drift alarm: live filter pass rate and skim retention vs the model's expectation.

A filter trained on one generator tune, beam setting or detector condition keeps a
different fraction of events (or the kept events pass the skim at a different rate) when
those change. Both are binomial counts, so each is tested against its expected rate with
an exact two-sided binomial test (Poisson when the expected count is small compared to
the number of trials, normal approximation for very large counts); a p-value below
``alpha`` raises the alarm.

Expected values come, in order, from the campaign's provenance key
``filter_expectation`` (written by :func:`set_filter_expectation` or by the submitter),
from model metadata stored in the provenance (``filter_model``, ``model``,
``model_metadata``), or from the model's ``.json`` sidecar named by the spec's
``filter.model``. Every source is read defensively: missing or non-numeric values leave
the check out, they never break the page.

>>> round(binomial_p_value(50, 100, 0.5), 3)
1.0
>>> binomial_p_value(90, 100, 0.5) < 1e-10
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from smartbkg_prod.store import Store

DEFAULT_ALPHA = 1e-3  # ~3.3 sigma two-sided: an alarm should wake someone only for a reason
DEFAULT_MIN_TRIALS = 100
_EXACT_MAX_TRIALS = 20_000

# Names a model's metadata may use for each expected value (first match wins).
PASS_RATE_KEYS = (
    "expected_pass_rate",
    "expected_keep_rate",
    "expected_keep_fraction",
    "filter_pass_rate",
    "pass_rate",
    "keep_rate",
    "keep_fraction",
)
RETENTION_KEPT_KEYS = (
    "expected_retention_kept",
    "expected_retention_among_kept",
    "expected_skim_retention_kept",
    "retention_kept",
    "retention_among_kept",
    "skim_retention_kept",
)
RETENTION_UNFILTERED_KEYS = (
    "expected_retention_unfiltered",
    "retention_unfiltered",
    "base_retention",
    "skim_retention",
    "retention",
)
METADATA_PROVENANCE_KEYS = ("filter_model", "model", "model_metadata")


class FilterExpectation(BaseModel):
    """What the model promises: keep rate, skim retention among kept and without filter."""

    pass_rate: float | None = Field(default=None, ge=0, le=1)
    retention_kept: float | None = Field(default=None, ge=0, le=1)
    retention_unfiltered: float | None = Field(default=None, ge=0, le=1)
    source: str = ""

    @property
    def empty(self) -> bool:
        return (
            self.pass_rate is None
            and self.retention_kept is None
            and self.retention_unfiltered is None
        )


class DriftCheck(BaseModel):
    quantity: str  # "filter_pass_rate" | "skim_retention_kept"
    observed: float | None
    expected: float
    successes: int
    trials: int
    z: float | None
    p_value: float | None
    alarm: bool


class DriftReport(BaseModel):
    expectation: FilterExpectation | None
    checks: list[DriftCheck] = Field(default_factory=list)
    alpha: float = DEFAULT_ALPHA
    min_trials: int = DEFAULT_MIN_TRIALS
    note: str = ""

    @property
    def alarm(self) -> bool:
        return any(check.alarm for check in self.checks)


# -- the test --------------------------------------------------------------------------
def _log_binomial_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def _log_poisson_pmf(k: int, mu: float) -> float:
    return k * math.log(mu) - mu - math.lgamma(k + 1)


def binomial_p_value(k: int, n: int, p: float) -> float:
    """Two-sided p-value of ``k`` successes in ``n`` trials with success probability ``p``.

    Exact (sum of the probabilities no larger than the observed one) up to 20k trials;
    above, Poisson when ``n p`` is small, else the normal approximation with continuity
    correction.
    """
    if n <= 0:
        return 1.0
    if p <= 0.0 or p >= 1.0:
        return 1.0 if k == (0 if p <= 0.0 else n) else 0.0
    mean = n * p
    if n <= _EXACT_MAX_TRIALS:
        log_pmf = [_log_binomial_pmf(i, n, p) for i in range(n + 1)]
        return _two_sided(log_pmf, k)
    if mean < 50:
        upper = int(mean + 40 * math.sqrt(mean) + 50)
        log_pmf = [_log_poisson_pmf(i, mean) for i in range(max(upper, k) + 1)]
        return _two_sided(log_pmf, k)
    sigma = math.sqrt(mean * (1 - p))
    z = max(0.0, abs(k - mean) - 0.5) / sigma
    return min(1.0, math.erfc(z / math.sqrt(2)))


def _two_sided(log_pmf: list[float], k: int) -> float:
    threshold = log_pmf[k] + 1e-7  # relative tolerance for ties
    total = sum(math.exp(value) for value in log_pmf if value <= threshold)
    return min(1.0, total)


def check_rate(
    quantity: str,
    successes: int,
    trials: int,
    expected: float,
    alpha: float = DEFAULT_ALPHA,
    min_trials: int = DEFAULT_MIN_TRIALS,
) -> DriftCheck:
    """One binomial check; no alarm below ``min_trials`` (too little data to judge)."""
    if trials <= 0:
        return DriftCheck(
            quantity=quantity,
            observed=None,
            expected=expected,
            successes=successes,
            trials=trials,
            z=None,
            p_value=None,
            alarm=False,
        )
    observed = successes / trials
    sigma = math.sqrt(trials * expected * (1 - expected))
    z = (successes - trials * expected) / sigma if sigma > 0 else None
    p_value = binomial_p_value(successes, trials, expected)
    return DriftCheck(
        quantity=quantity,
        observed=observed,
        expected=expected,
        successes=successes,
        trials=trials,
        z=z,
        p_value=p_value,
        alarm=trials >= min_trials and p_value < alpha,
    )


def check_drift(
    expectation: FilterExpectation | None,
    events_generated: int,
    events_kept: int,
    events_skimmed: int,
    alpha: float = DEFAULT_ALPHA,
    min_trials: int = DEFAULT_MIN_TRIALS,
) -> DriftReport:
    """Compare a campaign's counts (from its successful attempts) with ``expectation``."""
    report = DriftReport(expectation=expectation, alpha=alpha, min_trials=min_trials)
    if expectation is None or expectation.empty:
        report.note = "no expected pass rate or retention for this campaign's model"
        return report
    if expectation.pass_rate is not None:
        report.checks.append(
            check_rate(
                "filter_pass_rate",
                events_kept,
                events_generated,
                expectation.pass_rate,
                alpha,
                min_trials,
            )
        )
    if expectation.retention_kept is not None:
        report.checks.append(
            check_rate(
                "skim_retention_kept",
                events_skimmed,
                events_kept,
                expectation.retention_kept,
                alpha,
                min_trials,
            )
        )
    if not report.checks:
        report.note = "the model gives no expected pass rate or retention among kept events"
    return report


# -- where expectations come from ------------------------------------------------------
def expectation_from_metadata(metadata: Any, source: str = "metadata") -> FilterExpectation | None:
    """Find expected values in model metadata of unknown shape (nested up to 3 levels)."""
    if not isinstance(metadata, Mapping):
        return None
    values = {
        "pass_rate": _find_fraction(metadata, PASS_RATE_KEYS),
        "retention_kept": _find_fraction(metadata, RETENTION_KEPT_KEYS),
        "retention_unfiltered": _find_fraction(metadata, RETENTION_UNFILTERED_KEYS),
    }
    expectation = FilterExpectation(**values, source=source)
    return None if expectation.empty else expectation


def _find_fraction(metadata: Mapping, keys: tuple[str, ...], depth: int = 3) -> float | None:
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
            return float(value)
    if depth > 1:
        for value in metadata.values():
            if isinstance(value, Mapping):
                found = _find_fraction(value, keys, depth - 1)
                if found is not None:
                    return found
    return None


def campaign_expectation(provenance: Any, spec: Any) -> FilterExpectation | None:
    """The expectation for a campaign from its provenance, else its model's sidecar."""
    provenance = provenance if isinstance(provenance, Mapping) else {}
    stored = provenance.get("filter_expectation")
    source = stored.get("source") if isinstance(stored, Mapping) else None
    explicit = expectation_from_metadata(stored, str(source or "campaign provenance"))
    if explicit is not None:
        return explicit
    for key in METADATA_PROVENANCE_KEYS:
        found = expectation_from_metadata(provenance.get(key), f"provenance.{key}")
        if found is not None:
            return found
    return _expectation_from_sidecar(spec)


def _expectation_from_sidecar(spec: Any) -> FilterExpectation | None:
    if not isinstance(spec, Mapping):
        return None
    filter_config = spec.get("filter")
    if not isinstance(filter_config, Mapping) or filter_config.get("mode", "off") == "off":
        return None
    model = filter_config.get("model")
    if not isinstance(model, str) or not model:
        return None
    sidecar = Path(model).expanduser().with_suffix(".json")
    try:
        metadata = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return expectation_from_metadata(metadata, str(sidecar))


def set_filter_expectation(
    store: Store,
    campaign_id: str,
    pass_rate: float | None = None,
    retention_kept: float | None = None,
    retention_unfiltered: float | None = None,
    source: str = "operator",
) -> FilterExpectation:
    """Record the expected values for a campaign (they override model metadata)."""
    expectation = FilterExpectation(
        pass_rate=pass_rate,
        retention_kept=retention_kept,
        retention_unfiltered=retention_unfiltered,
        source=source,
    )
    store.campaigns.update_provenance(
        campaign_id,
        {"filter_expectation": {**expectation.model_dump(exclude={"source"}), "source": source}},
    )
    return expectation
