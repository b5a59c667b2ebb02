"""Engines behind one interface (:mod:`smartbkg_prod.backends.base`)."""

from __future__ import annotations

import importlib

from smartbkg_prod.backends.base import Backend
from smartbkg_prod.errors import SubmitError
from smartbkg_prod.spec import Campaign

# name -> (module, class); engine modules are imported only when used, so a missing
# optional dependency (htcondor, panda-client) only matters to its own users.
BACKENDS = {
    "local": ("smartbkg_prod.backends.local", "LocalBackend"),
    "slurm": ("smartbkg_prod.backends.slurm", "SlurmBackend"),
    "htcondor": ("smartbkg_prod.backends.htcondor", "HTCondorBackend"),
    "panda": ("smartbkg_prod.backends.panda", "PandaBackend"),
}


def get_backend(name: str, campaign: Campaign | None = None) -> Backend:
    """An engine instance by name, configured from the campaign's backend section."""
    if name not in BACKENDS:
        raise SubmitError(f"unknown backend {name!r} (allowed: {', '.join(BACKENDS)})")
    if name == "local" and campaign is not None and campaign.container.runtime == "docker":
        from smartbkg_prod.backends.docker_runtime import DockerLocalBackend

        return DockerLocalBackend.from_campaign(campaign)
    module_name, class_name = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise SubmitError(
            f"backend {name!r} needs the optional dependency {error.name!r}: "
            f"pip install 'smartbkg-prod[{name}]'"
        ) from None
    backend_class = getattr(module, class_name)
    return backend_class.from_campaign(campaign) if campaign is not None else backend_class()
