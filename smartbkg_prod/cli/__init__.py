"""The ``smartbkg-prod`` command line: a thin click layer over the library.

Every command calls one library function and formats what it returns. Errors of the
library's own types become one line on stderr and a non-zero exit (2 for bad input);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from smartbkg_prod import __version__
from smartbkg_prod.errors import SmartBkgError, SpecError
from smartbkg_prod.filter.errors import FilterError
from smartbkg_prod.physics.errors import PhysicsError
from smartbkg_prod.redact import redact, redact_url

if TYPE_CHECKING:
    from smartbkg_prod.store import Store

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1

db_option = click.option(
    "--db",
    "db_url",
    default=None,
    envvar="SMARTBKG_DB",
    help="Database URL (default sqlite:///smartbkg-prod.db, in the current directory; "
    "env SMARTBKG_DB).",
)


# Commands in their own modules, imported only when used: a worker start must not pay
# for SQLAlchemy, scikit-learn, the web server or the docker SDK.
def _build() -> click.Command:
    from smartbkg_prod.cli.build import build

    return build


def _train() -> click.Command:
    from smartbkg_prod.cli.filter import train

    return train


def _evaluate() -> click.Command:
    from smartbkg_prod.cli.filter import evaluate

    return evaluate


def _export_onnx() -> click.Command:
    from smartbkg_prod.cli.filter import export_onnx

    return export_onnx


def _monitor() -> click.Command:
    from smartbkg_prod.cli.monitor import monitor

    return monitor


def _recover() -> click.Command:
    from smartbkg_prod.cli.recover import recover

    return recover


def _stage() -> click.Command:
    from smartbkg_prod.cli.stage import stage

    return stage


LAZY_COMMANDS: dict[str, Callable[[], click.Command]] = {
    "build": _build,
    "train": _train,
    "evaluate": _evaluate,
    "export-onnx": _export_onnx,
    "monitor": _monitor,
    "recover": _recover,
    "stage": _stage,
}


# The core install is what the worker runs (pyproject.toml); the rest comes with extras.
# A missing optional module names the extra that installs it: first by the module, else by
# the command that needed it.
MODULE_EXTRAS = {
    "docker": "build",
    "psycopg": "postgres",
    "htcondor": "htcondor",
    "htcondor2": "htcondor",
    "pandaclient": "panda",
    "torch": "train",
    "onnxscript": "train",
}
COMMAND_EXTRAS = {
    "train": "train",
    "evaluate": "train",
    "export-onnx": "train",
    "monitor": "monitor",
    "recover": "recovery",
    "build": "build",
}
OPTIONAL_MODULES = {
    *MODULE_EXTRAS,
    "sqlalchemy",
    "tqdm",
    "prometheus_client",
    "matplotlib",
    "scipy",
    "sklearn",
}


def missing_extra(error: ModuleNotFoundError, command: str | None) -> str | None:
    """The extra that installs the missing module, or None when it is not optional.

    >>> missing_extra(ModuleNotFoundError(name="sqlalchemy.orm"), "status")
    'submit'
    >>> missing_extra(ModuleNotFoundError(name="sklearn"), "train")
    'train'
    """
    module = (error.name or "").split(".")[0]
    if module not in OPTIONAL_MODULES:
        return None
    return MODULE_EXTRAS.get(module) or COMMAND_EXTRAS.get(command or "", "submit")


def _needs_extra(name: str, error: ModuleNotFoundError, extra: str) -> click.Command:
    """A stand-in for a command whose optional dependencies are not installed."""
    line = f"smartbkg-prod {name} needs {error.name!r}: pip install 'smartbkg-prod[{extra}]'"

    def fail() -> None:
        raise click.ClickException(line)

    return click.Command(
        name,
        callback=fail,
        help=f"(not installed: {line})",
        # `monitor serve ...` must reach the line above, not a usage error.
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class _Group(click.Group):
    """Lazily loaded subcommands; library errors become one clear line, not a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            try:
                return LAZY_COMMANDS[name]()
            except ModuleNotFoundError as error:
                extra = missing_extra(error, name)
                if extra is None:
                    raise
                return _needs_extra(name, error, extra)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as error:
            extra = missing_extra(error, ctx.invoked_subcommand)
            if extra is None or (ctx.obj and ctx.obj.get("debug")):
                raise
            click.echo(
                f"error: smartbkg-prod {ctx.invoked_subcommand} needs {error.name!r}: "
                f"pip install 'smartbkg-prod[{extra}]'",
                err=True,
            )
            ctx.exit(EXIT_FAILED)
        except (SmartBkgError, PhysicsError, FilterError) as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            for line in redact(str(error)).splitlines():
                click.echo(line if isinstance(error, SpecError) else f"error: {line}", err=True)
            ctx.exit(EXIT_BAD_INPUT if isinstance(error, SpecError) else EXIT_FAILED)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="smartbkg-prod")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """smartbkg-prod: NN-filtered simulated-event campaigns."""
    ctx.ensure_object(dict)["debug"] = debug


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=True))
def validate(specs: tuple[str, ...]) -> None:
    """Validate campaign SPEC files (exit 2 with one line per problem)."""
    from smartbkg_prod.spec import load_campaign

    bad = False
    for path in specs:
        try:
            campaign = load_campaign(path)
            check_stages(campaign, path)
        except SpecError as error:
            click.echo(str(error), err=True)
            bad = True
            continue
        click.echo(
            f"{path}: ok ({campaign.campaign_id}, {campaign.n_jobs} jobs, {campaign.events} events)"
        )
    if bad:
        sys.exit(EXIT_BAD_INPUT)


