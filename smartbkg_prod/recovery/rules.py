"""Cold-start rules: what an experienced operator does, written down.

Used until the classifier has enough recorded decisions, as the baseline it must beat, and
as the policy's guard rails (see :mod:`recommend`). Modelled on the CMS recovery panel's
static actions (main error = a code behind > 30% of the failures; stage-out -> retry
unless the site is broken; site-drain codes -> avoid the site) and PanDA's retry module
(no_retry, increase_memory, increase_cputime, reduce_input_per_job). Each rule reads the
same feature row the classifier sees. In order:

1. preemption (vacated by priority, preempted, evicted) -> retry: the resource took its
   slot back; the site is not at fault and is never excluded for it;
2. a deterministic failure (invalid spec, corrupt model, missing image) -> kill, proposed
   on first sight: a retry fails the same way. Kill is never applied without review. But
   "deterministic" depends on where: one confined to a single site while the campaign
   runs elsewhere (an image that site cannot pull, an architecture it lacks) -> exclude
   that site;
3. output or input over a size limit -> split (fewer events per job);
4. memory / walltime -> more of it, or a split when the need is far beyond a raise or
   the job failed that way again after a raise; a walltime kill with nothing done while
   the campaign's successful jobs take a fraction of the limit is a hang -> resubmit;
5. one job whose failure follows it over several sites while no other job has it -> the
   job's own input or events: kill proposed for that job;
6. a site that holds most of a code's failures and fails often, or where this job failed
   twice the same way -> exclude it; crashes too, when all of them are at that site;
   never the campaign's only site;
7. a non-transient crash or input error on many jobs (at several sites, or on the
   campaign's only site), or one the job reproduced on retry -> kill proposed;
8. otherwise one more try. An unknown code is never taken for permanent: without log
   text or resource use to read, it gets one more try and escalates on its second time.

>>> decide({"category=memory": 1.0, "projected_memory_ratio": 1.3}).action
<Action.RESUBMIT_MORE_MEMORY: 'resubmit_more_memory'>
>>> decide({"category=physics_config": 1.0, "deterministic": 1.0, "campaign_sites": 1}).action
<Action.KILL: 'kill'>
"""

from __future__ import annotations

from dataclasses import dataclass

from smartbkg_prod.recovery.actions import MAX_MEMORY_FACTOR, Action

# A code behind this fraction of a campaign's jobs, at several sites, is the campaign's
# problem, not a site's (CMS StaticActions: "main error" above 30%).
MAIN_ERROR_FRACTION = 0.3
# ... and in an export without successes (rates unknown), this many jobs at several sites.
MAIN_ERROR_JOBS = 5
# Memory need beyond what a raise can give (x3 cap, with a margin for projection error).
SPLIT_MEMORY_RATIO = MAX_MEMORY_FACTOR / 1.5
SPLIT_WALLTIME_RATIO = 3.0
# A site is excluded when it holds most of a code's failures and fails often.
SITE_MIN_FAILURES = 3
SITE_CODE_SHARE = 0.6
SITE_FAILURE_RATE = 0.25
# A job failed this many times with the same code (or category): not a third try.
REPEATED = 2
# Retries of a code that succeeded this often elsewhere in the campaign: it is transient,
# whatever the tables say.
RETRY_SUCCESS = 0.5
# ... and a usually-transient input or software code that failed this many retries (of
# different attempts) without one success is not transient in this campaign.
RETRIED_EVERYWHERE = 3
# ... and in a failures-only export, a code on every failed job of at least this many jobs.
ALL_FAILED_JOBS = 4
# ... and on a campaign's only site, at least this many jobs hit.
SINGLE_SITE_MIN_JOBS = 3
SINGLE_SITE_FRACTION = 0.5
# ... and, for a code no table explains, with the same log text on this share of them.
SAME_TEXT_SHARE = 0.9
PERMANENT_CATEGORIES = ("software", "input")
SITE_CATEGORIES = ("site", "storage", "gpu", "input", "unknown")
# Crashes count against a site only when (nearly) all of them happen there.
CRASH_SITE_SHARE = 0.8
CRASH_OTHER_SITES_RATE = 0.01
# A walltime kill with no progress, after this many times the campaign's typical
# successful walltime, is a hang (HTCondor/PanDA operators resubmit these, see pilot
# LOOPINGJOB), not a shortage of walltime.
HANG_SIBLING_RATIO = 3.0
HANG_PROGRESS = 0.01  # "nothing done": under 1 % of the job's events
# A failure that follows one job over this many sites, and no other job, is the job's own.
FOLLOWS_JOB_SITES = 3
JOB_OWN_CATEGORIES = ("input", "storage", "software", "unknown")


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


def _code(row: dict[str, float]) -> str:
    for key in row:
        if key.startswith("code="):
            return key.removeprefix("code=")
    return "this code"


