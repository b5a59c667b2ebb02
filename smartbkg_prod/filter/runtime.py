"""The worker's scorer: the exported model on ONNX Runtime, inputs built in numpy (no torch).

:func:`open_scorer` checks the model (:func:`~smartbkg_prod.filter.artifact.load_card`),
creates one inference session with ``threads`` intra-op threads (the job's
``resources.cores``: two jobs on one machine must not each take every core), and checks
that the session's inputs are the ones the sidecar records and the model kind's builder
makes. :func:`score_events` feeds it chunks of events by input name.

On CPU events are scored in cache-sized chunks (the per-node layers are memory-bound:
256 events of ~40 particles keep the activations in cache; 128 and 512 were 4-6 % slower
in ``benchmarks/bench_filter.py``); on CUDA in chunks of ``batch_size`` events.

>>> resolve_providers("cpu")
(['CPUExecutionProvider'], 'cpu')
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from smartbkg_prod.filter.artifact import ModelCard, load_card, model_error
from smartbkg_prod.filter.errors import FilterDeviceError
from smartbkg_prod.filter.inputs import (
    EVENT_FEATURES,
    INPUT_BUILDERS,
    InputBuilder,
    check_unknown_fraction,
)
from smartbkg_prod.filter.skim_features import IdealSkim, model_event_features
from smartbkg_prod.physics.events import ParticleBatch

CPU_CHUNK_EVENTS = 256
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def resolve_providers(requested: str) -> tuple[list[str], str]:
    """``auto`` -> CUDA when this onnxruntime has it, else CPU; ``cuda`` without it ->
    FilterDeviceError (whether a GPU is really usable shows when the session is made)."""
    if requested not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"unknown device {requested!r} (allowed: auto, cpu, cuda)")
    has_cuda = CUDA in onnxruntime.get_available_providers()
    if requested == "cpu" or (requested == "auto" and not has_cuda):
        return [CPU], "cpu"
    if not has_cuda:
        raise FilterDeviceError(
            f"filter.device 'cuda' needs onnxruntime with CUDA (the GPU worker image); this "
            f"one ({onnxruntime.__version__}) has {onnxruntime.get_available_providers()}; "
            "run the GPU image on a GPU slot or set filter.device: cpu",
        )
    return [CUDA, CPU], "cuda:0"


@dataclass
class OnnxScorer:
    """One model's inference session and the builder of its inputs."""

    card: ModelCard
    session: onnxruntime.InferenceSession
    build: InputBuilder
    device_name: str
    chunk_events: int
    # The hybrid kind's per-event rows (events -> float32[n_events, width]); None otherwise.
    event_features: Callable[[ParticleBatch], np.ndarray] | None = None

    @property
    def sha256(self) -> str:
        """sha256 of the ``.onnx`` file that runs (checked against the sidecar)."""
        return self.card.onnx_sha256


def open_scorer(
    model: str | Path | None,
    device: str = "auto",
    threads: int = 1,
    batch_size: int = 4096,
    ideal_skim: IdealSkim | None = None,
) -> OnnxScorer:
    """Check ``model`` and open its session on ``device`` with ``threads`` CPU threads.

    A hybrid model's event features come from ``ideal_skim`` (the worker passes its
    campaign's skim stage; default: the built-in skim with default configurations)."""
    card = load_card(model)
    if card.kind not in INPUT_BUILDERS:
        raise model_error(
            card.path,
            f"model kind {card.kind!r} has no input builder in this worker "
            f"(smartbkg-prod: {sorted(INPUT_BUILDERS)})",
            "use a worker image as new as the model",
        )
    build, builder_inputs = INPUT_BUILDERS[card.kind]
    providers, device_name = resolve_providers(device)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: a CUDA failure is reported below
    if CUDA in providers:
        session, cuda_problem = _cuda_session(card, options, providers)
        if session is None:
            session = _session(card, options, [CPU])  # a broken model is MODEL_LOAD, not GPU
            if device == "cuda":
                raise FilterDeviceError(
                    f"filter.device 'cuda' needs a usable CUDA GPU: {cuda_problem}; run on a "
                    "GPU slot (docker --gpus, apptainer --nv) or set filter.device: cpu"
                )
            device_name = "cpu"
    else:
        session = _session(card, options, providers)
    session_inputs = tuple(node.name for node in session.get_inputs())
    # Compared as sorted lists: a name recorded twice or missing is a mismatch too.
    if not sorted(session_inputs) == sorted(card.input_names) == sorted(builder_inputs):
        raise model_error(
            card.path,
            f"inputs of {card.onnx_path.name} {list(session_inputs)}, recorded "
            f"{list(card.input_names)}, built for kind {card.kind!r} {list(builder_inputs)} "
            "differ",
            "export the model again with the `train` of this version",
        )
    chunk = batch_size if device_name.startswith("cuda") else min(batch_size, CPU_CHUNK_EVENTS)
    event_features = model_event_features(card.metadata, ideal_skim)
    if (event_features is None) == (EVENT_FEATURES in card.input_names):
        raise model_error(
            card.path,
            f"the network's event features and the ONNX inputs {list(card.input_names)} differ",
            "export the model again with the `train` of this version",
        )
    return OnnxScorer(card, session, build, device_name, chunk, event_features)


