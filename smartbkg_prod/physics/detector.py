"""Fast parametric Belle II-like detector simulation on a :class:`ParticleBatch`.

Stable final-state particles become reconstructed objects:

* charged tracks (e, μ, π, K, p): polar-angle acceptance, production radius inside the
  drift chamber, tracking efficiency with a turn-on at ``track_pt_min``, transverse
  momentum smearing σ(pT)/pT = a·pT ⊕ b/β, particle ID with K/π confusion; the energy
  uses the mass of the assigned hypothesis, as reconstruction does;
* photons: acceptance, efficiency, energy resolution σ(E)/E = s/E^¼ ⊕ c, then the energy
  threshold on the measured energy;
* production vertex smeared by ``vertex_resolution_mm``.

Neutrinos, neutrons and K_L leave nothing. Deterministic for a given seed; no loops.

>>> from smartbkg_prod.physics.config import SimulationConfig
>>> from smartbkg_prod.physics.generate import generate_events
>>> reco = simulate(generate_events("bbbar_generic", 20, seed=1), SimulationConfig(), seed=1)
>>> reco.n_events
20
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartbkg_prod.physics.config import SimulationConfig
from smartbkg_prod.physics.events import EventGrouped, ParticleBatch, offsets_from_counts

PION, KAON, ELECTRON, MUON, PROTON, PHOTON = 211, 321, 11, 13, 2212, 22
MASS = {
    PION: 0.13957039,
    KAON: 0.493677,
    ELECTRON: 0.000510999,
    MUON: 0.1056584,
    PROTON: 0.93827209,
}
CHARGED_STABLE = np.array(sorted(MASS), dtype=np.int32)
# Leptons carry the opposite PDG sign convention to hadrons: e- is +11, π- is -211.
LEPTONS = (ELECTRON, MUON)
TRACK_TURN_ON_WIDTH = 0.01  # GeV: width of the tracking-efficiency turn-on around track_pt_min
MAX_TRACK_RADIUS_MM = 1100.0  # tracks born outside the drift chamber are not reconstructed
LEPTON_PROTON_ID_EFFICIENCY = 0.95  # the rest is identified as a pion


@dataclass(frozen=True)
class RecoBatch(EventGrouped):
    """Reconstructed objects (tracks and photons) of many events, CSR like ParticleBatch."""

    event_number: np.ndarray  # int64 [n_events]
    offsets: np.ndarray  # int64 [n_events+1]
    px: np.ndarray  # float64 [n_obj], GeV, lab frame
    py: np.ndarray
    pz: np.ndarray
    energy: np.ndarray
    charge: np.ndarray  # int8, 0 for photons
    pdg_hypothesis: np.ndarray  # int32, signed: ±211, ±321, ±11, ±13, ±2212, 22
    mc_index: np.ndarray  # int32, index of the MC particle within its event
    vx: np.ndarray  # float64, smeared production vertex (mm)
    vy: np.ndarray
    vz: np.ndarray

    @property
    def n_objects(self) -> int:
        return int(self.offsets[-1])


def lepton_flip(abs_pdg: np.ndarray) -> np.ndarray:
    """-1 for leptons, +1 otherwise: sign(PDG id) = charge * flip."""
    return np.where(np.isin(abs_pdg, LEPTONS), -1, 1)


def _identify(
    abs_pdg: np.ndarray, config: SimulationConfig, rng: np.random.Generator
) -> np.ndarray:
    """Assigned |PDG| hypothesis for true |PDG| (K/π confusion; e, μ, p fall back to π)."""
    draw = rng.random(len(abs_pdg))
    kaon_as_pion = (abs_pdg == KAON) & (draw >= config.kaon_id_efficiency)
    pion_as_kaon = (abs_pdg == PION) & (draw < config.pion_to_kaon_misid)
    other_as_pion = np.isin(abs_pdg, [ELECTRON, MUON, PROTON]) & (
        draw >= LEPTON_PROTON_ID_EFFICIENCY
    )
    hypothesis = abs_pdg.copy()
    hypothesis[kaon_as_pion | other_as_pion] = PION
    hypothesis[pion_as_kaon] = KAON
    return hypothesis


def tracking_efficiency(pt: np.ndarray, config: SimulationConfig) -> np.ndarray:
    """Plateau ``track_efficiency`` with a logistic turn-on centred at ``track_pt_min``."""
    return config.track_efficiency / (
        1.0 + np.exp(-(pt - config.track_pt_min) / TRACK_TURN_ON_WIDTH)
    )


def simulate(particles: ParticleBatch, config: SimulationConfig, seed: int) -> RecoBatch:
    """Reconstructed tracks and photons of every event in ``particles``."""
    rng = np.random.default_rng([seed, 0xDE7EC7])
    abs_pdg = np.abs(particles.pdg)
    final = particles.status > 0
    is_track = final & np.isin(abs_pdg, CHARGED_STABLE)
    is_photon = final & (abs_pdg == PHOTON)

    px, py, pz, energy = particles.px, particles.py, particles.pz, particles.energy
    pt = np.hypot(px, py)
    theta = np.degrees(np.arctan2(pt, pz))
    accepted = (theta > config.theta_min_deg) & (theta < config.theta_max_deg)
    radius = np.hypot(particles.x, particles.y)

    # Tracks ----------------------------------------------------------------------------
    track_rows = np.flatnonzero(is_track & accepted & (radius < MAX_TRACK_RADIUS_MM))
    track_pt = pt[track_rows]
    found = rng.random(len(track_rows)) < tracking_efficiency(track_pt, config)
    track_rows, track_pt = track_rows[found], track_pt[found]
    p_true = np.sqrt(track_pt**2 + pz[track_rows] ** 2)
    beta = p_true / energy[track_rows]
    sigma_rel = np.hypot(config.pt_resolution_a * track_pt, config.pt_resolution_b / beta)
    scale = np.maximum(1.0 + sigma_rel * rng.standard_normal(len(track_rows)), 1e-3)
    track_charge = (np.sign(particles.pdg[track_rows]) * lepton_flip(abs_pdg[track_rows])).astype(
        np.int8
    )
    hypothesis = _identify(abs_pdg[track_rows], config, rng)
    signed_hypothesis = hypothesis * track_charge * lepton_flip(hypothesis)
    hyp_mass = np.select([hypothesis == code for code in MASS], list(MASS.values()))
    t_px, t_py, t_pz = px[track_rows] * scale, py[track_rows] * scale, pz[track_rows] * scale
    t_energy = np.sqrt(t_px**2 + t_py**2 + t_pz**2 + hyp_mass**2)

    # Photons ---------------------------------------------------------------------------
    photon_rows = np.flatnonzero(is_photon & accepted)
    seen = rng.random(len(photon_rows)) < config.photon_efficiency
    photon_rows = photon_rows[seen]
    e_true = energy[photon_rows]
    sigma_e = np.hypot(
        config.photon_resolution_stochastic / np.power(np.maximum(e_true, 1e-6), 0.25),
        config.photon_resolution_constant,
    )
    e_meas = e_true * (1.0 + sigma_e * rng.standard_normal(len(photon_rows)))
    above = e_meas > config.photon_energy_min
    photon_rows, e_meas = photon_rows[above], e_meas[above]
    photon_scale = e_meas / np.maximum(e_true[above], 1e-12)  # direction kept, energy measured

    # Merge, keeping objects grouped by event in MC order ------------------------------
    rows = np.concatenate([track_rows, photon_rows])
    order = np.argsort(rows, kind="stable")
    rows = rows[order]

    def merged(track_values: np.ndarray, photon_values: np.ndarray, dtype: type) -> np.ndarray:
        return np.concatenate([track_values, photon_values]).astype(dtype)[order]

    event_of_particle = particles.event_index()
    event_of = event_of_particle[rows]
    smear = config.vertex_resolution_mm
    n_obj = len(rows)
    return RecoBatch(
        event_number=particles.event_number.copy(),
        offsets=offsets_from_counts(np.bincount(event_of, minlength=particles.n_events)),
        px=merged(t_px, px[photon_rows] * photon_scale, np.float64),
        py=merged(t_py, py[photon_rows] * photon_scale, np.float64),
        pz=merged(t_pz, pz[photon_rows] * photon_scale, np.float64),
        energy=merged(t_energy, e_meas, np.float64),
        charge=merged(track_charge, np.zeros(len(photon_rows)), np.int8),
        pdg_hypothesis=merged(
            signed_hypothesis,
            np.full(len(photon_rows), PHOTON),
            np.int32,
        ),
        mc_index=(rows - particles.offsets[:-1][event_of]).astype(np.int32),
        vx=particles.x[rows] + smear * rng.standard_normal(n_obj),
        vy=particles.y[rows] + smear * rng.standard_normal(n_obj),
        vz=particles.z[rows] + smear * rng.standard_normal(n_obj),
    )
