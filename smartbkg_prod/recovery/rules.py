"""Cold-start rules: what an experienced operator does, written down.

Used until the classifier has enough recorded decisions, and as the baseline it must beat.
Modelled on the CMS recovery panel's static actions (main error = a code behind > 30% of
the failures; stage-out -> retry unless the site is broken; site-drain codes -> avoid the
site) and PanDA's retry module (increase_memory, increase_cputime, reduce_input_per_job).
Each rule reads the same feature row the classifier sees.

>>> decide({"category=memory": 1.0, "projected_memory_ratio": 1.3}).action
<Action.RESUBMIT_MORE_MEMORY: 'resubmit_more_memory'>
"""

from __future__ import annotations

from dataclasses import dataclass

from smartbkg_prod.recovery.actions import MAX_MEMORY_FACTOR, Action

# A code behind this fraction of a campaign's jobs, at several sites, is the campaign's
# problem, not a site's (CMS StaticActions: "main error" above 30%).
MAIN_ERROR_FRACTION = 0.3
# Memory need beyond what a raise can give (x3 cap, with a margin for projection error).
SPLIT_MEMORY_RATIO = MAX_MEMORY_FACTOR / 1.5
SPLIT_WALLTIME_RATIO = 3.0
# A site is excluded when it holds most of a code's failures and fails often.
SITE_MIN_FAILURES = 3
SITE_CODE_SHARE = 0.6
SITE_FAILURE_RATE = 0.25
PERMANENT_CATEGORIES = ("software", "physics_config", "input", "unknown")


@dataclass(frozen=True)
class RuleDecision:
    action: Action
    confidence: float
    why: str


def _category(row: dict[str, float]) -> str:
    for key in row:
        if key.startswith("category="):
            return key.removeprefix("category=")
    return "unknown"


def decide(row: dict[str, float]) -> RuleDecision:
    """The rules' action for one feature row (see :mod:`features`)."""
    category = _category(row)
    transient = bool(row.get("transient", 0.0))
    if (
        not transient
        and category in PERMANENT_CATEGORIES
        and row.get("code_job_fraction", 0.0) >= MAIN_ERROR_FRACTION
        and row.get("code_sites", 0.0) >= 2
    ):
        return RuleDecision(
            Action.KILL,
            0.8,
            f"a non-transient {category} failure hits {row['code_job_fraction']:.0%} of the jobs "
            f"at {row['code_sites']:.0f} sites: retries will not fix it",
        )
    if category == "memory":
        need = row.get("projected_memory_ratio", row.get("memory_ratio", 1.0))
        # Splitting only helps when memory grows with events: that needs a job that got
        # somewhere before dying; one that died at its first event needs a raise.
        if need > SPLIT_MEMORY_RATIO and row.get("progress", 0.0) > 0.0:
            return RuleDecision(
                Action.SPLIT_JOB, 0.7, f"projected memory need is {need:.1f}x the request"
            )
        return RuleDecision(
            Action.RESUBMIT_MORE_MEMORY, 0.85, f"out of memory (projected need {need:.1f}x)"
        )
    if category == "walltime":
        need = row.get("projected_walltime_ratio", row.get("walltime_ratio", 1.0))
        if need > SPLIT_WALLTIME_RATIO:
            return RuleDecision(
                Action.SPLIT_JOB, 0.7, f"projected run time is {need:.1f}x the walltime"
            )
        return RuleDecision(
            Action.RESUBMIT_MORE_WALLTIME, 0.85, f"walltime reached (projected {need:.1f}x)"
        )
    if (
        row.get("site_code_failures", 0.0) >= SITE_MIN_FAILURES
        and row.get("site_code_share", 0.0) >= SITE_CODE_SHARE
        and row.get("site_failure_rate", 0.0) >= SITE_FAILURE_RATE
    ):
        return RuleDecision(
            Action.EXCLUDE_SITE,
            0.75,
            f"the site holds {row['site_code_share']:.0%} of this code's failures and fails "
            f"{row['site_failure_rate']:.0%} of its attempts",
        )
    if transient:
        return RuleDecision(Action.RESUBMIT, 0.75, f"{category} failure, usually transient")
    return RuleDecision(
        Action.RESUBMIT, 0.4, f"isolated {category} failure: one more try before escalating"
    )
