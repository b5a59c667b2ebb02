"""A FAKE external simulation stage for tests: it misbehaves on purpose.

A real Geant4/basf2 chain cannot be asked to exit non-zero, crash, hang or write a short
file on cue, so this script does each on request and otherwise runs the real built-in
simulation + skim on the files (like `smartbkg-prod stage simulate --skim`).

    python misbehaving_stage.py MODE INPUT OUTPUT SEED ATTEMPT
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

mode, input_path, output_path, seed, attempt = sys.argv[1:6]
print(f"misbehaving stage: mode {mode}, attempt {attempt}, pid {os.getpid()}", file=sys.stderr)
sys.stderr.flush()
# A credential in the log must never reach a report.
print("PANDA_AUTH_ID_TOKEN=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", file=sys.stderr)

if mode == "exit3" or (mode == "flaky" and attempt == "1"):
    print("G4Exception: geometry overlap, giving up", file=sys.stderr)
    sys.exit(3)
if mode == "segv":
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSEGV)
if mode == "hang":
    time.sleep(600)
if mode == "garbage":
    Path(output_path).write_bytes(b"this is not ROOT\n" * 100)
    sys.exit(0)
if mode == "nothing":
    sys.exit(0)

from smartbkg_prod.physics.config import SimulationConfig, SkimConfig  # noqa: E402
from smartbkg_prod.physics.detector import simulate  # noqa: E402
from smartbkg_prod.physics.hepmc import read_hepmc3  # noqa: E402
from smartbkg_prod.physics.recoio import write_stage_output  # noqa: E402
from smartbkg_prod.physics.skim import skim  # noqa: E402

particles = read_hepmc3(Path(input_path))
if mode == "drop-last":
    particles = particles.select(particles.event_number != particles.event_number[-1])
reco = simulate(particles, SimulationConfig(), int(seed))
write_stage_output(
    Path(output_path), particles.event_number, reco=reco, skim=skim(reco, SkimConfig())
)