def check_stages(campaign, path: str) -> None:
    """What the spec alone cannot check: plugins found and their options valid, input
    files there with enough events. Raises SpecError."""
    from smartbkg_prod.spec import StagesConfig

    if campaign.stages == StagesConfig():
        return
    from smartbkg_prod.stages import StageError
    from smartbkg_prod.stages.chain import build_chain

    try:
        chain = build_chain(campaign)
        available = chain.generation.available_events()
    except StageError as error:
        raise SpecError(path, [str(error).removeprefix(f"stage {error.stage}: ")]) from None
    if available is not None and available < campaign.events:
        raise SpecError(
            path,
            [
                f"stages.generation.files: hold {available} events, the campaign asks for "
                f"{campaign.events} (lower events or add files)"
            ],
        )


@main.command()
@click.argument("spec", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every job.")
def plan(spec: str, as_json: bool) -> None:
    """Show the jobs a campaign SPEC splits into."""
    from smartbkg_prod.plan import campaign_output_dir, iter_jobs
    from smartbkg_prod.spec import load_campaign

    campaign = load_campaign(spec)
    if as_json:
        document = {
            "campaign_id": campaign.campaign_id,
            "output_dir": str(campaign_output_dir(campaign)),
            "jobs": [job.model_dump() for job in iter_jobs(campaign)],
        }
        click.echo(json.dumps(document, indent=1))
        return
    click.echo(f"campaign {campaign.campaign_id}: {campaign.n_jobs} jobs, {campaign.events} events")
    click.echo(f"{'job':>6} {'first_event':>12} {'n_events':>9} {'seed':>10}")
    for job in iter_jobs(campaign):
        click.echo(f"{job.index:>6} {job.first_event:>12} {job.n_events:>9} {job.seed:>10}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=True))
@db_option
@click.option(
    "--backend", default=None, help="Override the spec's backend (local, slurm, htcondor, panda)."
)
@click.option(
    "--max-parallel", type=click.IntRange(min=1), default=None, help="Jobs in flight at once."
)
@click.option(
    "--dry-run",
    "dry_run",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the native submission files into this directory instead of submitting.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
@click.option(
    "--verify-outputs",
    type=click.Choice(["size", "sha256", "none"]),
    default="size",
    show_default=True,
    help="On resume, check the outputs of done jobs (size, or full checksum) and produce "
    "missing or damaged ones again.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=None,
    metavar="SECONDS",
    help="Seconds between two state queries of the engine (default: the spec's "
    "backend.poll_interval_s, else the engine's own cadence; see README 'Backends').",
)
def submit(
    spec: str,
    db_url: str | None,
    backend: str | None,
    max_parallel: int | None,
    dry_run: str | None,
    progress: bool | None,
    verify_outputs: str,
    poll_interval: float | None,
) -> None:
    """Run (or resume) the campaign SPEC; prints its status at the end."""
    from smartbkg_prod.spec import load_campaign
    from smartbkg_prod.submit import render_campaign, submit_campaign

    campaign = load_campaign(spec)
    if dry_run:
        for path in render_campaign(campaign, Path(dry_run), backend=backend):
            click.echo(str(path))
        return
    status = submit_campaign(
        campaign,
        spec_path=str(Path(spec).resolve()),
        db_url=db_url,
        backend=backend,
        max_parallel=max_parallel,
        progress=sys.stderr.isatty() if progress is None else progress,
        verify_outputs=verify_outputs,
        poll_interval=poll_interval,
    )
    click.echo(format_status(status))
    if not status.complete:
        click.echo(
            f"campaign incomplete: {status.jobs_by_state['failed']} job(s) failed and wait for "
            "a decision (`smartbkg-prod recover list`; accept, `recover apply`, then re-run "
            "submit)",
            err=True,
        )
        sys.exit(EXIT_FAILED)


def format_status(status) -> str:
    retention = (
        f"{100 * status.retention:.2f} ± {100 * status.retention_error:.2f} %"
        if status.retention is not None
        else "-"
    )
    rate = (
        f"{status.throughput_events_per_s:,.0f} events/s" if status.throughput_events_per_s else "-"
    )
    states = ", ".join(f"{k} {v}" for k, v in status.jobs_by_state.items() if v)
    return "\n".join(
        [
            f"campaign   {status.campaign_id} ({status.backend})",
            f"jobs       {status.jobs_total} total: {states}",
            f"events     requested {status.events_requested:,}  generated {status.events_generated:,}  "
            f"kept {status.events_kept:,}  simulated {status.events_simulated:,}  skimmed {status.events_skimmed:,}",
            f"retention  {retention}"
            + (
                f"  (filtered: weighted skimmed {status.sum_weights_skimmed:,.1f})"
                if status.events_kept != status.events_generated
                else ""
            ),
            f"throughput {rate}  (wall {status.wall_seconds:.1f} s, cpu {status.cpu_seconds:.1f} s, "
            f"failed attempts {status.failed_attempts})",
        ]
        + (
            [
                f"refused    {status.jobs_submit_refused} job(s) not taken by the engine "
                f"(no attempt used): {status.submit_error}"
            ]
            if status.jobs_submit_refused
            else []
        )
        + (
            [
                f"waiting    {status.attempts_held} attempt(s) held, {status.attempts_stuck} "
                f"queued past backend.pending_timeout_s: {status.engine_note}"
            ]
            if status.attempts_held or status.attempts_stuck
            else []
        )
    )


@main.command()
@click.argument("campaign", required=False)
@db_option
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable output (keys documented in README)."
)
@click.option(
    "--watch",
    "watch_interval",
    type=click.FloatRange(min=0.5),
    default=None,
    metavar="SECONDS",
    help="Live view, redrawn every SECONDS until Ctrl-C.",
)
def status(
    campaign: str | None, db_url: str | None, as_json: bool, watch_interval: float | None
) -> None:
    """Status of CAMPAIGN (id or name), or of every campaign."""
    from smartbkg_prod.errors import StoreError
    from smartbkg_prod.store import Store

    if watch_interval is not None:
        from smartbkg_prod.cli.monitor import watch

        watch(db_url, campaign, interval=watch_interval)
        return
    store = Store(db_url, create=False)
    ids = store.campaigns.find(campaign) if campaign else store.campaigns.ids()
    if campaign and not ids:
        raise StoreError(f"no campaign named or with id {campaign!r} in {redact_url(store.url)}")
    statuses = [store.campaigns.status(campaign_id) for campaign_id in ids]
    if as_json:
        for campaign_status in statuses:
            if campaign_status.filter_tuning:
                _add_in_situ_speedup(store, campaign_status)
        click.echo(
            json.dumps(
                [{**s.model_dump(mode="json"), "recovery": _recovery(store, s)} for s in statuses],
                indent=2,
            )
        )
        return
    if not statuses:
        click.echo(f"no campaigns in {redact_url(store.url)}")
    click.echo("\n\n".join(format_status(s) + format_recovery(store, s) for s in statuses))


def _recovery(store: Store, campaign_status) -> dict:
    """The retry policy's automatic decisions and the proposals waiting for an operator."""
    from smartbkg_prod.recovery.records import policy_activity

    activity = policy_activity(store, campaign_status.campaign_id)

    def entry(r) -> dict:
        decided = r.decision
        return {
            "recommendation_id": r.id,
            "job_index": r.job_index,
            "attempt": r.attempt,
            "failure_code": r.failure_code,
            "action": (decided.action if decided else r.action).value,
            "author": decided.operator if decided else r.decided_by,
            "reason": decided.comment if decided else r.reason,
            "outcome": decided.outcome if decided else "",
        }

    return {
        "automatic_decisions": [entry(r) for r in activity.automatic],
        "waiting_for_review": [entry(r) for r in activity.waiting],
    }


def format_recovery(store: Store, campaign_status) -> str:
    """``status`` lines for the retry policy's decisions and the open proposals."""
    recovery = _recovery(store, campaign_status)
    lines = [
        f"recovery   job {d['job_index']} attempt {d['attempt']} {d['failure_code']}: "
        f"{d['action']} by {d['author']}: {d['reason']}"
        for d in recovery["automatic_decisions"]
    ]
    lines += [
        f"review     job {d['job_index']} attempt {d['attempt']} {d['failure_code']}: "
        f"{d['action']} proposed, waiting for an operator (recover show {d['recommendation_id']})"
        for d in recovery["waiting_for_review"]
    ]
    return "".join(f"\n{line}" for line in lines)


def _add_in_situ_speedup(store: Store, campaign_status) -> None:
    """``filter_tuning`` of a tuned campaign's status with how the choice does in situ."""
    from smartbkg_prod.monitor.figures import campaign_figures

    tuned = campaign_figures(store, campaign_status.campaign_id).filter_tuning
    if tuned is not None:
        campaign_status.filter_tuning = {
            **campaign_status.filter_tuning,
            "in_situ_speedup": tuned.in_situ_speedup,
            "in_situ_model_speedup": tuned.in_situ_model_speedup,
            "control_speedup": tuned.control_speedup,
        }


@main.command()
@click.option(
    "--job", "job_file", required=True, type=click.Path(dir_okay=False), help="Job input JSON file."
)
@click.option(
    "--index",
    type=click.IntRange(min=0),
    default=None,
    help="Run entry INDEX of a job list (JSON lines) given as --job (array jobs).",
)
def worker(job_file: str, index: int | None) -> None:
    """Run one attempt of one job (what backends and containers execute)."""
    from smartbkg_prod.worker import run_worker

    sys.exit(run_worker(Path(job_file), index))
