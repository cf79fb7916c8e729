import numpy as np
import pytest
import torch

from motionstream.config import ConfigError, VideoConfig, from_dict, load_config, video_config
from motionstream.models.checkpoints import WeightsNotFound, load_model_dir, save_model_dir
from motionstream.tracks import TrackError, TrackSet
from motionstream.train.common import EMA, lr_at, load_training_state, save_training_state


def make(t=4, n=3, **kw):
    args = dict(tracks=np.zeros((t, n, 2), np.float32), visibility=np.ones((t, n), bool), width=64, height=32, fps=16)
    args.update(kw)
    return TrackSet(**args)


@pytest.mark.parametrize("kw, message", [
    (dict(tracks=np.zeros((4, 3), np.float32)), "shape"),
    (dict(tracks=np.zeros((4, 3, 2), np.float64)), "float32"),
    (dict(tracks=np.full((4, 3, 2), np.nan, np.float32)), "NaN"),
    (dict(visibility=np.ones((4, 3), np.uint8)), "bool"),
    (dict(visibility=np.ones((5, 3), bool)), "mismatch"),
    (dict(width=0), "width"),
    (dict(height=-2), "height"),
    (dict(fps=0), "fps"),
    (dict(fps=float("inf")), "fps"),
    (dict(role=["drag", "bogus", "static"]), "roles"),
    (dict(ids=np.arange(2)), "ids"),
])
def test_trackset_rejects_bad_input(kw, message):
    with pytest.raises(TrackError, match=message):
        make(**kw)


def test_trackset_outside_points_are_legal_but_do_not_condition():
    ts = make(tracks=np.array([[[-5, 3], [10, 10], [64, 0]]] * 4, np.float32))
    assert ts.conditioning_mask()[0].tolist() == [False, True, False]


def test_trackset_subset_concat_scaled():
    ts = make(n=4, ids=np.arange(4), role=["drag", "static", "path", "camera"])
    sub = ts.subset([1, 3])
    assert sub.role == ["static", "camera"] and sub.ids.tolist() == [1, 3]
    both = TrackSet.concat([sub, ts.subset([0])])
    assert both.num_tracks == 3 and both.role == ["static", "camera", "drag"]
    big = make(tracks=np.full((4, 3, 2), 8, np.float32)).scaled(128, 16)
    assert big.tracks[0, 0].tolist() == [16.0, 4.0]


def test_config_rejects_unknown_keys():
    from dataclasses import dataclass

    @dataclass
    class C:
        a: int = 1

    assert from_dict(C, {"a": 3}).a == 3
    with pytest.raises(ConfigError, match="unknown keys"):
        from_dict(C, {"b": 3})
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-preset")
    assert load_config("tiny-cpu")["video"]["fps"] == 16


def test_video_config_is_read_typed_from_the_preset():
    video = video_config(load_config("wan2.2-5b"))
    assert (video.size, video.fps) == ((1280, 704), 24.0) and isinstance(video.fps, float)
    assert video_config({"name": "bare"}) == VideoConfig(256, 144, 16.0)     # no section: tiny-cpu's format
    assert video_config({"video": {"width": 64.0, "height": 32, "fps": 8}}).size == (64, 32)
    assert isinstance(video_config({"video": {"width": 64.0}}).width, int)
    with pytest.raises(ConfigError, match="unknown keys"):
        video_config({"video": {"widht": 64}})
    with pytest.raises(ConfigError, match="positive"):
        video_config({"video": {"fps": 0}})
    with pytest.raises(ConfigError, match="numbers"):
        video_config({"video": {"height": "tall"}})


def test_config_overrides_set_existing_keys_only():
    cfg = load_config("tiny-cpu", ["train_teacher.lr=1e-4", "train_teacher.phase1_steps=0",
                                   "train_dmd.sink_choices=[1]", "stream.overlap_decode=false"])
    assert cfg["train_teacher"]["lr"] == pytest.approx(1e-4)
    assert cfg["train_teacher"]["phase1_steps"] == 0
    assert cfg["train_dmd"]["sink_choices"] == [1]
    assert cfg["stream"]["overlap_decode"] is False
    assert load_config("tiny-cpu")["train_teacher"]["lr"] == pytest.approx(3e-4)  # the preset file is untouched
    with pytest.raises(ConfigError, match="no key 'lrr'"):
        load_config("tiny-cpu", ["train_teacher.lrr=1"])
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        load_config("tiny-cpu", ["train_teacher.lr"])


def test_model_dir_roundtrip_fp16(tmp_path):
    lin = torch.nn.Linear(3, 2)
    save_model_dir(tmp_path / "m", lin.state_dict(), {"kind": "test"})
    meta, sd = load_model_dir(tmp_path / "m")
    assert meta["kind"] == "test" and sd["weight"].dtype == torch.float32
    torch.testing.assert_close(sd["weight"], lin.weight.detach().half().float())
    with pytest.raises(WeightsNotFound, match="no model folder"):
        load_model_dir(tmp_path / "missing")


def test_training_state_resume_is_exact(tmp_path):
    def run(steps, resume):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=lr_at(0, 1e-2, 2, 10))
        ema = EMA(model)
        start = 0
        if resume:
            start, _ = load_training_state(tmp_path, {"model": model, "ema": ema}, {"opt": opt})
        for step in range(start, steps):
            x = torch.randn(8, 4)
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema.update(model)
            if step == 2 and not resume:
                save_training_state(tmp_path, step + 1, {"model": model, "ema": ema}, {"opt": opt})
        return model.weight.detach().clone(), ema.shadow["weight"].clone()

    full_w, full_ema = run(6, resume=False)
    res_w, res_ema = run(6, resume=True)
    torch.testing.assert_close(full_w, res_w)
    torch.testing.assert_close(full_ema, res_ema)
