"""HepMC3 files written by pyhepmc from Pythia's own event record, not by smartbkg-prod."""

from __future__ import annotations

import numpy as np
import pyhepmc
import pythia8mc


def pythia_hepmc3_file(path, n_events: int) -> list[int]:
    """e+e- -> gamma*/Z -> q qbar at 10.58 GeV from Pythia, each event's full record written
    by pyhepmc (HepMC3 status codes: 4 beams, 1 final, 2 the rest), as a generator's
    HepMC3 output would be. Returns the final-state multiplicity of each event."""
    pythia = pythia8mc.Pythia("", False)
    for setting in (
        "Beams:idA = 11",
        "Beams:idB = -11",
        "Beams:eCM = 10.58",
        "PDF:lepton = off",
        "WeakSingleBoson:ffbar2gmZ = on",
        "Random:setSeed = on",
        "Random:seed = 5",
        "Print:quiet = on",
    ):
        assert pythia.readString(setting)
    assert pythia.init()
    final_counts = []
    event = pyhepmc.GenEvent()
    with pyhepmc.open(path, "w") as writer:
        for number in range(n_events):
            assert pythia.next()
            record = [pythia.event[i] for i in range(1, pythia.event.size())]
            status = np.array(
                [4 if abs(p.status()) in (11, 12) else 1 if p.isFinal() else 2 for p in record],
                dtype=np.int32,
            )
            # Each particle's first mother (1-based: entry 0 is the system). Pythia's
            # mother1..mother2 ranges of the parton shower are not HEPEVT ranges, and
            # from_hepevt turns them into vertices without incoming particles.
            parents = np.array([[p.mother1(), p.mother1()] for p in record], dtype=np.int64)
            column = {
                name: np.array([getattr(p, name)() for p in record])
                for name in ("px", "py", "pz", "e", "m", "xProd", "yProd", "zProd", "tProd")
            }
            event.from_hepevt(
                number,
                column["px"],
                column["py"],
                column["pz"],
                column["e"],
                column["m"],
                np.array([p.id() for p in record], dtype=np.int32),
                status,
                parents=parents,
                vx=column["xProd"],
                vy=column["yProd"],
                vz=column["zProd"],
                vt=column["tProd"],
            )
            writer.write(event)
            final_counts.append(int(np.count_nonzero(status == 1)))
    return final_counts
