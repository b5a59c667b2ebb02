"""Cached event samples for the bias toy study (benchmarks/bench_bias_toys.py).

Two independent generic B B̄ samples, made in chunks of ``CHUNK_EVENTS`` with the
in-process chain (generate → fast simulation → skim): ``filtered`` (the events the filter
decides on) and ``reference`` (the unfiltered sample, other seeds). Chunks are written as
labelled-event ``.npz`` files (particles included, so any model can score them) under a
cache folder outside the repository; a chunk already there is reused.

    nice python benchmarks/bias_samples.py --cache /work/cache-bias --events 800000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from smartbkg_prod.filter.data import ChainSettings, LabelledEvents
from smartbkg_prod.physics.config import SimulationConfig, SkimConfig

CHUNK_EVENTS = 50_000
# Generator seeds of chunk i: FIRST_SEED[sample] + i (the two samples never share a seed).
FIRST_SEED = {"filtered": 515_000, "reference": 616_000}


@dataclass(frozen=True)
class Chunk:
    first_event: int
    n_events: int
    seed: int


def chunks(sample: str, n_events: int) -> list[Chunk]:
    """The chunks of ``sample`` covering its first ``n_events`` events."""
    return [
        Chunk(first, min(CHUNK_EVENTS, n_events - first), FIRST_SEED[sample] + number)
        for number, first in enumerate(range(0, n_events, CHUNK_EVENTS))
    ]


def chunk_path(cache: Path, sample: str, chunk: Chunk) -> Path:
    return cache / sample / f"seed{chunk.seed}_first{chunk.first_event}_n{chunk.n_events}.npz"


def make_sample(cache: Path, sample: str, n_events: int, process: str = "bbbar_generic") -> None:
    """Generate, simulate and skim every chunk of ``sample`` not cached yet."""
    chain = ChainSettings(process, SimulationConfig(), SkimConfig())
    (cache / sample).mkdir(parents=True, exist_ok=True)
    for chunk in chunks(sample, n_events):
        path = chunk_path(cache, sample, chunk)
        if path.exists():
            continue
        started = time.perf_counter()
        events = chain.run(chunk)
        partial = path.with_suffix(".partial.npz")
        events.save(partial)
        partial.rename(path)
        print(
            f"{sample} {path.name}: {events.n_events} events, {int(events.passed.sum())} skimmed, "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )


def load_sample(cache: Path, sample: str, n_events: int):
    """The cached chunks of ``sample`` (each a :class:`LabelledEvents`), in order."""
    for chunk in chunks(sample, n_events):
        path = chunk_path(cache, sample, chunk)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run benchmarks/bias_samples.py first")
        yield LabelledEvents.load(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/work/cache-bias"))
    parser.add_argument("--events", type=int, default=800_000)
    args = parser.parse_args()
    for sample in ("filtered", "reference"):
        make_sample(args.cache, sample, args.events)


if __name__ == "__main__":
    main()
