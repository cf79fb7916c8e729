"""stream/composite.py: the warp's pixels where the student keeps its "video" prior."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from stream_fixtures import FPS, HashTextEncoder, make_model_folders, moving_square, sample_image

from motionstream.stream.composite import (chunk_is_still, composite_frames, composite_weight, latent_gap,
                                           video_frame_latents)
from motionstream.stream.controls import ChunkTracks
from motionstream.stream.engine import StreamConfig, StreamingGenerator, chunk_video_frames, load_stream_model
from motionstream.tracks.trackset import TrackSet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_video_frames_map_to_their_latent_frames():
    assert video_frame_latents(3, 4, first_chunk=True).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert video_frame_latents(2, 4, first_chunk=False).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_weight_ramps_from_lo_to_hi_and_blends():
    gap = np.array([[[0.0, 0.5], [1.0, 2.0]]], np.float32)          # [F=1, h=2, w=2]
    weight = composite_weight(gap, 0.5, 1.0, (2, 2), temporal_factor=4, first_chunk=True)
    assert weight.shape == (1, 2, 2) and weight.tolist() == [[[0.0, 0.0], [1.0, 1.0]]]
    decoded, warp = np.full((1, 2, 2, 3), 200, np.uint8), np.full((1, 2, 2, 3), 100, np.uint8)
    out = composite_frames(decoded, warp, weight)
    assert out[0, 0].tolist() == [[100] * 3] * 2 and out[0, 1].tolist() == [[200] * 3] * 2
    with pytest.raises(ValueError):
        composite_weight(gap, 1.0, 0.5, (2, 2), 4, True)
    with pytest.raises(ValueError):
        StreamConfig(composite=[0.8, 0.3])


def test_the_blend_is_the_weighted_mean_of_the_two_frames_rounded():
    rng = np.random.default_rng(0)
    decoded, warp = (rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8) for _ in range(2))
    weight = rng.random((3, 5, 7)).astype(np.float32)
    expected = warp * (1 - weight[..., None]) + decoded * weight[..., None]
    out = composite_frames(decoded, warp, weight)
    assert out.dtype == np.uint8 and out.shape == decoded.shape
    assert np.abs(out - expected).max() <= 0.5 + 1e-3
    assert composite_frames(decoded[:0], warp[:0], weight[:0]).shape == (0, 5, 7, 3)


def test_latent_gap_is_channel_rms():
    x0, prior = torch.zeros(1, 4, 2, 3, 3), torch.zeros(1, 4, 2, 3, 3)
    x0[0, :, 1, 0, 0] = 2.0
    gap = latent_gap(x0, prior)
    assert gap.shape == (2, 3, 3) and gap[1, 0, 0] == pytest.approx(2.0) and gap.sum() == pytest.approx(2.0)


@pytest.fixture(scope="module")
def video_prior_parts(tmp_path_factory):
    """The tiny random student run with the "video" prior (the shipped student's output skip)."""
    from motionstream.models.codec import load_codec

    folders = make_model_folders(tmp_path_factory.mktemp("composite_models"))
    model, param, _ = load_stream_model(folders["student"])
    return model, replace(param, output_skip="video", skip_form="mmse"), load_codec(folders["vae"], folders["tiny"])


def stream(parts, composite, chunks=2, tracks=None, still_px=-1.0, **config):
    model, param, codec = parts
    gen = StreamingGenerator(model, codec, HashTextEncoder(),
                             StreamConfig(composite=composite, still_px=still_px, **config), param, fps=FPS)
    gen.start(sample_image(), "a bright square")
    gen.push(moving_square(40) if tracks is None else tracks)
    warps, frames = [], []
    for _ in range(chunks):
        warps.append(chunk_video_frames(gen.prior_image, gen.controls.chunk_tracks(gen.next_frame,
                                                                                 gen.chunk_num_frames())))
        frames.append(gen.next_chunk())
    gen.close()
    return np.concatenate(frames), np.concatenate(warps)


def test_engine_shows_the_warp_where_the_student_keeps_its_prior(video_prior_parts):
    plain, warp = stream(video_prior_parts, [])
    assert not np.array_equal(plain, warp)                 # the decoded latents are not the warp
    kept, _ = stream(video_prior_parts, [1e6, 2e6])        # every gap below lo: all warp pixels
    assert np.array_equal(kept, warp)
    moved, _ = stream(video_prior_parts, [0.0, 1e-9])      # every gap above hi: the decoded latents
    assert np.array_equal(moved, plain)


def _chunk(offsets: np.ndarray, visible: np.ndarray) -> ChunkTracks:
    """A chunk of 2 tracks anchored at (10, 10) and (20, 10), moved by offsets [T, 2, 2] px."""
    anchors = np.array([[10.0, 10.0], [20.0, 10.0]], np.float32)
    ts = TrackSet((anchors[None] + offsets).astype(np.float32), visible, 64, 48, FPS, ids=np.array([1, 2]))
    return ChunkTracks(ts, anchors, np.ones(2, bool), start_frame=0)


def test_a_chunk_is_still_when_no_visible_track_leaves_its_anchor():
    offsets = np.zeros((3, 2, 2), np.float32)
    offsets[2, 1] = [0.3, 0.0]
    assert chunk_is_still(_chunk(offsets, np.ones((3, 2), bool)), tolerance_px=0.5)
    offsets[2, 1] = [0.0, 2.0]                            # one track moves 2 px on the last frame
    assert not chunk_is_still(_chunk(offsets, np.ones((3, 2), bool)), tolerance_px=0.5)
    hidden = np.ones((3, 2), bool)
    hidden[2, 1] = False                                  # ... while hidden there: nothing visible moves
    assert chunk_is_still(_chunk(offsets, hidden), tolerance_px=0.5)
    assert not chunk_is_still(_chunk(offsets, np.zeros((3, 2), bool)), tolerance_px=0.5)  # all hidden: not still
    empty = TrackSet(np.zeros((3, 0, 2), np.float32), np.zeros((3, 0), bool), 64, 48, FPS, ids=np.zeros(0, np.int64))
    assert chunk_is_still(ChunkTracks(empty, np.zeros((0, 2), np.float32), np.zeros(0, bool), 0), tolerance_px=0.5)


def test_a_still_stream_shows_the_image_itself(video_prior_parts):
    """Tracks that never move: with still_px the frames are the image exactly (no codec blur); the
    moving square's stream is unaffected by the gate."""
    still = moving_square(40)
    still = TrackSet(np.repeat(still.tracks[:1], 40, axis=0), still.visibility, still.width, still.height,
                     still.fps, ids=still.ids)
    decoded, _ = stream(video_prior_parts, [0.0, 1e-9], tracks=still)           # every pixel from the latents
    gated, _ = stream(video_prior_parts, [0.0, 1e-9], tracks=still, still_px=0.5)
    image = sample_image()
    assert not all(np.array_equal(f, image) for f in decoded)
    assert all(np.array_equal(f, image) for f in gated)
    moving, _ = stream(video_prior_parts, [0.0, 1e-9], still_px=0.5)
    plain, _ = stream(video_prior_parts, [0.0, 1e-9])
    assert np.array_equal(moving, plain)
    # on a smaller rung too: the image at the stream's size, not the working size's copy scaled back up
    small = {"quality_ladder": {"small": [1.0]}, "quality_scale": {"small": 0.5}, "quality": "small"}
    gated_small, _ = stream(video_prior_parts, [0.0, 1e-9], tracks=still, still_px=0.5, **small)
    assert gated_small.shape[1:3] == image.shape[:2] and all(np.array_equal(f, image) for f in gated_small)


def test_dropped_content_stays_where_the_drag_released_it(video_prior_parts):
    """A drag moves the bright square right, then is released: the frames after the release keep the
    square where it was dropped (the prior holds it), they do not snap back to the image."""
    model, param, codec = video_prior_parts
    gen = StreamingGenerator(model, codec, HashTextEncoder(), StreamConfig(composite=[1e6, 2e6], still_px=0.5),
                             param, fps=FPS)
    image = sample_image()
    gen.start(image, "a bright square")
    drag = gen.controls.pointer_down(t=0.0, x=28, y=24)
    gen.push([(0.5, 40, 24)], drag_id=drag)                # 12 px to the right by frame 8
    gen.controls.pointer_up(drag, t=0.6)
    frames = np.concatenate([gen.next_chunk() for _ in range(3)])
    gen.close()
    last = frames[-1].astype(int)
    assert np.abs(last - image).mean() > 1.0                # not the image again
    assert last[24, 40].mean() > last[24, 22].mean() + 50   # the square's content sits at the drop point
