import json

import numpy as np
import pytest

from motionstream.diffusion.generate import clip_length, fit_length, fit_tracks
from motionstream.tracks.trackset import TrackSet
from motionstream.video import read_video, resize_crop, write_image


def _dot_image(w, h, xy):
    img = np.zeros((h, w, 3), np.uint8)
    x, y = xy
    img[y - 2:y + 3, x - 2:x + 3] = 255
    return img


@pytest.mark.parametrize("src", [(200, 80), (90, 90), (64, 32)])
def test_fit_tracks_maps_points_like_resize_crop_maps_pixels(src):
    w, h = src
    xy = (int(w * 0.6), int(h * 0.4))
    ts = TrackSet(np.array([[[xy[0] + 0.5, xy[1] + 0.5]]], np.float32), np.ones((1, 1), bool), w, h, 16)
    out = resize_crop(_dot_image(w, h, xy), (64, 32)).astype(float).sum(2)
    ys, xs = np.nonzero(out > 0.5 * out.max())
    centre = np.array([(xs.mean() + 0.5), (ys.mean() + 0.5)])
    mapped = fit_tracks(ts, 64, 32)
    assert (mapped.width, mapped.height) == (64, 32)
    assert np.abs(mapped.tracks[0, 0] - centre).max() < 1.0


def test_clip_length_and_fit_length():
    assert clip_length(None, 35, 4) == 33 and clip_length(10, 35, 4) == 9 and clip_length(1, 5, 4) == 1
    ts = TrackSet(np.arange(10, dtype=np.float32).reshape(5, 1, 2), np.ones((5, 1), bool), 64, 32, 16)
    longer = fit_length(ts, 9)
    assert longer.num_frames == 9 and np.array_equal(longer.tracks[8], ts.tracks[4])
    assert fit_length(ts, 3).num_frames == 3


@pytest.mark.slow
def test_generate_cli_with_keyframe_tracks(tmp_path):
    """End to end: a tiny random teacher folder, a PNG and a 30 fps keyframe JSON -> an mp4 of the asked length."""
    import torch

    from motionstream.cli import main
    from motionstream.config import load_config, section
    from motionstream.diffusion.flow import DiffusionConfig
    from motionstream.train.teacher import TeacherTrainConfig, build_teacher, export_teacher, teacher_param
    from teacher_fixtures import tiny_config, tiny_vae_folder

    vae = tiny_vae_folder(tmp_path)
    cfg_path = tiny_config(tmp_path, tmp_path / "cache", vae)
    cfg = load_config(cfg_path)
    torch.manual_seed(0)
    model, dit_cfg = build_teacher(cfg)
    export_teacher(tmp_path / "teacher", model.state_dict(), dit_cfg,
                   teacher_param(section(cfg, "train_teacher", TeacherTrainConfig)), section(cfg, "diffusion", DiffusionConfig))
    write_image(tmp_path / "img.png", np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8))
    (tmp_path / "t.json").write_text(json.dumps({"fps": 30, "width": 128, "height": 64, "num_frames": 40, "tracks": [
        {"keyframes": [[0, 20, 20, 1], [39, 100, 40, 1]], "role": "drag"}]}))
    out = tmp_path / "out.mp4"
    args = ["generate", "--model", str(tmp_path / "teacher"), "--vae", str(vae), "--config", str(cfg_path),
            "--image", str(tmp_path / "img.png"), "--prompt", "a disc slides right", "--tracks", str(tmp_path / "t.json"),
            "--steps", "2", "--frames", "11", "-o", str(out), "--no-progress", "--draw-tracks"]
    assert main(args) == 0
    frames, fps = read_video(out)
    assert frames.shape == (9, 32, 64, 3) and fps == pytest.approx(16)
    assert main(args[:1] + ["--model", str(tmp_path / "no-such-model")] + args[3:]) == 2   # clear error, no traceback
    assert main([a if a != str(tmp_path / "t.json") else str(tmp_path / "missing.npz") for a in args]) == 2


def test_thin_tracks_keeps_sparse_inputs_and_thins_dense_ones():
    from motionstream.diffusion.generate import thin_tracks

    ts = TrackSet(np.random.default_rng(0).random((3, 500, 2)).astype(np.float32) * 30, np.ones((3, 500), bool), 64, 32, 16)
    assert thin_tracks(ts, 600) is ts
    thin = thin_tracks(ts, 100)
    assert thin.num_tracks == 100 and thin == thin_tracks(ts, 100)      # deterministic
    assert np.isin(thin.tracks[0, :, 0], ts.tracks[0, :, 0]).all()
