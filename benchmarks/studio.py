"""Studio over loopback: delivered fps, control-to-frame latency, chunk time, memory with 8 clients.

    .venv/bin/python benchmarks/studio.py [--seconds 10]

Starts the test server of tests/app/test_studio.py (a tiny random DiT at 128x96 with the PCA linear
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

    .venv/bin/python benchmarks/studio.py --browser [--seconds 15] [--threads 2]

--browser measures drag to pixel where the user sees it: the real page in Debian's Chromium
(Playwright with executable_path=/usr/bin/chromium, never `playwright install`; the launch of
tests/app/test_browser_studio.py) against `motionstream studio` on the shipped weights
(weights/student-tiny-cpu at 256x144, --threads 2), browser and server on this machine's cores.
After a warm-up it drags on the video with one pointer sample every 50 ms and reports:
  - frames painted per second (the page's own count: a paint = the first requestAnimationFrame
    after a new frame was drawn, app.js notePaint) and the share of whole 1-second windows that
    paint at least 16 frames;
  - pointer event (its event.timeStamp) to the first painted frame whose ack_seq covers it,
    p50 / p95 (the HUD's latency);
  - chunk generation time p50 / p95 (gen_ms of each chunk's first frame, as the page received it);
  - the browser's and the server's CPU share (their process trees' utime + stime from /proc over
    the drag, as % of the machine and in cores);
  - the fp32 matmul peak on the server's torch thread count, measured in the same run
    (motionstream/stream/perf.py matmul_peak_gflops, once the server's warm-up stream is done), painted
    fps per GFLOP/s of it, and the load average.

--max-isa avx2 / --cores N (both modes): the run restarts with torch, MKL, oneDNN and OpenVINO capped to
AVX2 and pinned to N CPUs, server and browser included (stream/perf.emulate_weaker_cpu): a weaker
machine's studio, emulated on this one. Both modes wait for the server's warm-up stream first.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "app"))
from test_studio import Client, ServerProcess, sample_id  # noqa: E402

from motionstream.stream.perf import (add_emulation_args, apply_emulation_args, emulation_note,  # noqa: E402
                                     matmul_peak_gflops)

CLIENTS = 8
SAMPLE_EVERY_S = 0.05
WARMUP_S = 2.0
WARM_UP_TIMEOUT_S = 120.0           # the server's warm-up stream: seconds; this is a hang
REAL_TIME_FPS = 16                  # a 1-second window that paints this many frames is real time
PAINT_WINDOW_S = 1.0
WARMUP_PAINTS = 24                  # the browser run starts measuring after this many painted frames
DRAIN_S = 10.0                      # after the drag: wait this long at most for its last samples to paint
DRAG_CENTRE = (128.0, 72.0)         # stream pixels (256x144): the middle of the picture ...
DRAG_AMPLITUDE = (48.0, 24.0)       # ... swept this far in x and y ...
DRAG_PERIOD_S = 3.0                 # ... once every this many seconds (a slow figure of eight)
BROWSER_WAIT_MS = 180_000           # page waits (the shipped model's text encoder loads in ~25 s)
SHIPPED_THREADS = 2


async def measure(server: ServerProcess, seconds: float) -> dict:
    image = sample_id(server)
    clients = [await Client.connect(server.ws_url) for _ in range(CLIENTS)]
    for c in clients:
        await c.send(type="start", image=image, prompt="benchmark")
    streamer = clients[0]
    await streamer.expect("started")
    chunk_frames = streamer.hello["chunk_frames"]
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
    return {"chunk_frames": chunk_frames,
            "fps": len(heads) / elapsed, "latency": np.array(latencies) * 1000, "gen_ms": np.array(gen),
            "jpeg_bytes": float(np.mean(jpeg_bytes)) if jpeg_bytes else 0.0, "rss_start": rss_start,
            "rss_end": server.rss_mb(), "queued_frames": queued_frames}


# ------------------------------------------------------------------------------- the browser run
def process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds: utime + stime + those of its reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue                                    # it exited meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()      # rest[1] = ppid, rest[11:15] = utime stime cutime cstime
        table[int(pid)] = (int(rest[1]), name, sum(int(v) for v in rest[11:15]) / tick)
    return table


def tree_cpu_seconds(table: dict[int, tuple[int, str, float]], root: int, exclude: int | None = None,
                     names: tuple[str, ...] = ()) -> float:
    """CPU seconds of `root`'s descendants (and itself), skipping `exclude`'s subtree; with `names`,
    only processes whose command name contains one of them."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid == exclude or pid not in table:
            continue
        _, name, cpu = table[pid]
        if not names or any(n in name.lower() for n in names):
            total += cpu
        todo += children.get(pid, [])
    return total