def _resource(row: dict[str, float], kind: str, split_above: float) -> RuleDecision:
    """More memory / walltime, or a split (``kind`` is "memory" or "walltime")."""
    action = Action.RESUBMIT_MORE_MEMORY if kind == "memory" else Action.RESUBMIT_MORE_WALLTIME
    progress = row.get("progress")
    siblings = row.get("sibling_walltime_ratio")
    if (
        kind == "walltime"
        and progress is not None
        and progress < HANG_PROGRESS
        and siblings is not None
        and siblings >= HANG_SIBLING_RATIO
    ):
        return RuleDecision(
            Action.RESUBMIT, 0.7,
            f"no event done in {siblings:.0f}x the walltime the campaign's successful jobs "
            "take: a hang, not a shortage of time; resubmit (more walltime would only wait longer)",
        )  # fmt: skip
    need = row.get(f"projected_{kind}_ratio", row.get(f"{kind}_ratio"))
    if row.get("job_category_failures", 1.0) >= REPEATED and row.get(f"job_{kind}_raised"):
        return RuleDecision(
            Action.SPLIT_JOB, 0.7,
            f"the job ran out of {kind} {row['job_category_failures']:.0f} times, the last "
            "time after a raise: fewer events per job, not another try",
        )  # fmt: skip
    # Splitting helps when the need grows with events: a job that died at its first
    # event needs a raise; one whose progress is unknown is judged by its need alone.
    if need is not None and need > split_above and progress != 0.0:
        return RuleDecision(
            Action.SPLIT_JOB, 0.7, f"projected {kind} need is {need:.1f}x the request"
        )
    shown = "unknown" if need is None else f"{need:.1f}x"
    return RuleDecision(action, 0.85, f"out of {kind} (projected need {shown})")


