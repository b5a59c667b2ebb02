"""The ideal-detector view of generated events: what a perfect detector would reconstruct.

The same :class:`~smartbkg_prod.physics.detector.RecoBatch` the simulation stage produces,
so any skim stage can run on it, but made from the generator record without detector
effects: every stable charged particle (e, μ, π, K, p) inside the detector's acceptance
(the simulation's polar-angle range, produced inside the drift chamber, pT above
``track_pt_min``) is a track with its true momentum and true identity (perfect PID), and
every photon in the polar-angle range above ``photon_energy_min`` is a photon with its true
energy. Efficiency is 100 % in that acceptance, nothing is smeared, no random number is
drawn: the view is a function of the generated event alone. The filter runs the
campaign's skim on it (:mod:`smartbkg_prod.filter.skim_features`), so it sees what the
skim would compute on a perfect detector.

>>> from smartbkg_prod.physics.config import SimulationConfig
>>> from smartbkg_prod.physics.generate import generate_events
>>> view = ideal_view(generate_events("bbbar_generic", 5, seed=1), SimulationConfig())
>>> view.n_events
5
"""

from __future__ import annotations

import numpy as np

from smartbkg_prod.physics.config import SimulationConfig
from smartbkg_prod.physics.detector import (
    CHARGED_STABLE,
    MASS,
    MAX_TRACK_RADIUS_MM,
    PHOTON,
    RecoBatch,
    lepton_flip,
)
from smartbkg_prod.physics.events import ParticleBatch, offsets_from_counts


def ideal_view(particles: ParticleBatch, config: SimulationConfig) -> RecoBatch:
    """Tracks and photons of every event as a perfect detector with ``config``'s acceptance
    would see them (module docstring). Vectorised over the whole batch."""
    abs_pdg = np.abs(particles.pdg)
    final = particles.status > 0
    pt = np.hypot(particles.px, particles.py)
    theta = np.degrees(np.arctan2(pt, particles.pz))
    accepted = final & (theta > config.theta_min_deg) & (theta < config.theta_max_deg)
    is_track = (
        accepted
        & np.isin(abs_pdg, CHARGED_STABLE)
        & (np.hypot(particles.x, particles.y) < MAX_TRACK_RADIUS_MM)
        & (pt > config.track_pt_min)
    )
    is_photon = accepted & (abs_pdg == PHOTON) & (particles.energy > config.photon_energy_min)
    rows = np.flatnonzero(is_track | is_photon)
    track = is_track[rows]
    row_pdg = abs_pdg[rows]
    charge = np.where(track, np.sign(particles.pdg[rows]) * lepton_flip(row_pdg), 0).astype(np.int8)
    mass = np.select([row_pdg == code for code in MASS], list(MASS.values()), 0.0)
    px, py, pz = particles.px[rows], particles.py[rows], particles.pz[rows]
    # Tracks take the mass of their (true) hypothesis, as reconstruction does.
    energy = np.where(track, np.sqrt(px**2 + py**2 + pz**2 + mass**2), particles.energy[rows])
    event_of = particles.event_index()[rows]
    return RecoBatch(
        event_number=particles.event_number.copy(),
        offsets=offsets_from_counts(np.bincount(event_of, minlength=particles.n_events)),
        px=px.astype(np.float64),
        py=py.astype(np.float64),
        pz=pz.astype(np.float64),
        energy=energy.astype(np.float64),
        charge=charge,
        pdg_hypothesis=np.where(track, particles.pdg[rows], PHOTON).astype(np.int32),
        mc_index=(rows - particles.offsets[:-1][event_of]).astype(np.int32),
        vx=particles.x[rows].astype(np.float64),
        vy=particles.y[rows].astype(np.float64),
        vz=particles.z[rows].astype(np.float64),
    )
