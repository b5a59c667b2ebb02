"""Pythia 8 event generation at Belle II energies, straight into a :class:`ParticleBatch`.

Every process is fed to Pythia through a small Les Houches (``LHAup``) source so that
Pythia's own ``nextBatch`` loops over events in C++ and hands back columnar (awkward)
records: no per-particle Python access, which costs ~150-200 µs/event.

* ``bbbar_*``: e+e- -> Υ(4S) in the lab frame (the Υ(4S) carries the beams' boost),
  decayed by Pythia with the Υ(4S) defined below; B0 mixing and all B decays are
  Pythia's.
* ``continuum_*``: e+e- -> γ* -> q qbar with 1 + cos²θ in the CM frame, boosted to the
  lab, then final-state shower and string hadronisation.

Everything comes out in the lab frame, vertices included (Pythia propagates the decay
vertices with the lab-frame momenta).

>>> batch = generate_events("bbbar_charged", 10, seed=1)
>>> batch.n_events
10
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import awkward as ak
import numpy as np
import pythia8mc

from smartbkg_prod.physics.beams import E_ELECTRON, E_POSITRON, SQRT_S, cm_to_lab
from smartbkg_prod.physics.config import PROCESSES, PYTHIA_MAX_SEED
from smartbkg_prod.physics.errors import GeneratorError
from smartbkg_prod.physics.events import ParticleBatch, offsets_from_counts

UPSILON_4S = 300553
UPSILON_4S_SETTINGS = (
    "300553:new = Upsilon(4S) void 3 0 0 10.5794 0.0205 10.52 10.64 0",
    "300553:addChannel = 1 0.514 0 521 -521",
    "300553:addChannel = 1 0.486 0 511 -511",
)
COMMON_SETTINGS = (
    "Beams:frameType = 5",  # events come from our LHAup source
    "PDF:lepton = off",
    "PartonLevel:ISR = off",
    "PartonLevel:MPI = off",
    "PartonLevel:Remnants = off",
    "LesHouches:matchInOut = off",
    "Check:event = off",
    "Print:quiet = on",
    "Next:numberCount = 0",
)
LHA_PROCESS_ID = 9999
PYTHIA_BATCH_EVENTS = 2_000
# How many skipped (failed) Pythia events we tolerate per requested event before giving up.
MAX_FAILURE_FRACTION = 0.1


@dataclass(frozen=True)
class ProcessSetup:
    """How one spec process is produced."""

    quark_flavours: tuple[int, ...] = ()  # continuum: PDG ids of q
    flavour_weights: tuple[float, ...] = ()  # ∝ charge² (e+e- -> γ* -> q qbar)
    pythia_settings: tuple[str, ...] = ()

    @property
    def is_continuum(self) -> bool:
        return bool(self.quark_flavours)


PROCESS_SETUPS: dict[str, ProcessSetup] = {
    "bbbar_generic": ProcessSetup(pythia_settings=("PartonLevel:FSR = off",)),
    "bbbar_charged": ProcessSetup(
        pythia_settings=(
            "PartonLevel:FSR = off",
            "300553:onMode = off",
            "300553:onIfMatch = 521 -521",
        )
    ),
    "bbbar_mixed": ProcessSetup(
        pythia_settings=(
            "PartonLevel:FSR = off",
            "300553:onMode = off",
            "300553:onIfMatch = 511 -511",
        )
    ),
    "continuum_uds": ProcessSetup(quark_flavours=(1, 2, 3), flavour_weights=(1.0, 4.0, 1.0)),
    "continuum_cc": ProcessSetup(quark_flavours=(4,), flavour_weights=(1.0,)),
}
assert set(PROCESS_SETUPS) == set(PROCESSES), "every spec process needs a generator setup"


def pythia_seed(seed: int) -> int:
    """Map a campaign/job seed (0..2**31-1) into Pythia's allowed range 1..900_000_000."""
    return 1 + seed % (PYTHIA_MAX_SEED - 1)


def sample_cos_theta(rng: np.random.Generator, size: int) -> np.ndarray:
    """cos θ distributed as 1 + cos²θ (spin-1/2 pair from a virtual photon), by inversion.

    The CDF gives the depressed cubic c³ + 3c - 2w = 0 with w = 4u - 2, whose one real
    root is Cardano's formula.
    """
    w = 4.0 * rng.random(size) - 2.0
    root = np.sqrt(w * w + 1.0)
    return np.clip(np.cbrt(w + root) + np.cbrt(w - root), -1.0, 1.0)


