"""Load test of ``lookalike serve``: micro-batching on against off, measured in the same run.

A real uvicorn server (``lookalike serve``, its own process) on 127.0.0.1 holds an index of
Caltech-101 images embedded with EfficientNet-Lite0; ``--clients`` asyncio clients (httpx) each
upload one Caltech image after another for ``--seconds`` seconds. The same load runs against
a server with micro-batching on (``--batch-max``, ``--batch-wait-ms``) and one with it off
(batch size 1); both run side by side and are loaded in alternating windows (``--rounds``), so
whatever else the machine does weighs on both alike. The script prints requests per second,
p50/p95/p99 latency, errors, the mean batch size the server reported in /metrics, and the
ratios.

    python benchmarks/serve_load.py [--caltech ../shared/data/caltech101] [--classes 20]
        [--per-class 60] [--clients 50] [--seconds 60] [--rounds 4] [--device auto]
        [--work runs/serve_load]

The index is built once in ``--work`` (embedding ``--classes`` classes of at most
``--per-class`` images each) and reused by later runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CALTECH = REPO.parent / "shared" / "data" / "caltech101"
MODEL = "efficientnet_lite:lite0"
SKIPPED_CLASSES = ("BACKGROUND_Google",)


@dataclass
class LoadReport:
    """What one load run measured.

    Attributes:
        clients: Concurrent clients.
        seconds: Wall time from the first request to the last answer.
        latencies: Seconds per successful request.
        errors: Failed requests (status >= 400, or no answer), with their first messages.
    """

    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in milliseconds."""
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


async def run_load(
    url: str,
    images: Sequence[tuple[str, bytes]],
    clients: int,
    seconds: float,
    k: int = 10,
    timeout: float = 120.0,
) -> LoadReport:
    """``clients`` clients, each posting image searches back to back for ``seconds`` seconds.

    Args:
        url: The server's base URL.
        images: ``(name, bytes)`` of the query images, used in turn.
        clients: Concurrent clients (one connection each).
        seconds: How long new requests are started; answers still due are awaited.
        k: Results per query.
        timeout: Seconds a request may take before it counts as an error.
    """
    report = LoadReport(clients=clients, seconds=0.0)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        started = time.perf_counter()
        stop_at = started + seconds

        async def one_client(number: int) -> None:
            turn = number
            while time.perf_counter() < stop_at:
                name, data = images[turn % len(images)]
                turn += clients
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        "/api/search/image",
                        files=[("images", (name, data, "image/jpeg"))],
                        data={"k": str(k)},
                    )
                except httpx.HTTPError as error:
                    report.errors.append(f"{type(error).__name__}: {error}")
                    continue
                if response.status_code != 200:
                    report.errors.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                report.latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one_client(number) for number in range(clients)))
        report.seconds = time.perf_counter() - started
    return report


def batch_totals(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the image batch-size histogram on a /metrics page (zeros before any)."""
    found = []
    for name in ("sum", "count"):
        pattern = rf'lookalike_batch_size_{name}{{encoder="image"}} ([0-9.e+]+)'
        match = re.search(pattern, metrics_text)
        found.append(float(match.group(1)) if match else 0.0)
    return found[0], found[1]


def caltech_subset(root: Path, classes: int, per_class: int) -> list[Path]:
    """The first ``per_class`` images (sorted) of the first ``classes`` classes (sorted)."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in SKIPPED_CLASSES)
    chosen = names[:classes]
    return [path for name in chosen for path in sorted((root / name).glob("*.jpg"))[:per_class]]


def build_caltech_index(root: Path, work: Path, classes: int, per_class: int) -> Path:
    """Embed a Caltech subset with Lite0 and index it (reused when already built)."""
    from lookalike import ModelSpec, build_index, embed_images
    from lookalike.data.records import ImageRecord, ImageSet
    from lookalike.embed.spec import EmbedSpec

    index_dir = work / f"index_{classes}x{per_class}"
    if (index_dir / "index.json").is_file():
        return index_dir
    paths = caltech_subset(root, classes, per_class)
    records = [
        ImageRecord(id=path.relative_to(root).as_posix(), path=path, label=path.parent.name)
        for path in paths
    ]
    print(f"embedding {len(records)} Caltech images ({classes} classes) with {MODEL} ...")
    started = time.perf_counter()
    gallery = embed_images(
        ImageSet(records, "gallery"), None, model=ModelSpec(MODEL, pool="gap"),
        embed=EmbedSpec(batch_size=32, num_workers=2, device="cpu"),
    )  # fmt: skip
    print(f"embedded in {time.perf_counter() - started:.0f} s")
    build_index(gallery, index_dir, kind="flat", metric="cosine")
    return index_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    index_dir: Path, batch_max: int, batch_wait_ms: float, device: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``lookalike serve`` in a subprocess; returns it and its URL once /readyz answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "lookalike.cli.main", "serve", str(index_dir), "--model", MODEL,
        "--pool", "gap", "--device", device, "--port", str(port), "--batch-max", str(batch_max),
        "--batch-wait-ms", str(batch_wait_ms), "--log-level", "warning", "--max-k", "100",
        "--state-dir", str(log.with_suffix(".state")),  # one state folder per server
    ]  # fmt: skip
    environment = {**os.environ, "LOOKALIKE_SERVE_TOKEN": ""}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}); see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the server did not become ready; see {log}")


