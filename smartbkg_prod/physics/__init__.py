"""Physics layer: Pythia generation, fast detector simulation, hadronic B-tag skim, ROOT I/O.

Data flows as columnar batches: :class:`ParticleBatch` (MC truth) ->
:func:`simulate` -> :class:`RecoBatch` -> :func:`skim.skim` -> :class:`SkimResult` ->
:func:`write_output`.
"""

from smartbkg_prod.physics.detector import RecoBatch, simulate
from smartbkg_prod.physics.events import ParticleBatch
from smartbkg_prod.physics.generate import EventGenerator, generate_events
from smartbkg_prod.physics.rootio import OutputContents, read_output, write_output

# The skim function stays in smartbkg_prod.physics.skim: re-exporting it here would shadow
# the module of the same name (`import smartbkg_prod.physics.skim as m` would get the function).
from smartbkg_prod.physics.skim import MODE_NAMES, SkimResult, empty_skim_result

__all__ = [
    "MODE_NAMES",
    "EventGenerator",
    "OutputContents",
    "ParticleBatch",
    "RecoBatch",
    "SkimResult",
    "empty_skim_result",
    "generate_events",
    "read_output",
    "simulate",
    "write_output",
]
