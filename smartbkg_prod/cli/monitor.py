"""``smartbkg-prod monitor``: serve the web page and /metrics, collect reports, watch.

Loaded lazily by the main group (``LAZY_COMMANDS``); ``status --watch`` calls
:func:`watch`. Every command is a few lines over :mod:`smartbkg_prod.monitor`.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

from smartbkg_prod.cli import db_option
from smartbkg_prod.errors import SmartBkgError
from smartbkg_prod.store import Store


@click.group()
def monitor() -> None:
    """Monitoring: web page with /metrics, report collection, live view."""


@monitor.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free).",
)
@db_option
@click.option(
    "--operators-file",
    default=None,
    envvar="SMARTBKG_OPERATORS_FILE",
    type=click.Path(dir_okay=False),
    help="Lines name:sha256(token) of the operators who may accept, override and apply "
    "recovery actions on the page (env SMARTBKG_OPERATORS_FILE; without it, read-only).",
)
def serve(host: str, port: int, db_url: str | None, operators_file: str | None) -> None:
    """Serve the campaign pages, JSON under /api and Prometheus /metrics."""
    try:
        from smartbkg_prod.monitor.operators import Operators
        from smartbkg_prod.monitor.web import bind, uvicorn_server
    except ModuleNotFoundError as error:
        raise SmartBkgError(
            f"monitor serve needs the web stack ({error.name} is missing): "
            "pip install 'smartbkg-prod[monitor]'"
        ) from None

    operators = Operators.from_file(operators_file) if operators_file else Operators()
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    click.echo(f"serving http://{bound_host}:{bound_port}/  (metrics at /metrics; Ctrl-C stops)")
    click.echo(
        f"{len(operators)} operator(s) from {operators_file} may change state"
        if operators_file
        else "read-only: no --operators-file, nobody may accept, override or apply"
    )
    uvicorn_server(Store(db_url), operators).run(sockets=[sock])


@monitor.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def collect(directory: str, db_url: str | None, as_json: bool) -> None:
    """Ingest every *.report.json under DIRECTORY (again and again: duplicates count once).

    Campaigns missing from the database are registered from the jobs/ files next to the
    reports. Exits 1 when a file is unreadable or a report could not be stored.
    """
    from smartbkg_prod.monitor.collect import collect_directory

    result = collect_directory(Store(db_url), Path(directory))
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=1))
    else:
        click.echo(
            f"{result.received} reports: {result.stored} stored, {result.duplicates} already known, "
            f"{len(result.rejected)} rejected, {len(result.unreadable)} unreadable files "
            f"({result.seconds:.2f} s)"
        )
        for campaign_id in result.registered_campaigns:
            click.echo(f"registered campaign {campaign_id} from its job files")
    for line in [*result.unreadable, *result.rejected]:
        click.echo(f"warning: {line}", err=True)
    if result.unreadable or result.rejected:
        sys.exit(1)


def watch(
    db_url: str | None = None,
    campaign: str | None = None,
    interval: float = 5.0,
    iterations: int | None = None,
    echo: Callable[[str], None] = click.echo,
    clear: bool | None = None,
) -> None:
    """Live view of CAMPAIGN (id or name; every campaign when None), redrawn every
    ``interval`` seconds until Ctrl-C (or ``iterations`` redraws). ``clear`` wipes the
    terminal between redraws (default: when stdout is a terminal)."""
    from smartbkg_prod.errors import StoreError
    from smartbkg_prod.monitor.figures import campaign_figures
    from smartbkg_prod.monitor.text import format_watch

    store = Store(db_url, create=False)
    clear = sys.stdout.isatty() if clear is None else clear
    # Ctrl-C sets a flag instead of raising KeyboardInterrupt wherever the main thread happens
    # to be: raised inside a database call's cleanup it can be swallowed, and the view would
    # keep redrawing after the operator asked it to stop.
    stop = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    count = 0
    try:
        while not stop.is_set() and (iterations is None or count < iterations):
            ids = store.campaigns.find(campaign) if campaign else store.campaigns.ids()
            if campaign and not ids:
                raise StoreError(f"no campaign named or with id {campaign!r} in {store.url}")
            figures = [campaign_figures(store, campaign_id) for campaign_id in ids]
            if clear:
                click.clear()
            echo(format_watch(figures))
            count += 1
            if iterations is None or count < iterations:
                stop.wait(interval)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


@monitor.command("watch")
@click.argument("campaign", required=False)
@db_option
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between redraws.",
)
@click.option(
    "--iterations", default=None, type=click.IntRange(min=1), help="Stop after this many redraws."
)
def watch_command(
    campaign: str | None, db_url: str | None, interval: float, iterations: int | None
) -> None:
    """Live text view of CAMPAIGN (id or name), or of every campaign."""
    watch(db_url, campaign, interval=interval, iterations=iterations)