def _session(
    card: ModelCard, options: onnxruntime.SessionOptions, providers: list[str]
) -> onnxruntime.InferenceSession:
    try:
        # No silent fallback to CPU (onnxruntime's default prints it on stdout and goes on).
        return onnxruntime.InferenceSession(
            str(card.onnx_path), options, providers=providers, enable_fallback=0
        )
    except Exception as error:  # onnxruntime raises its own types for unreadable models
        raise model_error(
            card.path,
            f"{card.onnx_path.name} is not a model ONNX Runtime {onnxruntime.__version__} "
            f"can load ({type(error).__name__}: {str(error).strip()[:300]})",
            "copy the model files again, or retrain with `smartbkg-prod train SPEC`",
        ) from None


def _cuda_session(
    card: ModelCard, options: onnxruntime.SessionOptions, providers: list[str]
) -> tuple[onnxruntime.InferenceSession | None, str]:
    """A session on the CUDA provider, or None and why not (no driver, no device)."""
    problem = cuda_driver_problem()
    if problem:
        return None, problem
    try:
        session = onnxruntime.InferenceSession(
            str(card.onnx_path), options, providers=providers, enable_fallback=0
        )
    except Exception as error:  # the CUDA provider's own errors
        return None, f"ONNX Runtime's CUDA provider failed ({str(error).strip()[:300]})"
    if session.get_providers()[0] != CUDA:
        return None, "ONNX Runtime could not start its CUDA provider"
    return session, ""


def cuda_driver_problem() -> str:
    """Why this process cannot use an NVIDIA GPU ('' when the driver library loads): a GPU
    image started without ``--gpus`` / ``--nv`` has the CUDA runtime but no driver."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1) in this runtime"
    return ""


def require_cuda() -> None:
    """FilterDeviceError (exit 31) when this runtime cannot run the filter on CUDA: the
    worker's check before it generates the events of a ``filter.device: cuda`` job."""
    resolve_providers("cuda")
    problem = cuda_driver_problem()
    if problem:
        raise FilterDeviceError(
            f"filter.device 'cuda' needs a usable CUDA GPU: {problem}; run on a GPU slot "
            "(docker --gpus, apptainer --nv) or set filter.device: cpu"
        )


def score_events(scorer: OnnxScorer, particles: ParticleBatch) -> np.ndarray:
    """Pass-probability scores (float32[n_events]) of every event.

    Raises :class:`ModelLoadError` when more than the model's allowed fraction of
    particles carry PDG codes outside its vocabulary (it was trained on another process).
    """
    n_events = particles.n_events
    scores = np.empty(n_events, dtype=np.float32)
    n_unknown = 0
    # Skim features: one pass over the whole batch (the skim is vectorised over events).
    rows = None if scorer.event_features is None else scorer.event_features(particles)
    for start in range(0, n_events, scorer.chunk_events):
        stop = min(start + scorer.chunk_events, n_events)
        inputs = scorer.build(particles.event_range(start, stop), scorer.card.encoding)
        if rows is not None:
            inputs.arrays[EVENT_FEATURES] = rows[start:stop]
        n_unknown += inputs.n_unknown_pdg
        try:
            (scores[start:stop],) = scorer.session.run([scorer.card.output_name], inputs.arrays)
        except Exception as error:  # onnxruntime's own error types
            if scorer.device_name.startswith("cuda"):
                raise FilterDeviceError(
                    f"CUDA error in the filter on {scorer.device_name}: {error}; "
                    "lower filter.batch_size if it ran out of memory"
                ) from None
            raise
    card = scorer.card
    check_unknown_fraction(
        card.path, card.encoding, card.max_unknown_fraction, n_unknown, particles
    )
    return scores


def onnx_filter_ms(scorer: OnnxScorer, particles: ParticleBatch, repeats: int = 3) -> float:
    """Filter cost per event (input building, skim features included) of ``scorer``, best
    of ``repeats``."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        score_events(scorer, particles)
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / max(particles.n_events, 1)
