"""Hadronic B-tag skim on reconstructed objects (a cut-based stand-in for Belle II's FEI).

Decay chains (charge conjugates implied)::

    π0  -> γ γ                     K_S0 -> π+ π-
    D0  -> K- π+ | K- π+ π0 | K- π+ π+ π- | K_S0 π+ π-
    D+  -> K- π+ π+ | K- π+ π+ π0 | K_S0 π+ | K_S0 π+ π0
    D*+ -> D0 π+,  D*0 -> D0 π0    (ΔM = M(D* ) - M(D0) window)
    B   -> D(*) X,  X = π+ | ρ+ (π+ π0) | a1+ (π+ π+ π-)   (B+ from anti-D(*)0, B0 from D(*)-)

Event-level cuts first (at least ``min_tracks`` tracks, Fox-Wolfram R2 < ``r2_max``), then
every step is a vectorized "combine within the same event" on flat candidate lists
(:func:`_pair_within_events`); a candidate carries the track rows it uses so no track is
counted twice. Kaons need a kaon identification; pion lists take every track (loose, as
the FEI's). Mbc and ΔE are computed in the Υ(4S) frame; an event passes with at least
one B candidate with Mbc > ``mbc_min`` and |ΔE| < ``delta_e_max``; its best candidate is
the one with the smallest |ΔE|. Events are processed in chunks and per-event object lists
are capped, so memory stays bounded.

>>> sorted(MODE_NAMES)[:2]
[0, 1]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

from smartbkg_prod.physics.beams import E_BEAM_CM, lab_to_cm
from smartbkg_prod.physics.config import SkimConfig
from smartbkg_prod.physics.detector import KAON, PHOTON, RecoBatch
from smartbkg_prod.physics.events import offsets_from_counts

M_PI0 = 0.1349768
M_KS = 0.497611
M_PI = 0.13957039
KS_MASS_WINDOW = 0.015  # GeV, K_S0 -> π+ π-
M_D0 = 1.86484
M_DPLUS = 1.86966
DSTAR_PLUS_DELTA_M = 2.01026 - M_D0  # M(D*+) - M(D0)
DSTAR_ZERO_DELTA_M = 2.00685 - M_D0  # M(D*0) - M(D0)
RHO_MASS_RANGE = (0.55, 1.0)  # GeV, ρ+ -> π+ π0
A1_MASS_RANGE = (0.9, 1.6)  # GeV, a1+ -> π+ π+ π-
# The bachelor of a B -> D X decay has ~2.0-2.3 GeV in the Υ(4S) frame; anything far
# outside cannot make a B with Mbc near 5.28 GeV, so it is dropped before combining.
BACHELOR_P_CM_RANGE = (1.2, 2.9)
MIN_BACHELOR_PION_P_CM = 0.15  # GeV, pions inside ρ/a1 bachelors
MIN_HARD_PI0_P = 0.3  # GeV (lab), π0s used in D decays and ρ bachelors
MAX_SLOW_PI0_P = 0.6  # GeV (lab), π0 of D*0 -> D0 π0

# Tag-side D mesons (charge-conjugate modes implied) and B bachelors.
D0_DECAYS = ("K+ pi-", "K+ pi- pi0", "K+ pi- pi- pi+", "K_S0 pi+ pi-")
DPLUS_DECAYS = ("K+ pi- pi-", "K+ pi- pi- pi0", "K_S0 pi-", "K_S0 pi- pi0")
D_TYPES = (
    *(f"anti-D0 -> {decay}" for decay in D0_DECAYS),
    *(f"D- -> {decay}" for decay in DPLUS_DECAYS),
    *(f"D*- -> anti-D0({decay}) pi-" for decay in D0_DECAYS),
    *(f"anti-D*0 -> anti-D0({decay}) pi0" for decay in D0_DECAYS),
)
BACHELORS = ("pi+", "rho+(pi+ pi0)", "a1+(pi+ pi+ pi-)")
_B_NAME = {"anti-D0": "B+", "D-": "B0", "D*-": "B0", "anti-D*0": "B+"}
MODE_NAMES: dict[int, str] = {
    d_type * len(BACHELORS) + bachelor: f"{_B_NAME[d.split()[0]]} -> {d.split()[0]} {b}; {d}"
    for d_type, d in enumerate(D_TYPES)
    for bachelor, b in enumerate(BACHELORS)
}

MAX_TRACKS_PER_EVENT = 20  # highest-momentum tracks used for combinations
MAX_PHOTONS_PER_EVENT = 16  # highest-energy photons used for π0s
MIN_PI0_PHOTON_ENERGY = 0.03  # GeV
CHUNK_EVENTS = 5_000
# Flat per-candidate columns of SkimResult.candidates and the ROOT "candidates" tree.
CANDIDATE_DTYPES: dict[str, type] = {
    "event_number": np.int64,
    "mode": np.int32,
    "mbc": np.float64,
    "delta_e": np.float64,
    "d_mass": np.float64,
    "delta_m": np.float64,
    "b_charge": np.int8,
}
CANDIDATE_COLUMNS = tuple(CANDIDATE_DTYPES)


@dataclass(frozen=True)
class SkimResult:
    passed: np.ndarray  # bool [n_events]
    n_candidates: np.ndarray  # int32 [n_events]
    best_mode: np.ndarray  # int32 [n_events], -1 if none
    best_mbc: np.ndarray  # float64 [n_events], nan if none
    best_delta_e: np.ndarray  # float64 [n_events], nan if none
    candidates: dict[str, np.ndarray]  # flat per B candidate passing all cuts

    @property
    def n_events(self) -> int:
        return len(self.passed)

    @property
    def retention(self) -> float:
        return float(self.passed.mean()) if self.n_events else 0.0

    @classmethod
    def concatenate(cls, results: list[SkimResult]) -> SkimResult:
        return cls(
            passed=np.concatenate([r.passed for r in results]),
            n_candidates=np.concatenate([r.n_candidates for r in results]),
            best_mode=np.concatenate([r.best_mode for r in results]),
            best_mbc=np.concatenate([r.best_mbc for r in results]),
            best_delta_e=np.concatenate([r.best_delta_e for r in results]),
            candidates={
                name: np.concatenate([r.candidates[name] for r in results])
                for name in CANDIDATE_COLUMNS
            },
        )


@dataclass(frozen=True)
class _Candidates:
    """Flat list of (basic or composite) candidates of many events, grouped by event."""

    event: np.ndarray  # int64, position of the event in the chunk
    p4: np.ndarray  # float64 [n, 4]: px, py, pz, E (lab)
    tracks: np.ndarray  # int64 [n, k]: reco rows of the tracks used, -1 for none
    charge: np.ndarray  # int64
    charm: np.ndarray  # int64: +1 for D0, D+, D*+ (and their kaon/pion seeds), -1 for conjugates
    d_mass: np.ndarray  # float64: mass of the D inside (nan before a D exists)
    delta_m: np.ndarray  # float64: M(D*) - M(D0) (nan without a D*)

    def __len__(self) -> int:
        return len(self.event)

    def take(self, rows: np.ndarray) -> _Candidates:
        return _Candidates(*(getattr(self, f.name)[rows] for f in fields(self)))

    def with_values(self, **values: np.ndarray) -> _Candidates:
        return replace(self, **values)

    def mass(self) -> np.ndarray:
        return _mass(self.p4)


def _pair_within_events(
    first: _Candidates, second: _Candidates, n_events: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (i, j) of every pair with first[i] and second[j] in the same event.

    Both lists must be grouped by event; the result is grouped by event too.
    """
    second_offsets = offsets_from_counts(np.bincount(second.event, minlength=n_events))
    per_first = np.diff(second_offsets)[first.event]
    i = np.repeat(np.arange(len(first), dtype=np.int64), per_first)
    shift = second_offsets[:-1][first.event] - (np.cumsum(per_first) - per_first)
    j = np.arange(len(i), dtype=np.int64) + np.repeat(shift, per_first)
    return i, j