def decide(row: dict[str, float]) -> RuleDecision:
    """The rules' action for one feature row (see :mod:`features`)."""
    category = _category(row)
    code = _code(row)
    transient = bool(row.get("transient", 0.0))
    # A code that names no cause and that nothing else explained counts as unknown.
    known = bool(row.get("known_code", 1.0)) and not (
        row.get("generic_code") and category == "unknown"
    )
    only_site = row.get("campaign_sites", 2.0) <= 1
    repeats = row.get("job_same_code", 1.0)
    retry_success = row.get("code_retry_success")
    recovers_elsewhere = retry_success is not None and retry_success >= RETRY_SUCCESS
    if row.get("preemption"):
        return RuleDecision(
            Action.RESUBMIT,
            0.75,
            f"{code}: preempted (the resource took its slot back): retry; the site is not at fault",
        )
    # An image or architecture failure is the site's while the campaign runs at other
    # sites and the failure has not followed this job from site to site.
    runs_elsewhere = (
        not only_site
        and row.get("other_sites_successes", 0.0) > 0
        and row.get("job_code_sites", 1.0) < REPEATED
    )
    if row.get("deterministic"):
        if runs_elsewhere and row.get("site_dependent", 0.0):
            return RuleDecision(
                Action.EXCLUDE_SITE, 0.7,
                f"{code} failed {row.get('site_code_failures', 1):.0f} time(s) here while the "
                "campaign runs at other sites: this site cannot run what the others run "
                "(pull, image, architecture); exclude it for the job",
            )  # fmt: skip
        return RuleDecision(
            Action.KILL, 0.8,
            f"{code} is a {category.replace('_', ' ')} failure that is the same on every try: "
            "fix the campaign (spec, model, image) and resubmit; kill proposed for review",
        )  # fmt: skip
    if row.get("oversize"):
        return RuleDecision(
            Action.SPLIT_JOB, 0.75, f"{code}: a size limit was exceeded: fewer events per job"
        )
    if category == "memory":
        return _resource(row, "memory", SPLIT_MEMORY_RATIO)
    if category == "walltime":
        return _resource(row, "walltime", SPLIT_WALLTIME_RATIO)
    if (
        category in JOB_OWN_CATEGORIES
        and row.get("job_code_sites", 0.0) >= FOLLOWS_JOB_SITES
        and row.get("code_jobs", 0.0) <= 1
    ):
        return RuleDecision(
            Action.KILL, 0.7,
            f"{code} followed this job over {row['job_code_sites']:.0f} sites and hit no other "
            "job: the job's own input or events, not the sites; kill proposed for review",
        )  # fmt: skip
    crash_at_site = (
        category == "software"
        and row.get("site_code_share", 0.0) >= CRASH_SITE_SHARE
        and row.get("other_sites_code_rate", 1.0) <= CRASH_OTHER_SITES_RATE
        and row.get("other_sites_successes", 0.0) > 0
    )
    if not only_site and (category in SITE_CATEGORIES or crash_at_site):
        if (
            row.get("site_code_failures", 0.0) >= SITE_MIN_FAILURES
            and row.get("site_code_share", 0.0) >= SITE_CODE_SHARE
            and row.get("site_failure_rate", 0.0) >= SITE_FAILURE_RATE
        ):
            return RuleDecision(
                Action.EXCLUDE_SITE, 0.75,
                f"the site holds {row['site_code_share']:.0%} of this code's failures and fails "
                f"{row['site_failure_rate']:.0%} of its attempts",
            )  # fmt: skip
        if row.get("job_same_code_site", 1.0) >= REPEATED:
            return RuleDecision(
                Action.EXCLUDE_SITE, 0.65,
                f"the job failed {row['job_same_code_site']:.0f} times with {code} at this "
                "site: run it elsewhere",
            )  # fmt: skip
        if category == "site" and not transient and known:
            return RuleDecision(
                Action.EXCLUDE_SITE, 0.6, f"{code}: the site is not set up to run the job"
            )
    # Without successes the share of jobs is unknown: many jobs hit is the evidence then.
    # Without successes the share of jobs is unknown: many jobs hit, or every failed job,
    # is the evidence then.
    widespread = (
        row.get("code_jobs", 0.0) >= MAIN_ERROR_JOBS
        or (
            row.get("code_jobs", 0.0) >= ALL_FAILED_JOBS
            and row.get("code_failed_job_share", 0.0) >= 1.0
        )
        if row.get("no_successes")
        else row.get("code_job_fraction", 0.0) >= MAIN_ERROR_FRACTION
    )
    # Campaign-wide: at several sites, or on every site there is (one cluster, one queue)
    # with several jobs hit (one failure of a three-job campaign is not campaign-wide).
    # One site cannot show a code following the campaign from site to site: it takes most
    # of the jobs (or every failed one, without successes) to say so.
    everywhere = row.get("code_sites", 0.0) >= 2 or (
        only_site
        and row.get("code_jobs", 0.0) >= SINGLE_SITE_MIN_JOBS
        and (row.get("no_successes") or row.get("code_job_fraction", 0.0) >= SINGLE_SITE_FRACTION)
    )
    if (
        not transient
        and known
        and category in PERMANENT_CATEGORIES
        and widespread
        and everywhere
        and not recovers_elsewhere
    ):
        where = "its only site" if only_site else f"{row['code_sites']:.0f} sites"
        return RuleDecision(
            Action.KILL, 0.8,
            f"a non-transient {category} failure hits {row.get('code_jobs', 0):.0f} jobs at "
            f"{where}: campaign-wide, retries will not fix it; kill (stop) proposed for review",
        )  # fmt: skip
    # A code no table explains, with the same text on the jobs of a campaign's only site:
    # a one-site campaign cannot tell an incident from its own fault, and a stop proposal
    # costs a look where retries would burn every attempt.
    if (
        only_site
        and category == "unknown"
        and not transient
        and widespread
        and row.get("code_jobs", 0.0) >= SINGLE_SITE_MIN_JOBS
        and row.get("code_same_text_share", 0.0) >= SAME_TEXT_SHARE
        and not recovers_elsewhere
    ):
        return RuleDecision(
            Action.KILL, 0.6,
            f"{code} with the same text on {row['code_jobs']:.0f} jobs of the campaign's only "
            "site: campaign-wide; stop proposed for review",
        )  # fmt: skip
    never_recovers = retry_success == 0.0 and row.get("code_retried", 0.0) >= REPEATED
    if (
        transient
        and category in PERMANENT_CATEGORIES
        and repeats >= REPEATED
        and never_recovers
        and row["code_retried"] >= RETRIED_EVERYWHERE
    ):
        return RuleDecision(
            Action.KILL, 0.65,
            f"{code} is usually transient, but none of the {row['code_retried']:.0f} retries of "
            "jobs it failed succeeded; kill proposed for review",
        )  # fmt: skip
    if not known and repeats >= REPEATED and row.get("code_sites", 1.0) >= 2:
        return RuleDecision(
            Action.RESUBMIT, 0.5,
            f"{code} is not in the tables and hits jobs at {row['code_sites']:.0f} sites: an "
            "incident rather than this job; retry (a kill would stop the campaign)",
        )  # fmt: skip
    if not transient and repeats >= REPEATED and not recovers_elsewhere:
        return RuleDecision(
            Action.KILL, 0.7 if known else 0.55,
            f"the job failed {repeats:.0f} times with {code}: reproduced on retry, a third "
            "try will not help; kill proposed for review",
        )  # fmt: skip
    if transient or recovers_elsewhere:
        evidence = (
            f"retries of {code} succeeded for {retry_success:.0%} of the jobs"
            if recovers_elsewhere
            else f"{category} failure, usually transient"
        )
        return RuleDecision(Action.RESUBMIT, 0.75, evidence)
    if not known:
        return RuleDecision(
            Action.RESUBMIT, 0.45,
            f"{code} is not in the tables and its log and resource use say nothing more: "
            "one more try; a second failure of the job escalates",
        )  # fmt: skip
    return RuleDecision(
        Action.RESUBMIT, 0.4, f"isolated {category} failure: one more try before escalating"
    )
