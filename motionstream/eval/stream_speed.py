"""Timing a StreamingGenerator: the one implementation behind `eval speed` and benchmarks/stream.py
(and the lever comparison in benchmarks/stream_levers.py).

    time_pipeline   the engine at full throughput: next_chunk_async, decode of chunk i on the worker
                    while chunk i+1 generates, one decode in flight; fps = frames out / wall time after
                    the warm-up chunks; latency = chunk inputs fixed (next_chunk_async called) -> its
                    frames decoded, with the next chunk generating beside the decode. (The studio's worker
                    generates and then decodes each chunk, started just in time for playback, so where the
                    machine keeps up its latency is nearer time_serial's generation + decode.)
    time_serial     generation and decode of each chunk one after the other on this thread: wall and
                    process-CPU seconds of each, and the seconds inside the DiT passes (forward_chunk)
    normalise       the machine's matmul peak and the model FLOPs of one chunk (stream/perf.py)

Every function starts its own stream (gen.start + tracks pushed from frame 0), so they can run in any
order on one generator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from motionstream.stream.perf import ChunkFlops, NormalisedSpeed, chunk_flops, matmul_peak_gflops, metered

PIPELINE_WARMUP_CHUNKS = 3    # allocator, thread pool and a filled cache before the clock starts
SERIAL_WARMUP_CHUNKS = 2      # the first chunk encodes the image and sees an empty cache


@dataclass
class PipelineTiming:
    """Overlapped-decode stream: frames and seconds after the warm-up; per-chunk latency and the time
    between chunk completions (seconds, one entry per measured chunk)."""

    frames: int
    seconds: float
    latency: np.ndarray
    per_chunk: np.ndarray

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


@dataclass
class SerialTiming:
    """One chunk after another on this thread; lists hold one entry per chunk, the warm-up included
    (index 0 = the first chunk). start_s: gen.start (image + prompt encode)."""

    start_s: float
    frames: list[int] = field(default_factory=list)
    generate_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    dit_s: list[float] = field(default_factory=list)
    generate_cpu_s: list[float] = field(default_factory=list)
    decode_cpu_s: list[float] = field(default_factory=list)

    def median(self, name: str, skip: int = SERIAL_WARMUP_CHUNKS) -> float:
        """Median of one per-chunk list over the chunks after `skip`."""
        values = getattr(self, name)
        return float(np.median(values[skip:] or values))

    def fps(self, skip: int = SERIAL_WARMUP_CHUNKS, decode: bool = True) -> float:
        """Frames per second of the chunks after `skip`, with or without their decode."""
        seconds = sum(self.generate_s[skip:]) + (sum(self.decode_s[skip:]) if decode else 0.0)
        return sum(self.frames[skip:]) / seconds


def begin(gen: Any, image: np.ndarray, prompt: str, tracks: Any) -> None:
    """Start a stream on `gen` with `tracks` (a TrackSet) pushed from frame 0."""
    gen.start(image, prompt)
    gen.push(tracks, start_frame=0)


def time_pipeline(gen: Any, image: np.ndarray, prompt: str, tracks: Any, chunks: int,
                  warmup: int = PIPELINE_WARMUP_CHUNKS) -> PipelineTiming:
    """`chunks` chunks through next_chunk_async with one decode in flight (see module docstring)."""
    config = gen.config
    gen.config = replace(config, overlap_decode=True)
    try:
        return _pipeline(gen, image, prompt, tracks, chunks, warmup)
    finally:
        gen.config = config


def _pipeline(gen: Any, image: np.ndarray, prompt: str, tracks: Any, chunks: int, warmup: int) -> PipelineTiming:
    begin(gen, image, prompt, tracks)
    starts, dones, sizes, pending = [], {}, [], []
    t_begin = time.perf_counter()
    for i in range(chunks):
        if i == warmup:
            for f in pending:
                f.result()
            pending.clear()
            t_begin = time.perf_counter()
        starts.append(time.perf_counter())
        fut = gen.next_chunk_async()
        fut.add_done_callback(lambda f, i=i: dones.__setitem__(i, time.perf_counter()))
        pending.append(fut)
        while len(pending) > 1:            # one decode in flight
            sizes.append(len(pending.pop(0).result()))
    sizes.extend(len(f.result()) for f in pending)
    seconds = time.perf_counter() - t_begin
    gen.wait()
    first = min(warmup, chunks - 1)
    latency = np.array([dones[i] - starts[i] for i in range(first, chunks)])
    per_chunk = np.diff(np.array([dones[i] for i in range(max(first - 1, 0), chunks)]))
    return PipelineTiming(sum(sizes[first:]), seconds, latency, per_chunk)


def time_serial(gen: Any, image: np.ndarray, prompt: str, tracks: Any, chunks: int) -> SerialTiming:
    """`chunks` chunks generated then decoded on this thread, each part timed (wall and process CPU)."""
    t0 = time.perf_counter()
    begin(gen, image, prompt, tracks)
    timing = SerialTiming(time.perf_counter() - t0)
    for _ in range(chunks):
        timing.frames.append(gen.chunk_num_frames())
        t0, c0 = time.perf_counter(), time.process_time()
        with metered(gen.model, "forward_chunk") as dit:
            latents = gen.generate_latents()
        t1, c1 = time.perf_counter(), time.process_time()
        gen.decode_now(latents)
        t2, c2 = time.perf_counter(), time.process_time()
        timing.generate_s.append(t1 - t0)
        timing.decode_s.append(t2 - t1)
        timing.dit_s.append(dit.seconds)
        timing.generate_cpu_s.append(c1 - c0)
        timing.decode_cpu_s.append(c2 - c1)
    return timing


def normalise(gen: Any, image: np.ndarray, prompt: str, tracks: Any) -> NormalisedSpeed:
    """The machine's matmul peak on the current torch threads and the FLOPs of a steady-state chunk.
    The FLOPs are the model's arithmetic, counted on the fp32 weights in torch also when the stream runs
    them in int8 or OpenVINO (torch's counter sees neither): efficiency and utilisation stay comparable."""
    config = gen.config
    gen.config = replace(config, int8=False, openvino=False)
    try:
        begin(gen, image, prompt, tracks)
        for _ in range(gen.config.sink_chunks + gen.config.window_chunks):   # fill the cache first
            gen.generate_latents()
        flops: ChunkFlops = chunk_flops(gen)
    finally:
        gen.config = config
    return NormalisedSpeed(matmul_peak_gflops(), flops)


__all__ = ["PipelineTiming", "SerialTiming", "time_pipeline", "time_serial", "normalise", "begin"]