def cpu_snapshot(server_pid: int) -> tuple[float, float, float]:
    """(time.monotonic(), browser CPU seconds, server CPU seconds)."""
    table = process_table()
    browser = tree_cpu_seconds(table, os.getpid(), exclude=server_pid, names=("chrom",))
    return time.monotonic(), browser, tree_cpu_seconds(table, server_pid)


def drag(page, seconds: float) -> None:
    """Hold a pointer down on the video and sweep it in a figure of eight, one sample every 50 ms."""
    box = page.locator("#overlay").bounding_box()
    w, h = page.evaluate("[window.studio.width, window.studio.height]")
    sx, sy = box["width"] / w, box["height"] / h

    def at(t: float) -> tuple[float, float]:
        phase = 2 * np.pi * t / DRAG_PERIOD_S
        return (box["x"] + (DRAG_CENTRE[0] + DRAG_AMPLITUDE[0] * np.sin(phase)) * sx,
                box["y"] + (DRAG_CENTRE[1] + DRAG_AMPLITUDE[1] * np.sin(2 * phase)) * sy)

    page.mouse.move(*at(0.0))
    page.mouse.down()
    t0 = time.monotonic()
    k = 0
    while (t := time.monotonic() - t0) < seconds:
        page.mouse.move(*at(t))
        k += 1
        time.sleep(max(0.0, t0 + k * SAMPLE_EVERY_S - time.monotonic()))
    page.mouse.up()


def browser_measure(server: ServerProcess, seconds: float) -> dict:
    """Drive the page in Chromium for `seconds` of dragging; the page's own logs and the CPU of both trees."""
    from playwright.sync_api import sync_playwright
    from test_browser_studio import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        raise SystemExit(f"--browser needs {CHROMIUM} (apt-get install chromium); never `playwright install`")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                    args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 760})
        try:
            page = ctx.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("window.studio.status === 'idle' && window.studio.imageId", timeout=BROWSER_WAIT_MS)
            header = page.text_content("#model")
            page.fill("#prompt", "a person moves")
            page.keyboard.press("Enter")
            page.wait_for_function(f"window.studio.paintLog.length >= {WARMUP_PAINTS}", timeout=BROWSER_WAIT_MS)
            page_t0, chunks0 = page.evaluate("[performance.now(), window.studio.chunkGenLog.length]")
            cpu0 = cpu_snapshot(server.proc.pid)
            drag(page, seconds)
            cpu1 = cpu_snapshot(server.proc.pid)
            page_t1 = page.evaluate("performance.now()")
            rung = page.text_content("#hud-quality")
            page.wait_for_function("window.studio.pointerAt.size === 0", timeout=DRAIN_S * 1000)
            paints, latencies, gen_ms = page.evaluate(
                "[window.studio.paintLog, window.studio.latencyLog, window.studio.chunkGenLog]")
            page.keyboard.press("Enter")
            page.wait_for_function("window.studio.status === 'idle'", timeout=BROWSER_WAIT_MS)
        finally:
            ctx.close()
    paints = np.array([t for t in paints if page_t0 <= t <= page_t1]) / 1000
    span = (page_t1 - page_t0) / 1000
    windows = int(span // PAINT_WINDOW_S)
    per_window = np.histogram(paints, bins=windows, range=(page_t0 / 1000, page_t0 / 1000 + windows * PAINT_WINDOW_S))[0]
    wall = cpu1[0] - cpu0[0]
    return {"header": header, "rung": rung, "fps": len(paints) / span,
            "real_time_share": float(np.mean(per_window >= REAL_TIME_FPS)),
            "windows": windows, "latency": np.array(latencies), "gen_ms": np.array(gen_ms[chunks0:]),
            "browser_cores": (cpu1[1] - cpu0[1]) / wall, "server_cores": (cpu1[2] - cpu0[2]) / wall}


def percentiles(values: np.ndarray, unit: str = "ms") -> str:
    if not len(values):
        return "none"
    return f"p50 {np.percentile(values, 50):.0f} {unit}  p95 {np.percentile(values, 95):.0f} {unit} ({len(values)} samples)"


def wait_warmed_up(server: ServerProcess, timeout_s: float = WARM_UP_TIMEOUT_S) -> None:
    """Until the server's warm-up stream (the OpenVINO conversions) is done: the peak is measured next,
    on an idle server."""
    end = time.monotonic() + timeout_s
    while server.health().get("warming_up"):
        if time.monotonic() > end:
            raise RuntimeError(f"the studio server still warms up after {timeout_s:.0f} s")
        time.sleep(0.2)


def run_browser(seconds: float, threads: int, quality: str, cache: str | None = None) -> None:
    import torch

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "motionstream", "studio", "--port", str(port), "--threads", str(threads),
                "--quality", quality, *(["--cache", cache] if cache else [])]

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), command)
        try:
            wait_warmed_up(server)
            torch.set_num_threads(threads)
            peak = matmul_peak_gflops(threads=threads)           # the server is loaded and idle; no browser yet
            r = browser_measure(server, seconds)
        finally:
            server.stop()
    load1 = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    flags = f"--threads {threads} --quality {quality}" + (f" --cache {cache}" if cache else "")
    print(f"studio in Chromium, `motionstream studio {flags}` on the shipped weights, "
          f"{seconds:.0f} s of dragging (a pointer sample every {1000 * SAMPLE_EVERY_S:.0f} ms), both on this machine"
          f"{emulation_note()}")
    print(f"  page header            {r['header']}; quality rung at the end of the drag: {r['rung']}")
    print(f"  painted fps            {r['fps']:.1f} (stream fps {REAL_TIME_FPS}); 1-s windows painting >= "
          f"{REAL_TIME_FPS} frames: {100 * r['real_time_share']:.0f} % of {r['windows']}")
    print(f"  pointer -> painted     {percentiles(r['latency'])}")
    print(f"  chunk generation       {percentiles(r['gen_ms'])}")
    print(f"  CPU share              browser {100 * r['browser_cores'] / cores:.0f} % ({r['browser_cores']:.2f} cores), "
          f"server {100 * r['server_cores'] / cores:.0f} % ({r['server_cores']:.2f} cores) of {cores} cores")
    print(f"  fp32 matmul peak       {peak:.1f} GFLOP/s at {threads} threads -> "
          f"{r['fps'] / peak:.3f} painted fps per GFLOP/s")
    print(f"  load average           {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} before, "
          f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} after (1 / 5 / 15 min)")
    print(json.dumps({"painted_fps": round(r["fps"], 2), "real_time_windows": round(r["real_time_share"], 3),
                      "latency_p50_ms": float(np.percentile(r["latency"], 50)) if len(r["latency"]) else None,
                      "gen_p50_ms": float(np.percentile(r["gen_ms"], 50)) if len(r["gen_ms"]) else None,
                      "peak_gflops": round(peak, 1), "load1": load1[0]}))