class _CollisionSource(pythia8mc.LHAup):
    """Les Houches source of e+e- collisions at SuperKEKB energies, called once per event.

    Continuum kinematics are drawn in chunks with numpy (seeded), so the event stream
    depends only on the seed, not on how events are split into ``generate`` calls.
    """

    CHUNK = 4096

    def __init__(self, setup: ProcessSetup, seed: int, masses: dict[int, float]):
        pythia8mc.LHAup.__init__(self, 3)
        self._setup = setup
        self._rng = np.random.default_rng([seed, 0x5B4C])
        self._masses = masses
        self._chunk: list[tuple[float, ...]] = []
        self._next = 0

    def setInit(self) -> bool:  # noqa: N802 (Pythia's name)
        self.setBeamA(11, E_ELECTRON)
        self.setBeamB(-11, E_POSITRON)
        self.setStrategy(3)
        self.addProcess(LHA_PROCESS_ID, 1.0, 0.0, 1.0)
        self.setXSec(0, 1.0)
        return True

    def setEvent(self, proc_id: int = 0) -> bool:  # noqa: N802, ARG002 (Pythia's signature)
        self.setProcess(LHA_PROCESS_ID, 1.0, SQRT_S, 0.0078, 0.2)
        self.addParticle(11, -1, 0, 0, 0, 0, 0.0, 0.0, E_ELECTRON, E_ELECTRON, 0.0)
        self.addParticle(-11, -1, 0, 0, 0, 0, 0.0, 0.0, -E_POSITRON, E_POSITRON, 0.0)
        if not self._setup.is_continuum:
            pz = E_ELECTRON - E_POSITRON
            self.addParticle(
                UPSILON_4S, 1, 1, 2, 0, 0, 0.0, 0.0, pz, E_ELECTRON + E_POSITRON, SQRT_S
            )
            return True
        if self._next == len(self._chunk):
            self._chunk = self._draw_chunk()
            self._next = 0
        quark, mass, px, py, pz_q, e_q, pz_qbar, e_qbar = self._chunk[self._next]
        self._next += 1
        quark = int(quark)
        self.addParticle(quark, 1, 1, 2, 101, 0, px, py, pz_q, e_q, mass, 0.0, 9.0, SQRT_S)
        self.addParticle(-quark, 1, 1, 2, 0, 101, -px, -py, pz_qbar, e_qbar, mass, 0.0, 9.0, SQRT_S)
        return True

    def _draw_chunk(self) -> list[tuple[float, ...]]:
        setup, rng, n = self._setup, self._rng, self.CHUNK
        weights = np.asarray(setup.flavour_weights) / sum(setup.flavour_weights)
        flavour = rng.choice(len(setup.quark_flavours), size=n, p=weights)
        quark = np.asarray(setup.quark_flavours)[flavour]
        mass = np.asarray([self._masses[q] for q in setup.quark_flavours])[flavour]
        cos_theta = sample_cos_theta(rng, n)
        phi = rng.uniform(0.0, 2.0 * math.pi, n)
        energy_cm = np.full(n, SQRT_S / 2)
        p_cm = np.sqrt(energy_cm**2 - mass**2)
        p_t = p_cm * np.sqrt(1.0 - cos_theta**2)
        px, py, pz = p_t * np.cos(phi), p_t * np.sin(phi), p_cm * cos_theta
        # q along +p, qbar along -p in the CM; both boosted to the lab.
        pz_q, e_q = cm_to_lab(pz, energy_cm)
        pz_qbar, e_qbar = cm_to_lab(-pz, energy_cm)
        columns = (quark, mass, px, py, pz_q, e_q, pz_qbar, e_qbar)
        return list(zip(*(column.tolist() for column in columns), strict=True))