@dataclass
class Setting:
    """One server configuration under test, and what was measured against it."""

    name: str
    batch_max: int
    batch_wait_ms: float
    report: LoadReport | None = None
    batches: list[float] = field(default_factory=list)


def compare(
    index_dir: Path,
    images: Sequence[tuple[str, bytes]],
    settings: Sequence[Setting],
    clients: int,
    seconds: float,
    rounds: int,
    device: str,
    work: Path,
) -> None:
    """Start one server per setting, then load them in turn, ``rounds`` windows each.

    Alternating short windows rather than one long run per setting spreads whatever else the
    machine is doing over every setting alike. Each setting's report joins its windows.
    """
    servers = []
    try:
        for setting in settings:
            log = work / f"server_batch{setting.batch_max}.log"
            servers.append(start_server(index_dir, setting.batch_max, setting.batch_wait_ms,
                                        device, log))  # fmt: skip
        for _, url in servers:  # warm-up: the first batches of each shape are slower
            asyncio.run(run_load(url, images, clients=min(clients, 16), seconds=3))
        for _ in range(rounds):
            for setting, (_, url) in zip(settings, servers):
                before = httpx.get(f"{url}/metrics", timeout=30).text
                window = asyncio.run(run_load(url, images, clients, seconds / rounds))
                after = httpx.get(f"{url}/metrics", timeout=30).text
                setting.batches.append(_batch_delta(before, after))
                setting.report = _joined(setting.report, window)
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(60)


def _joined(total: LoadReport | None, window: LoadReport) -> LoadReport:
    if total is None:
        return window
    return LoadReport(
        clients=window.clients,
        seconds=total.seconds + window.seconds,
        latencies=total.latencies + window.latencies,
        errors=total.errors + window.errors,
    )


def _batch_delta(before: str, after: str) -> float:
    """Mean batch size of the measured window (the warm-up's batches subtracted)."""
    (sum_before, count_before), (sum_after, count_after) = batch_totals(before), batch_totals(after)
    count = count_after - count_before
    return (sum_after - sum_before) / count if count else float("nan")


def query_images(index_dir: Path, count: int) -> list[tuple[str, bytes]]:
    """``count`` gallery images, spread over the index, as query uploads."""
    import pandas as pd

    paths = pd.read_parquet(index_dir / "records.parquet")["path"].tolist()
    chosen = np.linspace(0, len(paths) - 1, num=min(count, len(paths))).astype(int)
    return [(Path(paths[i]).name, Path(paths[i]).read_bytes()) for i in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--caltech", type=Path, default=DEFAULT_CALTECH)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch-max", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--queries", type=int, default=200, help="Distinct query images.")
    parser.add_argument("--rounds", type=int, default=4, help="Alternating windows per setting.")
    parser.add_argument("--device", default="auto", help="Where the servers run the model.")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "serve_load")
    args = parser.parse_args()
    if not args.caltech.is_dir():
        raise SystemExit(f"error: {args.caltech} is absent; pass --caltech PATH")
    args.work.mkdir(parents=True, exist_ok=True)
    index_dir = build_caltech_index(args.caltech, args.work, args.classes, args.per_class)
    images = query_images(index_dir, args.queries)
    print(
        f"index {index_dir} ({args.classes} classes, <= {args.per_class} images each); "
        f"{args.clients} clients x {args.seconds:.0f} s, {len(images)} query images; "
        f"{os.cpu_count()} CPUs, device {args.device}, {args.rounds} alternating windows each"
    )
    settings = [
        Setting(f"batching on ({args.batch_max}, {args.batch_wait_ms:g} ms)", args.batch_max,
                args.batch_wait_ms),
        Setting("batching off (1)", 1, 0.0),
    ]  # fmt: skip
    compare(index_dir, images, settings, args.clients, args.seconds, args.rounds, args.device,
            args.work)  # fmt: skip
    for setting in settings:
        report = setting.report
        assert report is not None
        print(
            f"{setting.name:<28} {report.requests_per_second:7.1f} req/s  "
            f"p50 {report.percentile(50):6.0f} ms  p95 {report.percentile(95):6.0f} ms  "
            f"p99 {report.percentile(99):6.0f} ms  errors {len(report.errors)}  "
            f"requests {len(report.latencies)}  mean batch {np.nanmean(setting.batches):.1f}"
        )
        for error in report.errors[:3]:
            print(f"  error: {error}")
    on, off = (setting.report for setting in settings)
    assert on is not None and off is not None
    print(
        f"ratio on/off: throughput x{on.requests_per_second / off.requests_per_second:.2f}, "
        f"p50 latency x{on.percentile(50) / off.percentile(50):.2f}, "
        f"p99 latency x{on.percentile(99) / off.percentile(99):.2f}"
    )


if __name__ == "__main__":
    main()
