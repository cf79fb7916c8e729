"""Studio over loopback: delivered fps, control-to-frame latency, chunk time, memory with 8 clients.

    .venv/bin/python benchmarks/studio.py [--seconds 10]

Starts the test server of tests/test_studio.py (a tiny random DiT at 128x96 with the PCA linear
codec, one torch thread) in a subprocess, or with --shipped the real `motionstream studio` on the
shipped weights (weights/student-tiny-cpu at 256x144, 2 torch threads), connects 8 WebSocket clients that all ask to start
(one streams, seven wait in the queue), drags with the streaming one (a pointer sample every
50 ms, stamped with `seq`) and prints from one run:
  - frames delivered per second at the client (the stream's fps is 16),
  - control-to-frame latency: a pointer sample sent -> the first frame whose ack_seq covers it
    (p50 / p95; at least one chunk by design, since a chunk's motion is fixed when it starts),
  - chunk generation time gen_ms (p50 / p95), JPEG bytes per frame,
  - server RSS after warm-up and at the end,
  - the 1-minute load average before and after (the 2 cores are shared: figures are only
    meaningful next to it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_studio import Client, ServerProcess, sample_id  # noqa: E402

CLIENTS = 8
SAMPLE_EVERY_S = 0.05
WARMUP_S = 2.0


async def measure(server: ServerProcess, seconds: float) -> dict:
    image = sample_id(server)
    clients = [await Client.connect(server.ws_url) for _ in range(CLIENTS)]
    for c in clients:
        await c.send(type="start", image=image, prompt="benchmark")
    streamer = clients[0]
    await streamer.expect("started")
    await asyncio.gather(*(c.pump(WARMUP_S) for c in clients))
    rss_start = server.rss_mb()
    sent: dict[int, float] = {}
    latencies: list[float] = []
    frames_at_start = len(streamer.frames)
    await streamer.send(type="pointer_down", id=1, x=40.0, y=48.0, size=32.0, spacing=8.0)
    t0 = time.monotonic()
    acked = -1
    k = 0
    while time.monotonic() - t0 < seconds:
        k += 1
        x = 40.0 + 30.0 * np.sin(k * SAMPLE_EVERY_S)
        await streamer.send(type="pointer_move", id=1, x=float(x), y=48.0)
        sent[streamer.seq] = time.monotonic()
        end = time.monotonic() + SAMPLE_EVERY_S
        n_before = len(streamer.frames)
        await asyncio.gather(streamer.pump(SAMPLE_EVERY_S), *(c.pump(0.0) for c in clients[1:]))
        now = time.monotonic()
        for head, _ in streamer.frames[n_before:]:
            ack = head["ack_seq"]
            if ack is not None and ack > acked:
                latencies += [now - sent.pop(s) for s in sorted(sent) if s <= ack]
                acked = ack
        await asyncio.sleep(max(0.0, end - time.monotonic()))
    elapsed = time.monotonic() - t0
    heads = [h for h, _ in streamer.frames[frames_at_start:]]
    gen = [h["gen_ms"] for h in heads if h["flags"] & 2]
    jpeg_bytes = [len(j) for _, j in streamer.frames[frames_at_start:]]
    queued_frames = sum(len(c.frames) for c in clients[1:])
    for c in clients:
        await c.ws.close()
    return {"fps": len(heads) / elapsed, "latency": np.array(latencies) * 1000, "gen_ms": np.array(gen),
            "jpeg_bytes": float(np.mean(jpeg_bytes)) if jpeg_bytes else 0.0, "rss_start": rss_start,
            "rss_end": server.rss_mb(), "queued_frames": queued_frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shipped", action="store_true",
                    help="benchmark `motionstream studio` on the shipped weights instead of the tiny test server")
    args = ap.parse_args()
    command = None
    if args.shipped:
        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "motionstream", "studio", "--port", str(port), "--threads", "2"]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), command)
        model = server.health().get("model", "?")
        try:
            r = asyncio.run(measure(server, args.seconds))
        finally:
            server.stop()
    load1 = os.getloadavg()[0]
    lat, gen = r["latency"], r["gen_ms"]
    what = ("`motionstream studio` on the shipped weights, 2 torch threads" if args.shipped
            else "tiny random DiT 128x96, 1 torch thread")
    print(f"studio over loopback, {CLIENTS} clients (1 streaming, {CLIENTS - 1} queued), {args.seconds:.0f} s, {what}")
    if args.shipped:
        print(f"  model                  {model}")
    print(f"  delivered fps          {r['fps']:.1f} (stream fps 16)")
    if len(lat):
        print(f"  control->frame latency p50 {np.percentile(lat, 50):.0f} ms  p95 {np.percentile(lat, 95):.0f} ms "
              f"({len(lat)} samples)")
    if len(gen):
        print(f"  chunk generation       p50 {np.percentile(gen, 50):.0f} ms  p95 {np.percentile(gen, 95):.0f} ms "
              f"(chunk = 12 frames = 750 ms of video)")
    print(f"  JPEG per frame         {r['jpeg_bytes'] / 1024:.1f} KiB")
    print(f"  frames sent to queued clients {r['queued_frames']}")
    print(f"  server RSS             {r['rss_start']:.0f} MiB after warm-up -> {r['rss_end']:.0f} MiB at the end")
    print(f"  load average (1 min)   {load0:.2f} before, {load1:.2f} after")
    print(json.dumps({"fps": round(r["fps"], 2), "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                      "gen_p50_ms": float(np.percentile(gen, 50)) if len(gen) else None,
                      "rss_growth_mb": round(r["rss_end"] - r["rss_start"], 1)}))


if __name__ == "__main__":
    main()
