"""``smartbkg-prod stage``: the built-in simulation and skim as external-stage commands.

They read and write the files an external stage gets and must produce (HepMC3 in,
ROOT out; layout in :mod:`smartbkg_prod.physics.recoio`), so the built-in chain can run
as ``name: external`` (``job_specs/external_sim.yaml``), and a collaboration's chain can be
checked against them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

EXIT_FAILED = 1


def _configs(config_path: str | None):
    from smartbkg_prod.physics.config import SimulationConfig, SkimConfig

    if config_path is None:
        return SimulationConfig(), SkimConfig()
    try:
        data = json.loads(Path(config_path).read_text())
        return (
            SimulationConfig.model_validate(data.get("simulation", {})),
            SkimConfig.model_validate(data.get("skim", {})),
        )
    except (OSError, ValueError) as error:
        detail = " ".join(str(error).split())
        raise click.ClickException(f"{config_path}: not a usable stage config: {detail}") from None


def _run(function, *args) -> None:
    from smartbkg_prod.physics.hepmc import HepMCError
    from smartbkg_prod.physics.recoio import StageFileError

    try:
        n_events = function(*args)
    except (HepMCError, StageFileError, OSError) as error:
        click.echo(f"error: {' '.join(str(error).split())}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"{n_events} events", err=True)


@click.group()
def stage() -> None:
    """Run a built-in stage on files, as an external stage would."""


@stage.command()
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False))
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", required=True, type=click.IntRange(min=0), help="The job's seed ({seed}).")
@click.option(
    "--config",
    "config_path",
    default=None,
    help="The stage config JSON ({config}); default: built-in defaults.",
)
@click.option("--skim/--no-skim", default=False, help="Also skim, writing the skim trees.")
def simulate(
    input_path: str, output_path: str, seed: int, config_path: str | None, skim: bool
) -> None:
    """Fast detector simulation of a HepMC3 file; writes the 'reco' tree (and the skim)."""
    from smartbkg_prod.stages.builtin import simulate_file

    simulation, skim_config = _configs(config_path)
    _run(
        simulate_file,
        Path(input_path),
        Path(output_path),
        seed,
        simulation,
        skim_config if skim else None,
    )


@stage.command(name="skim")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False))
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False))
@click.option("--config", "config_path", default=None, help="The stage config JSON ({config}).")
def skim_command(input_path: str, output_path: str, config_path: str | None) -> None:
    """Hadronic B-tag skim of the 'reco' tree of a ROOT file; writes the skim trees."""
    from smartbkg_prod.stages.builtin import skim_file

    _, skim_config = _configs(config_path)
    _run(skim_file, Path(input_path), Path(output_path), skim_config)