def _combine(
    first: _Candidates,
    i: np.ndarray,
    second: _Candidates,
    j: np.ndarray,
    accept: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> _Candidates:
    """first[i] + second[j], kept where ``accept(p4, i)`` holds (checked first: it is cheap)
    and no track is used twice. Charm, D mass and ΔM are inherited from ``first``."""
    p4 = first.p4[i] + second.p4[j]
    if accept is not None:
        keep = accept(p4, i)
        i, j, p4 = i[keep], j[keep], p4[keep]
    first_tracks, second_tracks = first.tracks[i], second.tracks[j]
    # Each side is already free of repeats: compare every track of one side with the other.
    shared = np.zeros(len(i), dtype=bool)
    for column in second_tracks.T:
        shared |= ((first_tracks == column[:, None]) & (column[:, None] >= 0)).any(axis=1)
    distinct = ~shared
    tracks = np.concatenate([first_tracks, second_tracks], axis=1)
    i, j = i[distinct], j[distinct]
    return _Candidates(
        event=first.event[i],
        p4=p4[distinct],
        tracks=tracks[distinct],
        charge=first.charge[i] + second.charge[j],
        charm=first.charm[i],
        d_mass=first.d_mass[i],
        delta_m=first.delta_m[i],
    )


def _mass(p4: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(p4[:, 3] ** 2 - (p4[:, :3] ** 2).sum(axis=1), 0.0))


def _mbc_delta_e(p4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pz_cm, e_cm = lab_to_cm(p4[:, 2], p4[:, 3])
    mbc = np.sqrt(np.maximum(E_BEAM_CM**2 - (p4[:, 0] ** 2 + p4[:, 1] ** 2 + pz_cm**2), 0.0))
    return mbc, e_cm - E_BEAM_CM


def _in_window(values: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    return np.abs(values - centre) < half_width


def _basic_lists(
    reco: RecoBatch, event_lo: int, event_hi: int, event_ok: np.ndarray
) -> tuple[_Candidates, _Candidates, _Candidates]:
    """(kaons, pions, photons) of the events [event_lo, event_hi) where ``event_ok``,
    capped per event."""
    n_events = event_hi - event_lo
    lo, hi = int(reco.offsets[event_lo]), int(reco.offsets[event_hi])
    event = np.repeat(
        np.arange(n_events, dtype=np.int64), np.diff(reco.offsets[event_lo : event_hi + 1])
    )
    p4 = np.stack([reco.px[lo:hi], reco.py[lo:hi], reco.pz[lo:hi], reco.energy[lo:hi]], axis=1)
    hypothesis = np.abs(reco.pdg_hypothesis[lo:hi])
    charge = reco.charge[lo:hi].astype(np.int64)
    momentum = np.sqrt((p4[:, :3] ** 2).sum(axis=1))

    def capped(mask: np.ndarray, cap: int, rank_by: np.ndarray) -> np.ndarray:
        # Keep the `cap` objects with the largest rank_by in each event, grouped by event.
        selected = np.flatnonzero(mask)
        selected = selected[np.lexsort((-rank_by[selected], event[selected]))]
        first_of_event = offsets_from_counts(np.bincount(event[selected], minlength=n_events))
        rank = np.arange(len(selected)) - first_of_event[event[selected]]
        return selected[rank < cap]

    def basic(rows: np.ndarray, track_rows: np.ndarray, charm: np.ndarray) -> _Candidates:
        nan = np.full(len(rows), np.nan)
        return _Candidates(
            event[rows], p4[rows], track_rows[:, None], charge[rows], charm, nan, nan
        )

    usable = event_ok[event]
    tracks = capped(usable & (charge != 0), MAX_TRACKS_PER_EVENT, momentum)
    kaon_rows = tracks[hypothesis[tracks] == KAON]
    # Pion lists take every track (a loose pion selection, as the FEI's): only kaons need
    # a kaon identification.
    pion_rows = tracks
    photon_rows = capped(
        usable & (hypothesis == PHOTON) & (p4[:, 3] > MIN_PI0_PHOTON_ENERGY),
        MAX_PHOTONS_PER_EVENT,
        p4[:, 3],
    )
    # A K- makes a D0 (charm +1); a π+ is the D0's partner in K- π+ (charm +1 too).
    kaons = basic(kaon_rows, kaon_rows + lo, -charge[kaon_rows])
    pions = basic(pion_rows, pion_rows + lo, charge[pion_rows])
    photons = basic(
        photon_rows,
        np.full(len(photon_rows), -1, dtype=np.int64),
        np.zeros(len(photon_rows), np.int64),
    )
    return kaons, pions, photons


def _b_candidates(
    d_cands: _Candidates,
    d_type: int,
    bachelors: list[_Candidates],
    n_events: int,
    config: SkimConfig,
) -> list[dict[str, np.ndarray]]:
    """B -> D X for every bachelor type X with charge opposite to the D's charm; cuts on
    Mbc and ΔE in the Υ(4S) frame."""

    def in_signal_box(p4: np.ndarray, _rows: np.ndarray) -> np.ndarray:
        mbc, delta_e = _mbc_delta_e(p4)
        return (mbc > config.mbc_min) & (np.abs(delta_e) < config.delta_e_max)

    parts = []
    for bachelor_type, bachelor in enumerate(bachelors):
        i, j = _pair_within_events(d_cands, bachelor, n_events)
        # A K_S0 π+ π- D0 (charm 0) takes a bachelor of either charge.
        keep = (d_cands.charm[i] == 0) | (bachelor.charge[j] == -d_cands.charm[i])
        b = _combine(d_cands, i[keep], bachelor, j[keep], in_signal_box)
        mbc, delta_e = _mbc_delta_e(b.p4)
        parts.append(
            {
                "event": b.event,
                "mode": np.full(len(b), d_type * len(BACHELORS) + bachelor_type, dtype=np.int32),
                "mbc": mbc,
                "delta_e": delta_e,
                "d_mass": b.d_mass,
                "delta_m": b.delta_m,
                "b_charge": b.charge.astype(np.int8),
            }
        )
    return parts


def _p_cm(cands: _Candidates) -> np.ndarray:
    pz_cm, _ = lab_to_cm(cands.p4[:, 2], cands.p4[:, 3])
    return np.sqrt(cands.p4[:, 0] ** 2 + cands.p4[:, 1] ** 2 + pz_cm**2)


def _in_range(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return (values > bounds[0]) & (values < bounds[1])


def _reconstruct(
    reco: RecoBatch, event_lo: int, event_hi: int, config: SkimConfig, event_ok: np.ndarray
) -> SkimResult:
    n_events = event_hi - event_lo
    kaons, pions, photons = _basic_lists(reco, event_lo, event_hi, event_ok)
    window = config.d_mass_window

    def pairs(
        first: _Candidates,
        second: _Candidates,
        condition: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        accept: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> _Candidates:
        i, j = _pair_within_events(first, second, n_events)
        if condition is not None:
            keep = condition(i, j)
            i, j = i[keep], j[keep]
        return _combine(first, i, second, j, accept)

    def mass_in(low: float, high: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        return lambda p4, _rows: _in_range(_mass(p4), (low, high))

    def mass_below(high: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        return mass_in(0.0, high)

    # Every K/K_S0 combination below is a D candidate or grows into one by adding
    # particles, which only raises its mass: drop anything above the heaviest D window.
    below_d = mass_below(M_DPLUS + window)

    # π0 -> γγ (each unordered pair once); K_S0 -> π+ π- (no charm: K_S0 π+ π- tags no flavour)
    pi0 = pairs(
        photons,
        photons,
        lambda i, j: j > i,
        mass_in(M_PI0 - config.pi0_mass_window, M_PI0 + config.pi0_mass_window),
    )
    # π0s from D decays and ρ bachelors are hard; the D*0 -> D0 π0 one is slow.
    pi0_momentum = np.linalg.norm(pi0.p4[:, :3], axis=1)
    hard_pi0 = pi0.take(np.flatnonzero(pi0_momentum > MIN_HARD_PI0_P))
    slow_pi0 = pi0.take(np.flatnonzero(pi0_momentum < MAX_SLOW_PI0_P))
    ks = pairs(
        pions,
        pions,
        lambda i, j: (j > i) & (pions.charge[j] == -pions.charge[i]),
        mass_in(M_KS - KS_MASS_WINDOW, M_KS + KS_MASS_WINDOW),
    )
    ks = ks.with_values(charm=np.zeros(len(ks), dtype=np.int64))

    # K- π+ (the pion charge follows the charm), K- π+ π0, K- π+ π+ (each pair once), K- π+ π+ π-
    k_pi = pairs(kaons, pions, lambda i, j: pions.charm[j] == kaons.charm[i], below_d)
    k_pi_pi0 = pairs(k_pi, hard_pi0, None, below_d)
    k_pi_pi = pairs(
        k_pi,
        pions,
        lambda i, j: (pions.charm[j] == k_pi.charm[i]) & (pions.tracks[j, 0] > k_pi.tracks[i, 1]),
        below_d,
    )
    k_3pi = pairs(k_pi_pi, pions, lambda i, j: pions.charm[j] == -k_pi_pi.charm[i], below_d)
    k_pi_pi_pi0 = pairs(k_pi_pi, hard_pi0, None, below_d)
    # K_S0 π+ (charm follows the pion), K_S0 π+ π0, K_S0 π+ π- (π+ first: each combination once)
    ks_pi = pairs(ks, pions, None, below_d)
    ks_pi = ks_pi.with_values(charm=ks_pi.charge)
    ks_pi_pi0 = pairs(ks_pi, hard_pi0, None, below_d)
    ks_pi_pi = pairs(
        ks_pi, pions, lambda i, j: (ks_pi.charge[i] == 1) & (pions.charge[j] == -1), below_d
    )
    ks_pi_pi = ks_pi_pi.with_values(charm=np.zeros(len(ks_pi_pi), dtype=np.int64))

    def d_candidates(cands: _Candidates, mass: float) -> _Candidates:
        d_mass = cands.mass()
        return cands.with_values(d_mass=d_mass).take(
            np.flatnonzero(_in_window(d_mass, mass, window))
        )

    d0_lists = [d_candidates(cands, M_D0) for cands in (k_pi, k_pi_pi0, k_3pi, ks_pi_pi)]
    dplus_lists = [
        d_candidates(cands, M_DPLUS) for cands in (k_pi_pi, k_pi_pi_pi0, ks_pi, ks_pi_pi0)
    ]
    d_lists = [*d0_lists, *dplus_lists]

    def delta_m_in_window(
        d0: _Candidates, nominal: float
    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        return lambda p4, rows: _in_window(
            _mass(p4) - d0.d_mass[rows], nominal, config.dstar_delta_m_window
        )

    # D*+ -> D0 π+ (slow pion charge follows the charm; it fixes the charm of K_S0 π π)
    for d0 in d0_lists:
        dstar = pairs(
            d0,
            pions,
            lambda i, j, d0=d0: (d0.charm[i] == 0) | (pions.charge[j] == d0.charm[i]),
            delta_m_in_window(d0, DSTAR_PLUS_DELTA_M),
        )
        d_lists.append(dstar.with_values(charm=dstar.charge, delta_m=dstar.mass() - dstar.d_mass))
    # D*0 -> D0 π0
    for d0 in d0_lists:
        dstar = pairs(d0, slow_pi0, None, delta_m_in_window(d0, DSTAR_ZERO_DELTA_M))
        d_lists.append(dstar.with_values(delta_m=dstar.mass() - dstar.d_mass))

    # Bachelors: π+, ρ+ -> π+ π0, a1+ -> π+ π+ π- (their "charm" is their charge)
    # Pions of a ρ or a1 bachelor share ~2 GeV: soft ones only add combinatorics.
    hard_pions = pions.take(np.flatnonzero(_p_cm(pions) > MIN_BACHELOR_PION_P_CM))
    rho = pairs(hard_pions, hard_pi0, None, mass_in(*RHO_MASS_RANGE))
    pi_pi = pairs(
        hard_pions,
        hard_pions,
        lambda i, j: (j > i) & (hard_pions.charge[j] == hard_pions.charge[i]),
        mass_below(A1_MASS_RANGE[1] - M_PI),
    )
    a1 = pairs(
        pi_pi,
        hard_pions,
        lambda i, j: hard_pions.charge[j] == -pi_pi.charm[i],
        mass_in(*A1_MASS_RANGE),
    )
    bachelors = [
        cands.take(np.flatnonzero(_in_range(_p_cm(cands), BACHELOR_P_CM_RANGE)))
        for cands in (pions, rho, a1)
    ]

    assert len(d_lists) == len(D_TYPES)
    b_parts = []
    for d_type, d_cands in enumerate(d_lists):
        b_parts.extend(_b_candidates(d_cands, d_type, bachelors, n_events, config))
    return _summarise(b_parts, reco.event_number[event_lo:event_hi])


def _summarise(b_parts: list[dict[str, np.ndarray]], event_number: np.ndarray) -> SkimResult:
    """Per-event decision and best candidate (smallest |ΔE|) from all B candidates."""
    n_events = len(event_number)
    cands = {name: np.concatenate([part[name] for part in b_parts]) for name in b_parts[0]}
    order = np.lexsort((np.abs(cands["delta_e"]), cands["event"]))
    cands = {name: values[order] for name, values in cands.items()}
    n_candidates = np.bincount(cands["event"], minlength=n_events).astype(np.int32)
    passed = n_candidates > 0
    first = offsets_from_counts(n_candidates)[:-1][passed]
    best_mode = np.full(n_events, -1, dtype=np.int32)
    best_mbc = np.full(n_events, np.nan)
    best_delta_e = np.full(n_events, np.nan)
    best_mode[passed] = cands["mode"][first]
    best_mbc[passed] = cands["mbc"][first]
    best_delta_e[passed] = cands["delta_e"][first]
    candidates = {"event_number": event_number[cands.pop("event")].astype(np.int64)}
    candidates.update(cands)
    return SkimResult(passed, n_candidates, best_mode, best_mbc, best_delta_e, candidates)


def skim(reco: RecoBatch, config: SkimConfig) -> SkimResult:
    """Hadronic B-tag skim decision and candidates for every event of ``reco``.

    Events must first pass the event-level cuts (at least ``min_tracks`` tracks and the
    Fox-Wolfram ratio R2 below ``r2_max``, the continuum suppression of Belle II's
    hadronic FEI skims); only those enter the combinatorics.
    """
    n_tracks = np.bincount(reco.event_index()[reco.charge != 0], minlength=reco.n_events)
    event_ok = (n_tracks >= config.min_tracks) & (fox_wolfram_r2(reco) < config.r2_max)
    chunks = [
        _reconstruct(
            reco,
            lo,
            min(lo + CHUNK_EVENTS, reco.n_events),
            config,
            event_ok[lo : lo + CHUNK_EVENTS],
        )
        for lo in range(0, reco.n_events, CHUNK_EVENTS)
    ]
    if not chunks:
        return empty_skim_result(reco.event_number)
    return SkimResult.concatenate(chunks)


def _empty_part() -> dict[str, np.ndarray]:
    part = {
        name: np.zeros(0, dtype=dtype)
        for name, dtype in CANDIDATE_DTYPES.items()
        if name != "event_number"
    }
    return {"event": np.zeros(0, dtype=np.int64), **part}


def empty_skim_result(event_number: np.ndarray) -> SkimResult:
    """A SkimResult in which none of the given events passed (e.g. for 0 events)."""
    return _summarise([_empty_part()], np.asarray(event_number, dtype=np.int64))


def fox_wolfram_r2(reco: RecoBatch) -> np.ndarray:
    """R2 = H2/H0 of all reconstructed objects in the Υ(4S) frame (0 for an empty event).

    Jet-like continuum events have R2 near 1, spherical B Bbar events near 0. Uses
    Σ_ij |p_i||p_j| P2(cos θ_ij) = 3/2 Σ_ab T_ab² - 1/2 (Σ_i |p_i|)² with
    T_ab = Σ_i p_ia p_ib / |p_i|, so the cost is linear in the multiplicity.
    """
    pz_cm, _ = lab_to_cm(reco.pz, reco.energy)
    p3 = (reco.px, reco.py, pz_cm)
    momentum = np.sqrt(reco.px**2 + reco.py**2 + pz_cm**2)
    inverse = np.divide(1.0, momentum, out=np.zeros_like(momentum), where=momentum > 0)
    event = reco.event_index()
    n_events = reco.n_events
    sum_p = np.bincount(event, weights=momentum, minlength=n_events)
    t_squared = np.zeros(n_events)
    for a in range(3):
        for b in range(3):
            t_squared += (
                np.bincount(event, weights=p3[a] * p3[b] * inverse, minlength=n_events) ** 2
            )
    h0 = sum_p**2
    h2 = 1.5 * t_squared - 0.5 * h0
    return np.divide(h2, h0, out=np.zeros(n_events), where=h0 > 0)
