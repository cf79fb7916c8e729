"""StreamingGenerator and MotionControls on a tiny random WanDiT + random causal VAE / tiny decoder."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from stream_fixtures import FPS, VIDEO_H, VIDEO_W, HashTextEncoder, make_model_folders, moving_square, sample_image

from motionstream.stream.controls import MotionControls
from motionstream.stream.engine import (StreamConfig, StreamingGenerator, chunk_condition,
                                        load_stream_model)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_model_folders(tmp_path_factory.mktemp("stream_models"))


@pytest.fixture(scope="module")
def parts(folders):
    from motionstream.models.codec import load_codec

    model, param, meta = load_stream_model(folders["student"])
    return model, param, meta, load_codec(folders["vae"], folders["tiny"])


def make_gen(parts, **cfg) -> StreamingGenerator:
    model, param, _, codec = parts
    return StreamingGenerator(model, codec, HashTextEncoder(), StreamConfig(**cfg), param, fps=FPS)


# ------------------------------------------------------------------------------------ engine
def test_chunk_sizes_dtype_and_frame_clock(parts):
    gen = make_gen(parts)
    gen.start(sample_image(), "a bright square")
    sizes = []
    for _ in range(3):
        frames = gen.next_chunk()
        assert frames.dtype == np.uint8 and frames.shape[1:] == (VIDEO_H, VIDEO_W, 3)
        sizes.append(len(frames))
    gen.close()
    assert sizes == [1 + 4 * 2, 12, 12]
    assert gen.next_frame == sum(sizes) and gen.frames_out == sum(sizes)
    assert gen.stream_time == pytest.approx(sum(sizes) / FPS)


def test_deterministic_overlap_equals_serial_and_reset_replays(parts):
    ts = moving_square(40)
    runs = []
    for overlap in (False, True):
        gen = make_gen(parts, overlap_decode=overlap)
        gen.start(sample_image(), "a bright square")
        gen.push(ts)
        futs = [gen.next_chunk_async() for _ in range(3)]   # generation of i+1 overlaps decode of i
        runs.append(np.concatenate([f.result() for f in futs]))
        if overlap:
            gen.reset()
            gen.push(ts)
            replay = np.concatenate([gen.next_chunk() for _ in range(3)])
        gen.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[1], replay)


def test_motion_and_prompt_change_the_output(parts):
    def run(prompt, tracks):
        gen = make_gen(parts, overlap_decode=False)
        gen.start(sample_image(), prompt)
        if tracks is not None:
            gen.push(tracks)
        lat = [gen.generate_latents() for _ in range(2)]
        return torch.cat(lat, 2)

    base = run("a bright square", moving_square(21))
    assert not torch.allclose(base, run("a bright square", None), atol=1e-4)
    assert not torch.allclose(base, run("something else entirely", moving_square(21)), atol=1e-4)
    assert torch.allclose(base, run("a bright square", moving_square(21)))


def test_full_decoder_option(parts):
    """decoder: full runs the causal VAE decoder chunk by chunk, equal to decoding the whole clip at once."""
    gen = make_gen(parts, decoder="full", overlap_decode=False)
    gen.start(sample_image(), "x")
    latents = [gen.generate_latents() for _ in range(3)]
    gen.reset()
    streamed = np.concatenate([gen.next_chunk() for _ in range(3)])
    assert streamed.shape == (9 + 12 + 12, VIDEO_H, VIDEO_W, 3)
    from motionstream.models.codec import tensor_to_frames

    whole = tensor_to_frames(gen.codec.decode(torch.cat(latents, 2)))
    assert np.abs(whole.astype(int) - streamed.astype(int)).max() <= 1


def test_pause_resume(parts):
    gen = make_gen(parts)
    gen.start(sample_image(), "p")
    gen.next_chunk()
    gen.pause()
    assert gen.next_chunk().shape == (0, VIDEO_H, VIDEO_W, 3)
    assert gen.chunk_index == 1 and gen.next_frame == 9
    gen.resume()
    assert len(gen.next_chunk()) == 12 and gen.next_frame == 21
    gen.close()


def test_start_rejects_bad_image(parts):
    gen = make_gen(parts)
    with pytest.raises(ValueError, match="multiple of"):
        gen.start(np.zeros((50, 64, 3), np.uint8), "x")
    with pytest.raises(RuntimeError, match="start"):
        gen.next_chunk()


def test_cache_config_names():
    cfg = StreamConfig().with_cache_name("c2s0w4")
    assert (cfg.chunk_frames, cfg.sink_chunks, cfg.window_chunks, cfg.name) == (2, 0, 4, "c2s0w4")
    with pytest.raises(ValueError):
        StreamConfig().with_cache_name("c3w1")
    with pytest.raises(ValueError):
        StreamConfig(denoising_steps=[0.5, 0.9])


@pytest.mark.parametrize("name", ["c3s1w1", "c2s0w2", "c1s2w1"])
def test_other_cache_shapes_stream(parts, name):
    gen = make_gen(parts, overlap_decode=False)
    gen.start(sample_image(), "x", StreamConfig(overlap_decode=False).with_cache_name(name))
    c = gen.config.chunk_frames
    sizes = [len(gen.next_chunk()) for _ in range(5)]
    assert sizes == [1 + 4 * (c - 1)] + [4 * c] * 4
    assert gen.cache.current_slot <= gen.config.sink_chunks + gen.config.window_chunks


def test_stream_equals_the_training_rollout(parts):
    """Chunk by chunk with per-chunk conditions == train/rollout.stream_generate on the whole-stream
    condition (the sampler, the noise order, the guide prior and the cache are the ones of training)."""
    from motionstream.models.conditioning import build_condition
    from motionstream.train.rollout import StudentSampler, stream_generate

    model, param = parts[0], parts[1]
    gen = make_gen(parts, overlap_decode=False, seed=7)
    gen.start(sample_image(), "a bright square")
    ts = moving_square(1 + 4 * 11)
    gen.push(ts)
    mine = torch.cat([gen.generate_latents() for _ in range(4)], 2)          # 12 latent frames: the window rolls
    cond = build_condition(gen.image_latent, [ts], 12, model.cfg, ids=ts.ids)
    sampler = StudentSampler(model, gen.config.student_config(), param, cond, gen.text)
    with torch.inference_mode():
        ref = stream_generate(sampler, 4, tuple(gen.image_latent.shape[2:]), torch.Generator().manual_seed(7))
    torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4)


def test_chunk_condition_equals_whole_clip_condition(parts):
    """Per-chunk conditioning (only the chunk's tracks + anchors) == build_condition on the whole clip, sliced."""
    from motionstream.models.conditioning import build_condition

    model = parts[0]
    cfg = model.cfg
    latent = torch.randn(1, 16, VIDEO_H // 8, VIDEO_W // 8)
    ts = moving_square(1 + 4 * 8)
    whole = build_condition(latent, [ts], 9, cfg, ids=ts.ids)
    controls = MotionControls(VIDEO_W, VIDEO_H, FPS)
    controls.push_tracks(ts, start_frame=0)
    for a, b in [(0, 3), (3, 6), (6, 9)]:
        v0, v1 = (0 if a == 0 else 4 * a - 3), 4 * b - 3
        part = chunk_condition(latent, controls.chunk_tracks(v0, v1 - v0), a, b - a, cfg)
        ref = whole.chunk(a, b)
        for name in ("image_latent", "image_mask", "track_map", "guide", "guide_mask"):
            torch.testing.assert_close(getattr(part, name), getattr(ref, name), msg=name)


def test_chunk_condition_size_does_not_grow_with_the_chunk_index(parts):
    cfg = parts[0].cfg
    latent = torch.randn(1, 16, VIDEO_H // 8, VIDEO_W // 8)
    controls = MotionControls(VIDEO_W, VIDEO_H, FPS)
    sizes = []
    for chunk in (1, 5000):
        cond = chunk_condition(latent, controls.chunk_tracks(4 * 3 * chunk - 3, 12), 3 * chunk, 3, cfg)
        assert not cond.image_latent.any() and not cond.image_mask.any()
        sizes.append(sum(t.untyped_storage().nbytes() for t in (cond.image_latent, cond.image_mask, cond.track_map,
                                                               cond.guide, cond.guide_mask)))
    assert sizes[0] == sizes[1]


def test_long_stream_constant_memory_and_positions(parts):
    """2,000 frames (beyond any training horizon): cache slots bounded, RSS flat, per-chunk state bounded."""
    gen = make_gen(parts, overlap_decode=True, denoising_steps=[1.0])
    gen.start(sample_image(), "forever")
    d = gen.controls.pointer_down(0.0, 28, 24)
    rss = []
    frames = 0
    chunk = 0
    while frames < 2000:
        t = gen.stream_time
        gen.push([(t + 0.5, 28 + 10 * np.sin(t), 24 + 5 * np.cos(t))], drag_id=d)   # live pointer keeps moving
        frames += len(gen.next_chunk())
        chunk += 1
        assert gen.cache.current_slot <= 2
        if chunk in (20, 160):
            rss.append(_rss_mb())
    gen.close()
    assert frames >= 2000
    assert len(gen.controls._drags[d].samples) <= 3            # pointer history is trimmed
    assert rss[1] - rss[0] < 30, f"RSS grew from {rss[0]:.0f} to {rss[1]:.0f} MB"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def test_sink_refresh_reanchors(parts):
    gen = make_gen(parts, overlap_decode=False, sink_refresh_chunks=3)
    gen.start(sample_image(), "scene change")
    sink_before = gen.cache.keys[:, :, :, :gen.cache.chunk_tokens].clone()
    for _ in range(2):
        gen.next_chunk()
    sink_after_2 = gen.cache.keys[:, :, :, :gen.cache.chunk_tokens].clone()
    assert not torch.equal(sink_before, sink_after_2)   # chunk 0 was written into the sink
    assert torch.equal(gen.anchor_latent, gen.image_latent)
    gen.next_chunk()                                      # chunk 3: refresh
    assert not torch.equal(gen.cache.keys[:, :, :, :gen.cache.chunk_tokens], sink_after_2)
    assert torch.equal(gen.anchor_latent, gen.last_latents[:, :, -1])
    # the refreshed sink holds the newest window chunk's values, rotated at sink positions
    n = gen.cache.chunk_tokens
    assert torch.equal(gen.cache.values[:, :, :, :n], gen.cache.values[:, :, :, n:2 * n])
    fixed = make_gen(parts, overlap_decode=False)
    fixed.start(sample_image(), "scene change")
    a = [fixed.next_chunk() for _ in range(5)][-1]
    b = [gen.next_chunk() for _ in range(2)][-1]
    assert not np.array_equal(a, b)


def test_student_shortcut_gives_clear_error(monkeypatch, tmp_path):
    import motionstream.models.checkpoints as checkpoints
    from motionstream.models.checkpoints import WeightsNotFound

    monkeypatch.setattr(checkpoints, "WEIGHTS_DIR", tmp_path)   # a checkout without shipped weights
    with pytest.raises(WeightsNotFound, match="student-tiny-cpu"):
        load_stream_model("student")


# ---------------------------------------------------------------------------------- controls
def test_pointer_samples_resampled_onto_chunk_frames():
    c = MotionControls(VIDEO_W, VIDEO_H, FPS)
    d = c.pointer_down(0.25, 10.0, 20.0, radius=0)          # grab at frame 4
    c.pointer_move(d, 0.75, 30.0, 20.0)                      # frame 12
    c.pointer_move(d, 0.5, 20.0, 10.0)                       # arrives late, out of order: frame 8
    ch = c.chunk_tracks(0, 9)
    ts = ch.tracks
    assert ts.num_tracks == 1 and ts.role == ["drag"]
    assert not ts.visibility[:4, 0].any() and ts.visibility[4:, 0].all()    # unspecified before the grab
    np.testing.assert_allclose(ts.tracks[4, 0], [10, 20])
    np.testing.assert_allclose(ts.tracks[6, 0], [15, 15])                   # halfway to the frame-8 sample
    np.testing.assert_allclose(ts.tracks[8, 0], [20, 10])
    np.testing.assert_allclose(ch.anchors[0], [10, 20])
    c.pointer_up(d, 1.0)                                     # released at frame 16
    ts2 = c.chunk_tracks(9, 12).tracks
    np.testing.assert_allclose(ts2.tracks[12 - 9, 0], [30, 20])             # held after the newest sample
    assert ts2.visibility[:16 - 9, 0].all() and not ts2.visibility[16 - 9:, 0].any()  # released = zero features
    assert (ts2.ids == ts.ids).all()                         # the same track keeps its ID across chunks


def test_a_released_drag_holds_its_content_in_the_prior_until_grabbed_again():
    """After pointer_up the drag's points are unspecified for the model (zero features) but the video
    prior keeps them where they were dropped; a new grab there takes the content over (one copy)."""
    c = MotionControls(VIDEO_W, VIDEO_H, FPS, seed=1)
    d = c.pointer_down(0.0, 10.0, 20.0, radius=0)
    c.pointer_move(d, 0.5, 30.0, 20.0)
    c.pointer_up(d, 0.6)                                     # released at frame 10 (0.6 s x 16 fps = 9.6)
    before = c.chunk_tracks(0, 9)
    np.testing.assert_array_equal(before.prior_visibility, before.tracks.visibility)
    after = c.chunk_tracks(9, 12)
    assert not after.tracks.visibility[2:, 0].any()          # frames 11.. : unspecified for the model
    assert after.prior_visibility[:, 0].all()                # ... held for the prior
    np.testing.assert_allclose(after.tracks.tracks[-1, 0], [30.0, 20.0])
    c.pointer_down(1.5, 30.0, 20.0, radius=0)               # grab the dropped content again at frame 24
    handover = c.chunk_tracks(21, 12)                        # frames 21..32: old hold until 24, then the new grab
    old, new = handover.tracks.ids == after.tracks.ids[0], handover.tracks.ids != after.tracks.ids[0]
    assert handover.prior_visibility[:3, old].all() and not handover.prior_visibility[3:, old].any()
    assert not handover.prior_visibility[:3, new].any() and handover.prior_visibility[3:, new].all()
    np.testing.assert_allclose(handover.anchors[new][0], [10.0, 20.0])   # it carries the same content
    assert c.chunk_tracks(33, 12).num_tracks == 1            # the handed-over drag is gone


def test_many_released_drags_all_hold_their_content():
    """Released drags are forgotten by held points (MAX_HELD_POINTS), not by count: 40 one-point drags
    dropped at different places all stay held."""
    c = MotionControls(VIDEO_W, VIDEO_H, FPS, seed=4)
    for k in range(40):
        d = c.pointer_down(0.0, 2.0 + k, 10.0, radius=0)
        c.pointer_move(d, 0.25, 2.0 + k, 30.0)
        c.pointer_up(d, 0.3)
    c.chunk_tracks(0, 9)
    later = c.chunk_tracks(9, 12)
    assert later.num_tracks == 40 and later.prior_visibility.all() and not later.tracks.visibility.any()


def test_release_and_regrab_within_one_chunk_keep_the_motion():
    """Release and grab again before the engine has taken those frames: the first drag's motion up to its
    release stays (model and prior), the prior holds until the new grab, then the new drag carries on."""
    c = MotionControls(VIDEO_W, VIDEO_H, FPS, seed=2)
    d = c.pointer_down(0.0, 10.0, 20.0, radius=0)
    c.pointer_move(d, 1.0, 30.0, 20.0)
    c.chunk_tracks(0, 9)                                     # the engine has taken frames 0..8
    c.pointer_up(d, 1.0)                                     # frame 16
    d2 = c.pointer_down(1.125, 30.0, 20.0, radius=0)         # frame 18, same chunk
    c.pointer_move(d2, 1.5, 40.0, 20.0)
    first_id = c._drags[d].ids[0]
    ch = c.chunk_tracks(9, 12)                               # frames 9..20
    first = ch.tracks.ids == first_id
    assert first.sum() == 1                                  # the first drag is still there for these frames
    assert ch.tracks.visibility[:7, first].all() and not ch.tracks.visibility[7:, first].any()
    assert ch.prior_visibility[:9, first].all() and not ch.prior_visibility[9:, first].any()
    np.testing.assert_allclose(ch.tracks.tracks[16 - 9, first], [[30.0, 20.0]])
    np.testing.assert_allclose(ch.anchors[~first], [[10.0, 20.0]])      # the new grab carries that content


def test_several_drags_pins_paths_and_regrab():
    c = MotionControls(VIDEO_W, VIDEO_H, FPS, seed=3)
    a = c.pointer_down(0.0, 10, 10, radius=8)
    b = c.pointer_down(0.0, 50, 30, radius=0)
    c.add_pins(np.array([[5.0, 40.0], [60.0, 5.0]]))
    c.add_path([(0.0, 30.0, 40.0), (0.5, 40.0, 40.0)])
    c.pointer_move(a, 0.5, 20, 10)
    c.pointer_move(b, 0.5, 50, 20)
    ts = c.chunk_tracks(0, 9).tracks
    roles = np.array(ts.role)
    assert set(roles) == {"drag", "static", "path"} and len(set(ts.ids.tolist())) == ts.num_tracks
    assert (ts.ids < 10000).all()                            # the ID range the model was trained on
    pins = roles == "static"
    np.testing.assert_array_equal(ts.tracks[-1, pins], ts.tracks[0, pins])
    path = roles == "path"
    np.testing.assert_allclose(ts.tracks[8, path], [[40.0, 40.0]])
    assert ts.visibility[8, path].all()
    # drag a ends at (20, 10); a new grab there continues pasting the content from (10, 10)
    c.pointer_up(a, 0.6)
    c.chunk_tracks(9, 12)
    a2 = c.pointer_down(1.5, 20, 10, radius=0)
    anchors = c.chunk_tracks(21, 12).anchors
    ids = c._drags[a2].ids
    np.testing.assert_allclose(anchors[np.isin(c.chunk_tracks(33, 12).tracks.ids, ids)], [[10.0, 10.0]])


def test_pushed_tracks_segments_and_validation():
    c = MotionControls(VIDEO_W, VIDEO_H, FPS)
    ts = moving_square(30)
    c.push_tracks(ts.frames(0, 15), start_frame=0)
    c.push_tracks(ts.frames(15, 30), start_frame=15)        # the same tracks (IDs), next frames
    ch = c.chunk_tracks(9, 12)                               # frames 9..20 span both segments
    assert ch.num_tracks == 9 and (ch.tracks.ids == ts.ids).all()
    np.testing.assert_allclose(ch.tracks.tracks, ts.tracks[9:21])
    np.testing.assert_allclose(ch.anchors, ts.tracks[0])     # the second segment inherits frame-0 anchors
    other = replace(ts.frames(0, 30), ids=ts.ids + 1)        # another source: its own columns
    c.push_tracks(other.frames(0, 10), start_frame=25)
    ch = c.chunk_tracks(21, 12)
    assert ch.num_tracks == 18 and not ch.tracks.visibility[:4, 9:].any() and ch.tracks.visibility[4:, 9:].all()
    np.testing.assert_allclose(ch.anchors[9:], ts.tracks[0])
    with pytest.raises(ValueError, match="scale"):
        c.push_tracks(ts.scaled(128, 96))
    with pytest.raises(ValueError, match="fps"):
        c.push_tracks(replace(ts, fps=30.0))


def test_stream_config_precedence():
    """preset `stream` + preset `student` sampler < the student folder's metadata < explicit overrides."""
    from motionstream.stream.engine import stream_config_for

    preset = {"name": "p", "stream": {"decoder": "full"}, "student": {"chunk_frames": 2, "window_chunks": 3}}
    sc = stream_config_for(preset)
    assert (sc.decoder, sc.chunk_frames, sc.window_chunks) == ("full", 2, 3)
    sc = stream_config_for(preset, {"student": {"chunk_frames": 4, "window_chunks": 9, "shift": 5.0}}, decoder="tiny")
    assert (sc.decoder, sc.chunk_frames, sc.window_chunks, sc.shift) == ("tiny", 4, 3, 5.0)
    # an explicit sampler override wins over both (it once raised: two values for one keyword)
    sc = stream_config_for(preset, {"student": {"chunk_frames": 4}}, chunk_frames=1, window_chunks=5)
    assert (sc.chunk_frames, sc.window_chunks) == (1, 5)
    with pytest.raises(ValueError, match="unknown keys"):
        stream_config_for({"name": "p", "stream": {"chunk_size": 3}})


def test_controls_take_input_from_another_thread():
    import threading

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)         # switch threads constantly so an unlocked race shows up
    c = MotionControls(VIDEO_W, VIDEO_H, FPS)
    stop = threading.Event()
    errors = []

    def ui():
        try:
            k = 0
            # bounded: drags scheduled ahead of the stream stay live, and the controls refuse more
            # than id_range live tracks (150 drags x 49 points stays below it on any machine speed)
            while not stop.is_set() and k < 150:
                d = c.pointer_down(k / FPS, 10 + k % 40, 20)
                c.pointer_move(d, (k + 2) / FPS, 30, 20)
                c.pointer_up(d, (k + 5) / FPS)
                k += 1
        except Exception as err:   # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=ui)
    thread.start()
    try:
        for i in range(150):
            ts = c.chunk_tracks(12 * i, 12).tracks
            assert len(set(ts.ids.tolist())) == ts.num_tracks
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    assert not errors


def test_video_prior_streams_like_the_whole_clip(parts):
    """Weights with the "video" prior: each chunk's prior (image warped from the anchors, encoded with
    the streaming encoder) equals conditioning.video_prior of the whole clip, sliced; and the stream
    equals the training rollout on that whole-clip condition."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.conditioning import build_condition, video_prior
    from motionstream.train.rollout import StudentSampler, stream_generate

    model, _, meta, codec = parts
    param = TeacherParam("video", skip_form="mmse", prior_var=0.5)
    video_parts = (model, param, meta, codec)
    gen = make_gen(video_parts, overlap_decode=False, seed=3)
    gen.start(sample_image(), "a bright square")
    ts = moving_square(1 + 4 * 8)
    gen.push(ts)
    priors, mine = [], []
    for _ in range(3):
        mine.append(gen.generate_latents())
        priors.append(gen.sampler.cond.prior)
    whole = video_prior(codec.encode, [sample_image()], [ts], 9)
    torch.testing.assert_close(torch.cat(priors, 2), whole, rtol=1e-4, atol=1e-4)
    assert (whole[:, :, 1:] - whole[:, :, :1]).abs().amax() > 1e-3          # the square moved
    cond = build_condition(gen.image_latent, [ts], 9, model.cfg, ids=ts.ids, prior=whole)
    sampler = StudentSampler(model, gen.config.student_config(), param, cond, gen.text)
    with torch.inference_mode():
        ref = stream_generate(sampler, 3, tuple(gen.image_latent.shape[2:]), torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.cat(mine, 2), ref, rtol=1e-4, atol=1e-4)


def test_sink_refresh_restarts_the_video_prior_from_the_new_anchor(parts):
    """After a refresh the prior warps the new anchor's pixels (its latent decoded as a first frame) along
    the re-anchored tracks: the next chunk's prior equals encoding [anchor frame, warped chunk] whole."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.codec import frames_to_tensor, tensor_to_frames
    from motionstream.stream.engine import chunk_video_frames

    model, _, meta, codec = parts
    gen = make_gen((model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec),
                   overlap_decode=False, seed=3, sink_refresh_chunks=2)
    gen.start(sample_image(), "a bright square")
    gen.push(moving_square(1 + 4 * 11))
    for _ in range(2):
        gen.generate_latents()                                    # the refresh follows chunk 2
    with torch.inference_mode():
        anchor = tensor_to_frames(codec.decode(gen.anchor_latent[:, :, None]))[0]
    np.testing.assert_array_equal(gen.prior_image, anchor)
    assert not np.array_equal(gen.prior_image, gen.image)         # reset() still restarts from the image
    seen = []
    chunk_tracks = gen.controls.chunk_tracks
    gen.controls.chunk_tracks = lambda *a: seen.append(chunk_tracks(*a)) or seen[-1]
    gen.generate_latents()
    warped = chunk_video_frames(anchor, seen[0])
    with torch.inference_mode():
        whole = codec.encode(frames_to_tensor(np.concatenate([anchor[None], warped])))
    torch.testing.assert_close(gen.sampler.cond.prior, whole[:, :, 1:], rtol=1e-4, atol=1e-4)
    assert (warped[-1].astype(int) - anchor).any()                # the re-anchored square moved on


def test_presegment_makes_a_pressed_patch_s_segment_before_it_moves(parts, monkeypatch):
    """gen.presegment() after pointer_down runs the patch's GrabCut on its own thread without consuming
    any input; the first moving chunk then finds it in the cache and pastes what it would have made."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.stream.engine import chunk_paste_frames
    from motionstream.tracks import paste
    from motionstream.tracks.paste import SegmentCache

    model, _, meta, codec = parts
    video_parts = (model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec)
    segmented = []
    segment = paste.segment_object
    monkeypatch.setattr(paste, "segment_object", lambda *a: segmented.append(1) or segment(*a))
    off = make_gen(video_parts, overlap_decode=False, seed=3, drag_paste=False)
    off.start(sample_image(), "a bright square")
    off.controls.pointer_down(0.0, VIDEO_W / 2, VIDEO_H / 2, radius=4, spacing=4)
    assert off.presegment() is None                              # nothing is pasted: nothing to segment

    gen = make_gen(video_parts, overlap_decode=False, seed=3, drag_paste=True, composite=[0.1, 0.5])
    assert gen.presegment() is None                              # not started
    gen.start(sample_image(), "a bright square")
    gen.controls.add_pins(np.array([[4.0, 4.0], [VIDEO_W - 4.0, VIDEO_H - 4.0]]))
    drag = gen.controls.pointer_down(0.0, VIDEO_W / 2, VIDEO_H / 2, radius=4, spacing=4)
    consumed = gen.controls.consumed_frames
    masks, _, _ = gen.presegment().result()
    assert len(segmented) == 1 and len(masks) == 1 and masks[0].any()
    assert gen.controls.consumed_frames == consumed
    gen.controls.pointer_move(drag, 0.5, VIDEO_W / 2 + 12, VIDEO_H / 2)
    seen = []
    chunk_tracks = gen.controls.chunk_tracks
    gen.controls.chunk_tracks = lambda *a: seen.append(chunk_tracks(*a)) or seen[-1]
    gen.generate_latents()
    assert len(segmented) == 1                                   # the first moving chunk made none
    assert (gen.last_blend[0] == chunk_paste_frames(gen.prior_image, seen[-1], SegmentCache())).all()
    gen.close()


def test_presegment_on_a_latent_prior_rung_encodes_the_plate_ahead(parts):
    """Where the prior is a latent (the ladder's lower rungs), presegment also encodes the plate the
    chunk shows where the patch leaves, so the first moving chunk encodes no image."""
    from motionstream.diffusion.sampling import TeacherParam

    model, _, meta, codec = parts
    video_parts = (model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec)
    gen = make_gen(video_parts, overlap_decode=False, seed=3, drag_paste=True, composite=[0.1, 0.5], prior="latent")
    gen.start(sample_image(), "a bright square")
    gen.controls.add_pins(np.array([[4.0, 4.0], [VIDEO_W - 4.0, VIDEO_H - 4.0]]))
    drag = gen.controls.pointer_down(0.0, VIDEO_W / 2, VIDEO_H / 2, radius=4, spacing=4)
    _, _, plate = gen.presegment().result()
    encoded = []
    encode = gen.codec.encode
    gen.codec.encode = lambda *a: encoded.append(1) or encode(*a)
    gen.controls.pointer_move(drag, 0.5, VIDEO_W / 2 + 12, VIDEO_H / 2)
    gen.generate_latents()
    assert plate is not None and encoded == []                   # the plate's latent was made at the press
    gen.close()


def test_latent_video_prior_moves_the_anchor_latent_on_the_latent_grid():
    """Zero flow gives the anchor latent in every latent frame; a flow of one latent cell (8 px)
    shifts it by one cell; latent frames average their video frames' flows."""
    from motionstream.models.conditioning import warp_latent

    anchor = torch.randn(1, 4, 6, 10)
    still = np.zeros((9, 48, 80, 2), np.float32)
    first = warp_latent(anchor, still, 4, first_chunk=True)
    assert first.shape == (1, 4, 3, 6, 10)
    torch.testing.assert_close(first, anchor[:, :, None].expand(-1, -1, 3, -1, -1))
    moved = still.copy()
    moved[1:, ..., 0] = 8.0                             # content moves one latent cell right
    shifted = warp_latent(anchor, moved, 4, first_chunk=True)
    torch.testing.assert_close(shifted[:, :, 0], anchor)
    torch.testing.assert_close(shifted[:, :, 1, :, 1:], anchor[:, :, :, :-1])
    later = np.zeros((8, 48, 80, 2), np.float32)
    later[4:, ..., 0] = 8.0                             # no motion in latent frame 0, one cell in frame 1
    halves = warp_latent(anchor, later, 4, first_chunk=False)
    assert halves.shape == (1, 4, 2, 6, 10)
    torch.testing.assert_close(halves[:, :, 0], anchor)
    torch.testing.assert_close(halves[:, :, 1, :, 1:], anchor[:, :, :, :-1])
    plate = torch.randn(1, 4, 6, 10)
    holes = np.zeros((8, 48, 80), np.float32)
    holes[4:, :, :8] = 1.0                              # the first cell column is left behind in frame 1
    holes[4:, :, 8:12] = 1.0                            # half of the second
    filled = warp_latent(anchor, later, 4, first_chunk=False, fill=(plate, holes))
    torch.testing.assert_close(filled[:, :, 0], anchor)
    torch.testing.assert_close(filled[:, :, 1, :, 0], plate[:, :, :, 0])
    torch.testing.assert_close(filled[:, :, 1, :, 1], (anchor[:, :, :, 0] + plate[:, :, :, 1]) / 2)
    torch.testing.assert_close(filled[:, :, 1, :, 2:], anchor[:, :, :, 1:-1])


def test_latent_prior_streams_without_the_encoder(parts):
    """stream.prior = latent: the chunk's prior is the anchor latent warped along the chunk's flows
    (no streaming encoder), and it differs from the encoded prior only where the tracks move."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.conditioning import warp_latent
    from motionstream.stream.engine import chunk_flows

    model, _, meta, codec = parts
    video_parts = (model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec)
    gen = make_gen(video_parts, overlap_decode=False, seed=3, prior="latent")
    gen.start(sample_image(), "a bright square")
    assert gen.prior_encoder is None
    seen = []
    chunk_tracks = gen.controls.chunk_tracks
    gen.controls.chunk_tracks = lambda *a: seen.append(chunk_tracks(*a)) or seen[-1]
    gen.push(moving_square(1 + 4 * 8))
    for index in range(2):
        gen.generate_latents()
        flows = chunk_flows(seen[-1], gen.prior_image.shape[1], gen.prior_image.shape[0])
        want = warp_latent(gen.anchor_latent, flows, 4, first_chunk=index == 0)
        torch.testing.assert_close(gen.sampler.cond.prior, want)
    assert (want[:, :, -1] - gen.anchor_latent).abs().amax() > 1e-3           # the square moved
    with pytest.raises(ValueError, match="stream.prior"):
        StreamConfig(prior="pixels")


def test_latent_prior_of_the_stream_equals_the_whole_clip_one(parts):
    """What train gt learns around with train_gt.prior = latent (conditioning.latent_video_prior of the
    whole clip) is what the stream feeds with stream.prior = latent, chunk by chunk."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.conditioning import latent_video_prior

    model, _, meta, codec = parts
    gen = make_gen((model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec),
                   overlap_decode=False, seed=3, prior="latent")
    gen.start(sample_image(), "a bright square")
    ts = moving_square(1 + 4 * 8)
    gen.push(ts)
    priors = []
    for _ in range(3):
        gen.generate_latents()
        priors.append(gen.sampler.cond.prior)
    whole = latent_video_prior(gen.image_latent, [ts], 9, gen.width, gen.height)
    torch.testing.assert_close(torch.cat(priors, 2), whole, rtol=1e-5, atol=1e-5)


def test_a_rung_with_the_latent_prior_drops_the_encoder_and_a_rung_back_restarts_it(parts):
    """stream.quality_prior: stepping down to a latent-prior rung mid-stream stops encoding (the
    chunk's prior is the warped anchor latent); stepping back up makes a fresh encoder that has seen
    the prior image, so the next prior equals encoding [image, warped chunk] whole."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.codec import frames_to_tensor
    from motionstream.models.conditioning import warp_latent
    from motionstream.stream.engine import chunk_flows, chunk_video_frames

    model, _, meta, codec = parts
    gen = make_gen((model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec),
                   overlap_decode=False, seed=3, quality="2-step")
    assert gen.config.prior_of("2-step") == "encode" and gen.config.prior_of("2-step-latent") == "latent"
    gen.start(sample_image(), "a bright square")
    gen.push(moving_square(1 + 4 * 11))
    seen = []
    chunk_tracks = gen.controls.chunk_tracks
    gen.controls.chunk_tracks = lambda *a: seen.append(chunk_tracks(*a)) or seen[-1]
    gen.generate_latents()
    assert gen.prior_encoder is not None
    gen.set_quality("2-step-latent")
    assert gen.prior_encoder is None
    gen.generate_latents()
    flows = chunk_flows(seen[-1], gen.prior_image.shape[1], gen.prior_image.shape[0])
    torch.testing.assert_close(gen.sampler.cond.prior, warp_latent(gen.anchor_latent, flows, 4, first_chunk=False))
    gen.set_quality("2-step")
    gen.generate_latents()
    warped = chunk_video_frames(gen.prior_image, seen[-1])
    with torch.inference_mode():
        whole = codec.encode(frames_to_tensor(np.concatenate([gen.prior_image[None], warped])))
    torch.testing.assert_close(gen.sampler.cond.prior, whole[:, :, 1:], rtol=1e-4, atol=1e-4)


def test_a_rung_with_the_linear_prior_encodes_with_the_linear_path_alone(parts):
    """stream.quality_prior = linear: the chunk's prior is its warped pixels through the VAE encoder's linear
    path (CausalVAE.encode_linear), not the whole encoder. A step between it and an encoding rung mid-stream
    swaps the streaming encoder for a fresh one that has seen the prior image, so each prior equals
    encoding [image, warped chunk] whole, the way its rung encodes."""
    import copy

    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.codec import frames_to_tensor
    from motionstream.stream.engine import chunk_video_frames

    model, _, meta, codec = parts
    codec = copy.deepcopy(codec)
    torch.nn.init.normal_(codec.vae.encoder.head.weight, std=0.1)      # a nonlinear residual to leave out
    gen = make_gen((model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec),
                   overlap_decode=False, seed=3, quality_ladder={"1-step": [1 / 3], "1-step-linear": [1 / 3]},
                   quality_prior={"1-step-linear": "linear"}, quality="1-step")
    gen.start(sample_image(), "a bright square")
    gen.push(moving_square(1 + 4 * 11))
    seen = []
    chunk_tracks = gen.controls.chunk_tracks
    gen.controls.chunk_tracks = lambda *a: seen.append(chunk_tracks(*a)) or seen[-1]

    def encoded_whole(linear: bool) -> torch.Tensor:
        video = frames_to_tensor(np.concatenate([gen.prior_image[None], chunk_video_frames(gen.prior_image, seen[-1])]))
        with torch.inference_mode():
            raw = codec.vae.encode_linear(video) if linear else codec.vae.encode(video)[0]
        return codec.normalize(raw)[:, :, 1:]

    gen.generate_latents()
    assert not gen.prior_encoder.linear
    for rung, linear in [("1-step-linear", True), ("1-step", False)]:
        gen.set_quality(rung)
        gen.generate_latents()
        assert gen.prior_encoder.linear == linear
        torch.testing.assert_close(gen.sampler.cond.prior, encoded_whole(linear), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(encoded_whole(not linear), encoded_whole(linear), atol=1e-2)
    with pytest.raises(ValueError, match="encode, latent, linear"):
        StreamConfig(quality_prior={"1-step": "pixels"})


def test_the_one_step_rung_is_one_pass_from_the_noised_prior(parts):
    """Rung 1-step (u = [1/3], fused cache pass): a chunk is one DiT pass at t = shift(1/3) = 0.6 that also
    writes the cache, and its input is the chunk's prior noised to 0.6, not pure noise."""
    from motionstream.diffusion.sampling import TeacherParam

    model, _, meta, codec = parts
    gen = make_gen((model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec),
                   overlap_decode=False, seed=3, quality_ladder={"1-step": [1 / 3]}, quality="1-step",
                   fuse_cache_pass=True)
    gen.start(sample_image(), "a bright square")
    gen.push(moving_square(1 + 4 * 11))
    calls = []
    forward_chunk = gen.model.forward_chunk
    gen.model.forward_chunk = lambda x, t, *rest: calls.append((x, t, rest[-1])) or forward_chunk(x, t, *rest)
    try:
        gen.generate_latents()
        gen.generate_latents()
    finally:
        del gen.model.forward_chunk
    assert [(round(float(t.flatten()[0]), 4), write) for _, t, write in calls] == [(0.6, True), (0.6, True)]
    x = calls[-1][0]
    noise = (x - 0.4 * gen.sampler.prior) / 0.6      # what is left of the input once the noised prior is taken out
    assert gen.sampler.prior.abs().mean() > 0.2 and abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1


def test_drag_paste_prior_moves_the_dragged_segment_and_leaves_other_motion_to_the_warp(parts, monkeypatch):
    """stream.drag_paste: a chunk moved only by a live drag + pins takes segment-paste pixels as its
    encoded prior and composite (segmented once per patch); with the latent prior, the anchor latent
    moves along the same segments over the encoded plate; a pushed transfer TrackSet and more patches
    than MAX_PATCHES keep the Gaussian warp."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.codec import frames_to_tensor
    from motionstream.models.conditioning import warp_latent
    from motionstream.stream import engine
    from motionstream.tracks import paste
    from motionstream.tracks.paste import MAX_PATCHES, SegmentCache, drag_groups
    from motionstream.stream.engine import (chunk_drag_segments, chunk_flows, chunk_paste_frames, chunk_video_frames,
                                            is_drag_chunk)

    model, _, meta, codec = parts
    video_parts = (model, TeacherParam("video", skip_form="mmse", prior_var=0.5), meta, codec)
    gen = make_gen(video_parts, overlap_decode=False, seed=3, drag_paste=True, composite=[0.1, 0.5])
    gen.start(sample_image(), "a bright square")
    seen, encoded, segmented = [], [], []
    chunk_tracks, encode_chunk = gen.controls.chunk_tracks, gen.prior_encoder.encode_chunk
    gen.controls.chunk_tracks = lambda *a: seen.append(chunk_tracks(*a)) or seen[-1]
    gen.prior_encoder.encode_chunk = lambda x: encoded.append(x.clone()) or encode_chunk(x)
    segment = paste.segment_object
    monkeypatch.setattr(paste, "segment_object", lambda *a: segmented.append(1) or segment(*a))
    gen.controls.add_pins(np.array([[4.0, 4.0], [VIDEO_W - 4.0, VIDEO_H - 4.0]]))
    drag = gen.controls.pointer_down(0.0, VIDEO_W / 2, VIDEO_H / 2, radius=4, spacing=4)
    gen.controls.pointer_move(drag, 0.5, VIDEO_W / 2 + 12, VIDEO_H / 2)
    for _ in range(2):
        gen.generate_latents()
        chunk = seen[-1]
        assert is_drag_chunk(chunk)
        want = chunk_paste_frames(gen.prior_image, chunk, SegmentCache())
        assert (gen.last_blend[0] == want).all()
        torch.testing.assert_close(encoded[-1], frames_to_tensor(want))
    assert len(segmented) == 1 + 2          # once in the stream (cached for chunk 2), twice for `want`
    assert not (want[-1] == chunk_video_frames(gen.prior_image, chunk)[-1]).all()   # not the warp

    gen.reset()
    gen.push(moving_square(1 + 4 * 8))                          # transfer tracks: the Gaussian warp
    gen.generate_latents()
    assert not is_drag_chunk(seen[-1])
    assert (gen.last_blend[0] == chunk_video_frames(gen.prior_image, seen[-1])).all()

    latent = make_gen(video_parts, overlap_decode=False, seed=3, drag_paste=True, composite=[0.1, 0.5], prior="latent")
    latent.start(sample_image(), "a bright square")
    latent_chunk_tracks = latent.controls.chunk_tracks
    latent.controls.chunk_tracks = lambda *a: seen.append(latent_chunk_tracks(*a)) or seen[-1]
    drag = latent.controls.pointer_down(0.0, VIDEO_W / 2, VIDEO_H / 2, radius=4, spacing=4)
    latent.controls.pointer_move(drag, 0.5, VIDEO_W / 2 + 12, VIDEO_H / 2)
    warps = []
    monkeypatch.setattr(engine, "warp_latent",
                        lambda *a, **k: warps.append((a, k, warp_latent(*a, **k))) or warps[-1][2])
    latent.generate_latents()
    chunk = seen[-1]                                            # the latent prior: the same segments, moved
    assert is_drag_chunk(chunk)                                 # on the latent grid over the encoded plate
    assert (latent.last_blend[0] == chunk_paste_frames(latent.prior_image, chunk, SegmentCache())).all()
    (anchor, flows, *_), kwargs, prior = warps[-1]
    plate_latent, holes = kwargs["fill"]
    masks, shifts, plate = chunk_drag_segments(latent.prior_image, chunk, SegmentCache())
    want_flows, want_holes = paste.paste_flows(masks, shifts)
    assert (flows == want_flows).all() and (holes == want_holes).all() and holes[-1].any()
    torch.testing.assert_close(plate_latent, latent.codec.encode(frames_to_tensor(plate))[:, :, 0])
    assert not torch.allclose(prior, warp_latent(anchor, chunk_flows(chunk, VIDEO_W, VIDEO_H), 4, True))

    small = make_gen(video_parts, overlap_decode=False, seed=3, drag_paste=True, composite=[0.1, 0.5], prior="latent",
                     quality_ladder={"small": [1.0]}, quality_scale={"small": 0.5}, quality="small")
    small.start(sample_image(), "a bright square")              # a smaller working size keeps the drag roles
    drag = small.controls.pointer_down(0.0, VIDEO_W / 2, VIDEO_H / 2, radius=4, spacing=4)
    small.controls.pointer_move(drag, 0.5, VIDEO_W / 2 + 12, VIDEO_H / 2)
    small.generate_latents()
    assert small.prior_image.shape[:2] == (32, 32) and warps[-1][1]["fill"] is not None

    gen.reset()                                                 # more patches than a stream segments: the warp
    for k in range(MAX_PATCHES + 1):
        drag = gen.controls.pointer_down(0.0, 4.0 + 3 * k, VIDEO_H / 2, radius=0)
        gen.controls.pointer_move(drag, 0.5, 4.0 + 3 * k, VIDEO_H / 2 + 1 + k)
    gen.generate_latents()
    assert len(drag_groups(seen[-1].tracks)) == MAX_PATCHES + 1 and not is_drag_chunk(seen[-1])
    assert (gen.last_blend[0] == chunk_video_frames(gen.prior_image, seen[-1])).all()
