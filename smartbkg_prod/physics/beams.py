"""SuperKEKB beam kinematics: 7 GeV e- along +z, 4 GeV e+ along -z (no crossing angle).

The collision frame (Υ(4S) rest frame) moves along +z with βγ = 3/√112 ≈ 0.283.

>>> round(SQRT_S, 3), round(BETA_GAMMA, 3)
(10.583, 0.283)
"""

from __future__ import annotations

import math

import numpy as np

E_ELECTRON = 7.0  # GeV, along +z
E_POSITRON = 4.0  # GeV, along -z
P_TOTAL_Z = E_ELECTRON - E_POSITRON
E_TOTAL = E_ELECTRON + E_POSITRON
SQRT_S = math.sqrt(E_TOTAL**2 - P_TOTAL_Z**2)
E_BEAM_CM = SQRT_S / 2  # beam energy in the CM frame, the Mbc constraint
BETA_GAMMA = P_TOTAL_Z / SQRT_S
GAMMA = E_TOTAL / SQRT_S
BETA = P_TOTAL_Z / E_TOTAL


def boost_z(pz: np.ndarray, energy: np.ndarray, beta_gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Boost (pz, E) along z by ``beta_gamma`` (positive: into a frame moving towards -z)."""
    gamma = math.sqrt(1.0 + beta_gamma * beta_gamma)
    return gamma * pz + beta_gamma * energy, gamma * energy + beta_gamma * pz


def lab_to_cm(pz: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pz*, E*) in the Υ(4S) rest frame from lab-frame (pz, E)."""
    return boost_z(pz, energy, -BETA_GAMMA)


def cm_to_lab(pz: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lab-frame (pz, E) from CM-frame (pz*, E*)."""
    return boost_z(pz, energy, BETA_GAMMA)
