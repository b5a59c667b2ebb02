"""Physics layer: Pythia generation, fast detector simulation, hadronic B-tag skim, ROOT I/O.

Data flows as columnar batches: :class:`ParticleBatch` (MC truth) ->
:func:`simulate` -> :class:`RecoBatch` -> :func:`skim` -> :class:`SkimResult`.
"""

from smartbkg_prod.physics.events import ParticleBatch
from smartbkg_prod.physics.generate import EventGenerator, generate_events

__all__ = ["EventGenerator", "ParticleBatch", "generate_events"]
