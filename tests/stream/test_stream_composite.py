"""stream/composite.py: the warp's pixels where the student keeps its "video" prior."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from stream_fixtures import FPS, HashTextEncoder, make_model_folders, moving_square, sample_image

from motionstream.stream.composite import (composite_frames, composite_weight, latent_gap,
                                           video_frame_latents)
from motionstream.stream.engine import StreamConfig, StreamingGenerator, chunk_video_frames, load_stream_model

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


def stream(parts, composite, chunks=2):
    model, param, codec = parts
    gen = StreamingGenerator(model, codec, HashTextEncoder(), StreamConfig(composite=composite), param, fps=FPS)
    gen.start(sample_image(), "a bright square")
    gen.push(moving_square(40))
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
