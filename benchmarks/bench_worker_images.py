"""Worker images built for real: their sizes, what fills them, and their refusal of a GPU
job on this CPU-only host (exit 31).

CPU image: offline (``--network none``) from the host's wheelhouse. GPU image: the same
wheels plus onnxruntime-gpu and its CUDA 13 wheels from PyPI (too large for the test
suite, which builds the GPU Dockerfile with a stand-in onnxruntime): the host's pip
downloads them (through the host's proxy and certificates, which a container lacks) and
they are served to the build as an index on 127.0.0.1. Each image then runs a
one-job campaign with ``filter.device: cuda`` through the docker runtime, without a GPU.

    bash scripts/start-docker-engine.sh /tmp/dk; export DOCKER_HOST=unix:///tmp/dk/docker.sock
    bash scripts/bootstrap-base-image.sh smartbkg-base:local
    nice python benchmarks/bench_worker_images.py --base-image smartbkg-base:local \\
        --out benchmarks/results/worker_image_size.json

The result file keeps what it held before under ``previous`` (the torch images' figures).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from results_file import machine

from smartbkg_prod.backends.docker_runtime import DockerLocalBackend
from smartbkg_prod.containers import build_worker_image
from smartbkg_prod.plan import JobInput, campaign_output_dir, plan_jobs
from smartbkg_prod.report import read_report
from smartbkg_prod.spec import Campaign

CACHE = Path.home() / ".cache" / "smartbkg-prod"
GPU_RUNTIME = "onnxruntime-gpu[cuda,cudnn]==1.31.1"  # as containers/Dockerfile.gpu
MANYLINUX = (
    "manylinux_2_28",
    "manylinux_2_27",
    "manylinux_2_17",
    "manylinux2014",
    "manylinux_2_12",
    "manylinux2010",
    "manylinux_2_5",
    "manylinux1",
)
# CUDA 13 (the runtime wheels onnxruntime-gpu 1.31 links) runs on drivers of the 580
# series and newer (CUDA minor-version compatibility).
GPU_DRIVER = "NVIDIA driver >= 580 (CUDA 13.x runtime from the nvidia-* wheels)"
CONTENTS = (
    "site=$(python3 -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))'); "
    'du -sm "$site"/* "$site"/nvidia/* 2>/dev/null | sort -rn | head -n 12; '
    "du -sm /opt/smartbkg | tail -n 1"
)
PROBE = (
    "import importlib.util as u, onnxruntime as ort; "
    "print(ort.__version__, ort.get_available_providers(), 'torch:', u.find_spec('torch'))"
)


def gpu_wheel_index(directory: Path) -> tuple[ThreadingHTTPServer, str]:
    """PyPI's onnxruntime-gpu wheels with their dependencies, downloaded by the host's pip
    into ``directory`` (kept between runs) and served as a PEP 503 index on 127.0.0.1."""
    if not list(directory.glob("onnxruntime_gpu-*.whl")):
        platforms = [f"--platform={tag}_x86_64" for tag in MANYLINUX]
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
        subprocess.run(
            [*command, "--python-version=3.11", *platforms, "-d", str(directory), GPU_RUNTIME],
            check=True,
        )
    root = directory / "index"
    shutil.rmtree(root, ignore_errors=True)
    for wheel in directory.glob("*.whl"):
        project = root / "simple" / re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        project.mkdir(parents=True, exist_ok=True)
        (project / wheel.name).symlink_to(wheel)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/simple"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def gpu_job(image: str, directory: Path) -> dict:
    campaign = Campaign(
        name="gpu-job",
        process="bbbar_generic",
        events=50,
        events_per_job=50,
        filter={"mode": "cut", "model": "default", "device": "cuda"},
        container={"image": image, "runtime": "docker"},
        outputs={"directory": str(directory)},
    )
    output_dir = campaign_output_dir(campaign)
    jobs = [
        JobInput(job=job, campaign=campaign, output_dir=str(output_dir))
        for job in plan_jobs(campaign)
    ]
    backend = DockerLocalBackend.from_campaign(campaign)
    [handle] = backend.submit(campaign, jobs)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        [state] = backend.poll([handle])
        if state.state not in {"pending", "running"}:
            break
        time.sleep(0.5)
    report = read_report(jobs[0].report_file)
    return {
        "filter": "cut, model default, device cuda; docker runtime without --gpus on a host "
        "without a GPU",
        "exit_code": state.exit_code,
        "error_class": report.error_class,
        "error_message": report.error_message,
        "events_generated": report.events_generated,
    }


def describe(client, reference: str) -> dict:
    def run(command: list[str]) -> str:
        return client.containers.run(
            reference, command, network_mode="none", remove=True, entrypoint=[]
        ).decode()

    return {
        "site_packages_largest_mb": run(["sh", "-c", CONTENTS]).split("\n"),
        "onnxruntime": run(["python3", "-c", PROBE]).strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default="smartbkg-base:local")
    parser.add_argument("--flavour", action="append", choices=["cpu", "gpu"], default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import docker

    client = docker.from_env()
    base = client.images.get(args.base_image)
    document: dict = {"previous": None}
    if args.out and args.out.exists():
        loaded = json.loads(args.out.read_text())
        document = loaded if "current" in loaded else {"previous": loaded}
    current = document.get("current") or {}
    current.update(
        {
            "what": __doc__.split("\n\n")[0],
            "command": " ".join(["python", *sys.argv]),
            "measured_on": "real images on the local Docker engine (scripts/start-docker-engine.sh, "
            f"overlay2 on disk), base {args.base_image} ({base.attrs['Size']:,} bytes), "
            "size = docker image inspect Size (bytes, MB = 1e6)",
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
        }
    )
    for flavour in args.flavour or ["cpu", "gpu"]:
        lines: list[str] = []
        server, buildargs = None, {}
        if flavour == "gpu":
            (CACHE / "gpu-wheels").mkdir(parents=True, exist_ok=True)
            server, index = gpu_wheel_index(CACHE / "gpu-wheels")
            buildargs = {"PIP_INDEX_URL": index}
        try:
            image = build_worker_image(
                flavour,
                tag=f"bench-{flavour}",
                base_image=args.base_image,
                wheelhouse=CACHE / "wheelhouse",
                buildargs=buildargs,
                progress=lines.append,
            )
        finally:
            if server:
                server.shutdown()
        with tempfile.TemporaryDirectory(prefix="sbk-images-") as scratch:
            refusal = gpu_job(image.reference, Path(scratch))
        entry = {
            "reference": image.reference,
            "commit": image.commit,
            "dirty": image.dirty,
            "image_id": image.image_id,
            "size_bytes": image.size_bytes,
            "build_seconds": round(image.build_seconds, 1),
            **describe(client, image.reference),
            "gpu_job_on_cpu_only_host": refusal,
        }
        if flavour == "cpu":
            entry["target_bytes"] = 350_000_000
            entry["meets_target"] = image.size_bytes <= 350_000_000
        else:
            entry["runtime"] = f"{GPU_RUNTIME} from PyPI"
            entry["downloaded_wheels_mb"] = round(
                sum(path.stat().st_size for path in (CACHE / "gpu-wheels").glob("*.whl")) / 1e6
            )
            entry["needs"] = GPU_DRIVER
        current[flavour] = entry
        print(json.dumps(entry, indent=1))
    document["current"] = current
    if args.out:
        args.out.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
