"""`motionstream train gt`: the student's self-rollout regressed on the world's ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from motionstream.cli import main
from motionstream.config import load_config
from motionstream.train.losses_student import changed_cell_weights, weighted_mse

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(tmp_path) -> str:
    """tiny-cpu at 64x32 pixels (8x4 latent cells): the shipped student runs in a fraction of a second."""
    cfg = load_config("tiny-cpu")
    cfg["video"].update(width=64, height=32)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_changed_weights_follow_the_pixels_that_change():
    frames = np.zeros((9, 16, 16, 3), np.uint8)
    frames[5:, :8, :8] = 200                       # the top-left cell changes from video frame 5 on
    w = changed_cell_weights(frames, 8, 4, weight=8.0)
    assert w.shape == (3, 2, 2)
    assert torch.equal(w[0], torch.ones(2, 2)) and torch.equal(w[1], torch.ones(2, 2))
    assert w[2, 0, 0] == 9.0 and (w[2].flatten()[1:] == 1).all()


def test_weighted_mse_is_mse_for_uniform_weights_and_ignores_zero_weight():
    x, y = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    assert torch.allclose(weighted_mse(x, y, torch.ones(2, 1, 3, 2, 2)), ((x - y) ** 2).mean())
    w = torch.zeros(2, 1, 3, 2, 2)
    w[:, :, 0] = 1
    assert torch.allclose(weighted_mse(x, y, w), ((x - y)[:, :, 0] ** 2).mean())


def run_gt(tmp_path, run, steps: int) -> int:
    return main(["train", "gt", "--config", small_config(tmp_path), "--run", str(run), "--steps", str(steps),
                 "--student", "student-ode-tiny-cpu", "--no-progress", "--threads", "1",
                 "--set", "train_gt.log_every=1", "--set", "train_gt.eval_every=0",
                 "--set", "train_gt.checkpoint_every=1", "--set", "train_gt.export_every=1"])


def losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_resumed_run_replays_the_same_batches(tmp_path):
    """Two steps in one go, and one step then a resume: the second step's loss is the same, and the
    exported student loads as a streaming student."""
    assert run_gt(tmp_path, tmp_path / "a", 2) == 0
    assert run_gt(tmp_path, tmp_path / "b", 1) == 0
    assert run_gt(tmp_path, tmp_path / "b", 2) == 0
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(a) == len(b) == 2 and a[0] == pytest.approx(b[0], rel=1e-5)
    assert a[1] == pytest.approx(b[1], rel=1e-4)
    from motionstream.train.rollout import load_student

    _, scfg, param, meta = load_student(tmp_path / "a" / "student")
    assert meta["stage"] == "gt" and meta["step"] == 2 and param.output_skip == "video"


def test_every_input_kind_builds_a_batch(tmp_path):
    from motionstream.models.codec import load_codec
    from motionstream.models.text import load_text_encoder
    from motionstream.train.gt import INPUT_KINDS, ClipSource, GTTrainConfig
    from motionstream.train.rollout import load_student

    cfg = load_config(small_config(tmp_path))
    model, scfg, _, _ = load_student("student-ode-tiny-cpu")
    source = ClipSource(load_codec("vae-tiny-cpu", tiny_decoder=None), load_text_encoder(cfg), (64, 32, 16.0),
                        cfg["tracks"], GTTrainConfig())
    batch = source.batch(0, [0, 1, 2], 3, scfg, model.cfg, kinds=list(INPUT_KINDS))
    assert batch.target.shape == (3, 16, 9, 4, 8) and batch.weights.shape == (3, 1, 9, 4, 8)
    assert batch.cond.prior.shape == batch.target.shape and len(batch.noise) == 3
    drag = batch.kinds.index("drag")
    assert batch.cond.track_map[drag].abs().sum() > 0


def test_the_latent_prior_option_trains_around_the_warped_first_latent(tmp_path):
    """train_gt.prior = latent: the batch's prior starts from the first latent itself and is not the
    encoded pixel warp (the same targets); bad values are refused. That the stream feeds the same
    prior is tests/stream/test_stream.py::test_latent_prior_of_the_stream_equals_the_whole_clip_one."""
    from motionstream.models.codec import load_codec
    from motionstream.models.text import load_text_encoder
    from motionstream.train.gt import ClipSource, GTTrainConfig
    from motionstream.train.rollout import load_student

    cfg = load_config(small_config(tmp_path))
    model, scfg, _, _ = load_student("student-ode-tiny-cpu")
    codec, text = load_codec("vae-tiny-cpu", tiny_decoder=None), load_text_encoder(cfg)
    batches = {prior: ClipSource(codec, text, (64, 32, 16.0), cfg["tracks"], GTTrainConfig(prior=prior))
               .batch(0, [0], 3, scfg, model.cfg, kinds=["dense"]) for prior in ("encode", "latent")}
    latent = batches["latent"]
    torch.testing.assert_close(latent.target, batches["encode"].target)
    assert not torch.allclose(latent.cond.prior, batches["encode"].cond.prior)
    torch.testing.assert_close(latent.cond.prior[:, :, 0], latent.target[:, :, 0])
    with pytest.raises(ValueError, match="train_gt.prior"):
        GTTrainConfig(prior="pixels")
    with pytest.raises(ValueError, match="drag_paste"):
        GTTrainConfig(prior="latent", drag_paste=True)


def test_drag_paste_moves_the_drag_prior_by_segment_paste_and_leaves_dense_inputs_on_the_warp(tmp_path):
    """models/conditioning.video_prior(drag_paste=True) gives the studio's drags and pins the segment
    paste (what the stream's drag_paste feeds) and other tracks the warp; train_gt.drag_paste changes
    the drag samples' prior only."""
    from motionstream.models.codec import load_codec
    from motionstream.models.conditioning import video_prior
    from motionstream.models.frames import frames_to_tensor
    from motionstream.models.text import load_text_encoder
    from motionstream.tracks.paste import segment_paste
    from motionstream.tracks.trackset import TrackSet
    from motionstream.tracks.warp import forward_warp
    from motionstream.train.gt import ClipSource, GTTrainConfig
    from motionstream.train.rollout import load_student

    image = np.full((32, 64, 3), 40, np.uint8)
    image[8:20, 10:24] = (220, 60, 30)                               # a block the drag moves right
    patch = np.array([[14.0, 12.0], [18.0, 12.0], [14.0, 16.0], [18.0, 16.0]])
    pins = np.array([[x, y] for x in (40.0, 56.0) for y in (4.0, 28.0)])
    start = np.concatenate([patch, pins])
    moved = start.copy()
    moved[:4, 0] += 8.0
    tracks = np.stack([start + (moved - start) * t / 8 for t in range(9)]).astype(np.float32)
    shown = np.ones(tracks.shape[:2], bool)
    drags = TrackSet(tracks, shown, 64, 32, 16.0, role=["drag"] * 4 + ["static"] * 4)
    plain = TrackSet(tracks, shown, 64, 32, 16.0)

    def identity(video):
        return video

    pasted = video_prior(identity, [image], [drags], 3, drag_paste=True)
    torch.testing.assert_close(pasted, frames_to_tensor(segment_paste(image, drags)))
    torch.testing.assert_close(video_prior(identity, [image], [plain], 3, drag_paste=True),
                               frames_to_tensor(forward_warp(image, plain)))
    assert not torch.allclose(pasted, video_prior(identity, [image], [drags], 3))

    cfg = load_config(small_config(tmp_path))
    model, scfg, _, _ = load_student("student-ode-tiny-cpu")
    codec, text = load_codec("vae-tiny-cpu", tiny_decoder=None), load_text_encoder(cfg)
    batches = {paste: ClipSource(codec, text, (64, 32, 16.0), cfg["tracks"], GTTrainConfig(drag_paste=paste))
               .batch(0, [1, 2], 3, scfg, model.cfg, kinds=["drag", "dense"]) for paste in (False, True)}
    torch.testing.assert_close(batches[True].target, batches[False].target)
    assert not torch.allclose(batches[True].cond.prior[0], batches[False].cond.prior[0])
    torch.testing.assert_close(batches[True].cond.prior[1], batches[False].cond.prior[1])