def _kept_particles(pdg: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Physical particles of the decay tree: drop the system/beam/incoming entries, partons,
    diquarks and Pythia's bookkeeping codes (strings, clusters)."""
    abs_pdg = np.abs(pdg)
    parton = (abs_pdg <= 8) | (abs_pdg == 21)
    diquark = (abs_pdg >= 1000) & (abs_pdg < 10000) & ((abs_pdg // 10) % 10 == 0)
    bookkeeping = (abs_pdg >= 81) & (abs_pdg <= 100)
    beam_or_incoming = np.abs(status) <= 21
    return ~(parton | diquark | bookkeeping | beam_or_incoming)


def particles_from_pythia_batch(records: ak.Array, first_event: int = 0) -> ParticleBatch:
    """Convert the awkward output of ``Pythia.nextBatch`` into a :class:`ParticleBatch`."""
    prt = records["prt"]
    n_events = len(prt)
    counts = ak.to_numpy(ak.num(prt, axis=1)).astype(np.int64)
    flat = ak.flatten(prt, axis=1)
    pdg = ak.to_numpy(flat["id"]).astype(np.int32)
    status = ak.to_numpy(flat["status"]).astype(np.int32)
    mother1 = ak.to_numpy(flat["mother1"]).astype(np.int64)
    momentum = flat["p"]
    vertex = flat["vProd"]

    def column(values: ak.Array) -> np.ndarray:
        return ak.to_numpy(ak.fill_none(values, 0.0)).astype(np.float64)

    keep = _kept_particles(pdg, status)
    event_of = np.repeat(np.arange(n_events, dtype=np.int64), counts)
    offsets = offsets_from_counts(counts)
    kept_offsets = offsets_from_counts(np.bincount(event_of[keep], minlength=n_events))
    # Position in the kept list of every original particle (-1 if dropped), then mothers.
    new_position = np.where(keep, np.cumsum(keep) - 1, -1)
    has_mother = mother1 > 0
    mother_global = new_position[np.where(has_mother, mother1, 0) + offsets[:-1][event_of]]
    mother_local = np.where(
        has_mother & (mother_global >= 0), mother_global - kept_offsets[:-1][event_of], -1
    )
    return ParticleBatch(
        event_number=first_event + np.arange(n_events, dtype=np.int64),
        offsets=kept_offsets,
        pdg=pdg[keep],
        mother=mother_local[keep].astype(np.int32),
        px=column(momentum["px"])[keep],
        py=column(momentum["py"])[keep],
        pz=column(momentum["pz"])[keep],
        energy=column(momentum["e"])[keep],
        x=column(vertex["px"])[keep],
        y=column(vertex["py"])[keep],
        z=column(vertex["pz"])[keep],
        t=column(vertex["e"])[keep],
        status=status[keep],
    )


class EventGenerator:
    """One initialised Pythia instance for one process and seed.

    Consecutive ``generate`` calls continue the same random stream.

    >>> gen = EventGenerator("continuum_cc", seed=7)
    >>> gen.generate(5, first_event=100).event_number.tolist()
    [100, 101, 102, 103, 104]
    """

    def __init__(self, process: str, seed: int):
        if process not in PROCESS_SETUPS:
            raise GeneratorError(f"unknown process {process!r} (allowed: {', '.join(PROCESSES)})")
        self.process = process
        self.seed = seed
        setup = PROCESS_SETUPS[process]
        self._pythia = pythia8mc.Pythia("", False)
        settings = (
            *COMMON_SETTINGS,
            *UPSILON_4S_SETTINGS,
            *setup.pythia_settings,
            "Random:setSeed = on",
            f"Random:seed = {pythia_seed(seed)}",
        )
        for setting in settings:
            if not self._pythia.readString(setting):
                raise GeneratorError(
                    f"Pythia rejected the setting {setting!r} for {process}; if it rejects every "
                    "setting its data files are missing: point PYTHIA8DATA to Pythia's xmldoc directory",
                )
        masses = {q: self._pythia.particleData.m0(q) for q in setup.quark_flavours}
        # Keep a reference: Pythia holds the source through a shared pointer created here.
        self._source = _CollisionSource(setup, seed, masses)
        if not self._pythia.setLHAupPtr(self._source) or not self._pythia.init():
            raise GeneratorError(
                f"Pythia failed to initialise for process {process} (seed {seed}); "
                "check the pythia8mc installation and its particle data",
            )

    def generate(self, n_events: int, first_event: int = 0) -> ParticleBatch:
        """The next ``n_events`` events, numbered ``first_event, first_event + 1, ...``."""
        if n_events < 0:
            raise ValueError("n_events must be >= 0")
        batches: list[ParticleBatch] = []
        produced, failures = 0, 0
        while produced < n_events:
            # Bounded batches: Pythia's awkward record holds ~10 kB per event before conversion.
            wanted = min(n_events - produced, PYTHIA_BATCH_EVENTS)
            try:
                records = self._pythia.nextBatch(wanted, "skip")
            except Exception as error:  # Pythia raises plain C++ exceptions mapped by pybind
                raise GeneratorError(
                    f"Pythia failed while generating {self.process} events: {error}",
                ) from error
            failures += wanted - len(records)
            if failures > MAX_FAILURE_FRACTION * n_events + 10:
                raise GeneratorError(
                    f"Pythia failed on {failures} of {n_events} {self.process} events (seed {self.seed}); "
                    "the generator setup is broken",
                )
            if len(records):
                batches.append(particles_from_pythia_batch(records, first_event + produced))
                produced += len(records)
        return ParticleBatch.concatenate(batches)


def generate_events(process: str, n_events: int, seed: int, first_event: int = 0) -> ParticleBatch:
    """``n_events`` events of ``process`` from a fresh generator seeded with ``seed``."""
    return EventGenerator(process, seed).generate(n_events, first_event)
