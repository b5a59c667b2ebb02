"""Engines behind one interface (:mod:`smartbkg_prod.backends.base`)."""

from __future__ import annotations

from collections.abc import Callable

from smartbkg_prod.backends.base import Backend
from smartbkg_prod.errors import SubmitError
from smartbkg_prod.spec import Campaign

# Each engine module is imported only when its backend is used, so a missing optional
# dependency (htcondor, panda-client, docker) only matters to its own users.


def _local(campaign: Campaign | None) -> type[Backend]:
    if campaign is not None and campaign.container.runtime == "docker":
        from smartbkg_prod.backends.docker_runtime import DockerLocalBackend

        return DockerLocalBackend
    from smartbkg_prod.backends.local import LocalBackend

    return LocalBackend


def _slurm(campaign: Campaign | None) -> type[Backend]:
    from smartbkg_prod.backends.slurm import SlurmBackend

    return SlurmBackend


def _htcondor(campaign: Campaign | None) -> type[Backend]:
    from smartbkg_prod.backends.htcondor import HTCondorBackend

    return HTCondorBackend


def _panda(campaign: Campaign | None) -> type[Backend]:
    from smartbkg_prod.backends.panda import PandaBackend

    return PandaBackend


# name -> the engine class for a campaign (the local backend has two runtimes)
BACKENDS: dict[str, Callable[[Campaign | None], type[Backend]]] = {
    "local": _local,
    "slurm": _slurm,
    "htcondor": _htcondor,
    "panda": _panda,
}


def get_backend(name: str, campaign: Campaign | None = None) -> Backend:
    """An engine instance by name, configured from the campaign's backend section."""
    if name not in BACKENDS:
        raise SubmitError(f"unknown backend {name!r} (allowed: {', '.join(BACKENDS)})")
    try:
        backend_class = BACKENDS[name](campaign)
    except ModuleNotFoundError as error:
        raise SubmitError(
            f"backend {name!r} needs the optional dependency {error.name!r}: "
            f"pip install 'smartbkg-prod[{name}]'"
        ) from None
    return backend_class.from_campaign(campaign) if campaign is not None else backend_class()