# ------------------------------------------------------------------------------- the socket run
def report_socket(r: dict, seconds: float, shipped: bool, model: str, load0: float, load1: float) -> None:
    lat, gen = r["latency"], r["gen_ms"]
    what = ("`motionstream studio` on the shipped weights, 2 torch threads" if shipped
            else "tiny random DiT 128x96, 1 torch thread")
    print(f"studio over loopback, {CLIENTS} clients (1 streaming, {CLIENTS - 1} queued), {seconds:.0f} s, {what}")
    if shipped:
        print(f"  model                  {model}")
    print(f"  delivered fps          {r['fps']:.1f} (stream fps 16)")
    print(f"  control->frame latency {percentiles(lat)}")
    print(f"  chunk generation       {percentiles(gen)} (chunk = {r['chunk_frames']} frames of video)")
    print(f"  JPEG per frame         {r['jpeg_bytes'] / 1024:.1f} KiB")
    print(f"  frames sent to queued clients {r['queued_frames']}")
    print(f"  server RSS             {r['rss_start']:.0f} MiB after warm-up -> {r['rss_end']:.0f} MiB at the end")
    print(f"  load average (1 min)   {load0:.2f} before, {load1:.2f} after")
    print(json.dumps({"fps": round(r["fps"], 2), "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                      "gen_p50_ms": float(np.percentile(gen, 50)) if len(gen) else None,
                      "rss_growth_mb": round(r["rss_end"] - r["rss_start"], 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--shipped", action="store_true",
                    help="benchmark `motionstream studio` on the shipped weights instead of the tiny test server")
    ap.add_argument("--browser", action="store_true",
                    help="the page in /usr/bin/chromium against `motionstream studio` on the shipped weights")
    ap.add_argument("--threads", type=int, default=SHIPPED_THREADS, help="the shipped server's torch threads")
    ap.add_argument("--quality", default="auto", help="--browser: the studio's quality rung (default auto, the "
                    "studio's own default: the preset's rung, stepping down while behind real time)")
    ap.add_argument("--cache", default=None, help="--browser: the studio's cache shape cXsYwZ (default: the "
                    "preset's studio.cache, else the model's)")
    add_emulation_args(ap)
    args = ap.parse_args()
    apply_emulation_args(ap, args)
    if args.browser:
        run_browser(args.seconds, args.threads, args.quality, args.cache)
        return
    command = None
    if args.shipped:
        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "motionstream", "studio", "--port", str(port), "--threads", str(args.threads)]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), command)
        model = server.health().get("model", {}).get("name", "?")
        try:
            wait_warmed_up(server)
            r = asyncio.run(measure(server, args.seconds))
        finally:
            server.stop()
    report_socket(r, args.seconds, args.shipped, model, load0, os.getloadavg()[0])


if __name__ == "__main__":
    main()
