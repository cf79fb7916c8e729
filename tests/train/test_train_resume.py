"""Resuming the codec stages (VAE, tiny decoder) replays the uninterrupted run: a run killed after
its last checkpoint and resumed computes the same losses at the same steps and ends with the same
weights. (The teacher, ODE and DMD stages have the same check in their own test files.)

The kill is simulated in-process: the loss function raises on the step after a checkpoint, so the
loop dies without its final save, exactly what a `kill -9` leaves behind.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 4          # the uninterrupted run
CHECKPOINT = 2     # checkpoint_every_steps: the killed run dies in step CHECKPOINT + 1
SIZE = 16          # clips and crops are 16x16


class Killed(Exception):
    """Stands in for a kill -9 in the middle of a step."""


def clip(seed: int, n: int, w: int, h: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def small_train(t) -> None:
    """A pool of 2 five-frame clips refreshed every step, so the data order depends on the pool's state."""
    t.crop_width = t.crop_height = SIZE
    t.num_frames = t.clip_frames = t.eval_frames = 5
    t.batch_size, t.clip_pool, t.eval_clips, t.warmup, t.clip_refresh_every = 1, 2, 1, 1, 1
    t.checkpoint_every_steps, t.gan_start_step, t.pca_clips = CHECKPOINT, 1, 2


@pytest.fixture
def recorded_losses(monkeypatch):
    """The reconstruction loss of every step, in order; `kill_at` makes that step's loss raise Killed."""
    import motionstream.train.codec as tc
    import motionstream.train.losses_codec as lc

    monkeypatch.setattr(tc, "world_seeds", lambda split, n: list(range(n)) if split == "train"
                        else [10 ** 6 + i for i in range(n)])
    record = {"losses": [], "kill_at": None}
    real = lc.reconstruction_loss

    def loss(*args, **kwargs):
        if record["kill_at"] is not None and len(record["losses"]) + 1 == record["kill_at"]:
            raise Killed
        out = real(*args, **kwargs)
        record["losses"].append(float(out[0].detach()))
        return out

    monkeypatch.setattr(lc, "reconstruction_loss", loss)
    return record


def straight_and_resumed(train, tmp_path, record) -> tuple[list[float], list[float]]:
    """(losses of the uninterrupted run, losses of the killed + resumed run), step by step."""
    train(tmp_path / "straight", STEPS)
    straight = record["losses"][:]
    record["losses"].clear()
    record["kill_at"] = CHECKPOINT + 1
    with pytest.raises(Killed):
        train(tmp_path / "resumed", STEPS)
    resumed = record["losses"][:CHECKPOINT]          # the losses up to the checkpoint the kill kept
    record["losses"].clear()
    record["kill_at"] = None
    train(tmp_path / "resumed", STEPS - CHECKPOINT)   # resumes at the checkpoint
    return straight, resumed + record["losses"]


def assert_same_run(tmp_path, straight: list[float], resumed: list[float], prefixes: tuple[str, ...]) -> None:
    assert len(straight) == len(resumed) == STEPS
    np.testing.assert_allclose(resumed, straight, rtol=1e-5)
    a, b = (load_file(str(tmp_path / run / "state.safetensors")) for run in ("straight", "resumed"))
    for k in a:
        if k.startswith(prefixes):
            assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_vae_resume_replays_the_same_data(tmp_path, recorded_losses):
    import motionstream.train.vae as tv
    from motionstream.models.vae import VAEConfig

    def train(run, steps):
        sec = tv.VAESection(model=VAEConfig(encoder_widths=[8, 8], decoder_widths=[8, 8]))
        small_train(sec.train)
        tv.train_vae(sec, run, steps=steps, clip_fn=clip, video_size=(SIZE, SIZE), progress=False)

    straight, resumed = straight_and_resumed(train, tmp_path, recorded_losses)
    assert_same_run(tmp_path, straight, resumed, ("vae.", "ema.", "disc."))


def test_tiny_decoder_resume_replays_the_same_data(tmp_path, recorded_losses):
    from motionstream.config import to_dict
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.models.tiny_decoder import TinyDecoderConfig
    from motionstream.models.vae import CausalVAE, VAEConfig
    from motionstream.train import tiny_decoder as tt

    torch.manual_seed(0)
    vae_cfg = VAEConfig(encoder_widths=[8, 8], decoder_widths=[8, 8])
    cfg = {**to_dict(vae_cfg), "latent_mean": [0.0] * 16, "latent_std": [1.0] * 16}
    save_model_dir(tmp_path / "vae", CausalVAE(vae_cfg).state_dict(), {"kind": "causal-vae", "config": cfg})
    tiny = TinyDecoderConfig(decoder_widths=[8, 8, 8, 8], patch_size=2, decoder_space_upscale=[True, True, False],
                             blocks_per_stage=1)

    def train(run, steps):
        sec = tt.TinyDecoderSection(model=tiny)
        small_train(sec.train)
        tt.train_tiny_decoder(sec, run, tmp_path / "vae", steps=steps, clip_fn=clip, video_size=(SIZE, SIZE),
                              progress=False)

    straight, resumed = straight_and_resumed(train, tmp_path, recorded_losses)
    assert_same_run(tmp_path, straight, resumed, ("tiny.", "ema.", "disc."))


def test_checkpoint_interval_is_a_preset_key_for_every_stage():
    """`--set SECTION.KEY=N` only reaches keys the preset has: each stage's interval must be there."""
    from motionstream.config import load_config

    keys = ["vae.train.checkpoint_every_steps", "tiny_decoder.train.checkpoint_every_steps",
            "train_teacher.checkpoint_every", "train_ode.checkpoint_every", "train_dmd.checkpoint_every"]
    cfg = load_config("tiny-cpu", [f"{k}=7" for k in keys])
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == 7, key


def test_ode_resume_replays_the_same_steps(tmp_path):
    """Stage 1 of distillation: run 1 step, resume to 3; the losses logged at steps 2 and 3 and the final
    weights equal those of 3 uninterrupted steps. (DMD and the teacher: test_dmd_pipeline.py, test_teacher.py.)"""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_dmd_pipeline import cli, distill_config

    cfg, teacher, cache = distill_config(tmp_path)
    common = ["ode", "--config", str(cfg), "--teacher", str(teacher), "--cache", str(cache)]
    cli(*common, "--run", str(tmp_path / "straight"), "--steps", "3")
    cli(*common, "--run", str(tmp_path / "resumed"), "--steps", "1")
    cli(*common, "--run", str(tmp_path / "resumed"), "--steps", "3")

    def losses(run: str) -> dict[int, float]:
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    a, b = losses("straight"), losses("resumed")
    assert sorted(b) == sorted(a) == [1, 2, 3]
    np.testing.assert_allclose([b[s] for s in (2, 3)], [a[s] for s in (2, 3)], rtol=1e-5)
    sa, sb = (load_file(str(tmp_path / run / "state.safetensors")) for run in ("straight", "resumed"))
    for k in sa:
        if k.startswith(("model.", "opt.")):
            assert torch.allclose(sa[k], sb[k], atol=1e-6), k
