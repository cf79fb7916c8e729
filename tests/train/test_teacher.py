import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from motionstream.config import load_config, section
from motionstream.diffusion.flow import DiffusionConfig
from motionstream.diffusion.sampling import TeacherParam, condition_prior, sample
from motionstream.train.cache import TeacherCache, latent_moving_mask, text_key
from motionstream.train.teacher import (TeacherTrainConfig, build_teacher, make_batch, teacher_loss, teacher_param,
                                        tracks_section)
from teacher_fixtures import FRAMES, HEIGHT, WIDTH, HashTextEncoder, build_tiny_cache, tiny_config, tiny_vae_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    vae = tiny_vae_folder(root)
    cache = build_tiny_cache(root, vae)
    cfg_path = tiny_config(root, cache, vae)
    return root, vae, cache, cfg_path


def _parts(cfg_path, **over):
    cfg = load_config(cfg_path)
    tcfg = replace(section(cfg, "train_teacher", TeacherTrainConfig), **over)
    return cfg, tcfg, section(cfg, "diffusion", DiffusionConfig), tracks_section(cfg)


def test_latent_moving_mask_counts_cells_and_disocclusions():
    moving = np.zeros((9, 16, 32), bool)
    moving[0, :8, :8] = True           # object at frame 0 in cell (0, 0)
    moving[5:9, 8:16, 24:28] = True    # later in half of cell (1, 3), frames of latent frame 2
    m = latent_moving_mask(moving, spatial_stride=8, temporal_stride=4)
    assert m.shape == (3, 2, 4)
    assert m[0, 0, 0] == 1 and m[0].sum() == 1
    assert m[1, 0, 0] == 1 and m[1, 1, 3] == 0      # the start cell stays "moving" (disocclusion)
    assert m[2, 1, 3] == pytest.approx(0.5) and m[2, 0, 0] == 1


def test_cache_roundtrip_resume_and_dedupe(setup):
    from motionstream.data.synth import render_clip
    from motionstream.models.codec import frames_to_tensor, load_codec
    from motionstream.train.cache import build_cache

    root, vae, cache_dir, _ = setup
    cache = TeacherCache(cache_dir)
    assert cache.seeds == [0, 1, 2, 3]
    clip = cache.load_seed(2)
    truth = render_clip(2, FRAMES, WIDTH, HEIGHT)
    codec = load_codec(vae, tiny_decoder=None)
    z = codec.encode(frames_to_tensor(truth.frames))[0]
    assert clip.latents.shape == z.shape == (16, 3, HEIGHT // 8, WIDTH // 8)
    assert torch.allclose(clip.latents, z, atol=2e-2 * z.abs().max().item())  # stored as fp16
    assert np.array_equal(clip.tracks.tracks, truth.tracks.tracks) and clip.caption == truth.caption
    assert np.array_equal(clip.first_frame, truth.frames[0])
    assert clip.moving.shape == (3, HEIGHT // 8, WIDTH // 8) and 0 <= clip.moving.min() and clip.moving.max() <= 1
    assert torch.equal(clip.text_tokens, HashTextEncoder().encode([truth.caption])[0][0].half().float())
    assert (cache_dir / "texts" / f"{text_key('')}.npz").is_file()
    pre = clip.prefix(2, 4)
    assert pre.latents.shape[1] == 2 and pre.tracks.num_frames == 5
    meta = json.loads((cache_dir / "meta.json").read_text())
    assert build_cache(cache_dir, [0, 1, 2, 3], None, codec, HashTextEncoder(), meta, progress=False) == 0
    with pytest.raises(ValueError, match="built with"):
        build_cache(cache_dir, [4], None, codec, HashTextEncoder(), {**meta, "codec": "other"}, progress=False)


def test_batch_draws_do_not_depend_on_batch_split(setup):
    """Sample i of step s is the same whether it is built alone or with others (torchrun equivalence)."""
    _, _, cache_dir, cfg_path = setup
    cfg, tcfg, dcfg, tr = _parts(cfg_path)
    _, dit_cfg = build_teacher(cfg)
    cache = TeacherCache(cache_dir)
    null = cache.text(text_key(""))
    clips = [cache[i] for i in (0, 1, 2, 3)]
    full = make_batch(clips, [0, 1, 2, 3], 7, tcfg, dcfg, dit_cfg, tr, null)
    half = make_batch(clips[2:], [2, 3], 7, tcfg, dcfg, dit_cfg, tr, null)
    assert torch.equal(full.noise[2:], half.noise) and torch.equal(full.t[2:], half.t)
    assert torch.equal(full.cond.track_map[2:], half.cond.track_map)
    other_step = make_batch(clips[2:], [2, 3], 8, tcfg, dcfg, dit_cfg, tr, null)
    assert not torch.equal(other_step.noise, half.noise)
    n_tracks = (full.cond.track_map[:, :, 0].abs().sum(1) > 0).sum((1, 2))
    assert (n_tracks >= 1).all() and (n_tracks <= 13).all()  # 1000-2500 scaled to 4x8 cells: 5-13 tracks


def test_text_motion_dropout_and_stage2_masking(setup):
    _, _, cache_dir, cfg_path = setup
    cache = TeacherCache(cache_dir)
    null = cache.text(text_key(""))
    clips = [cache[i] for i in range(4)]
    cfg, tcfg, dcfg, tr = _parts(cfg_path, text_drop=1.0, motion_drop=1.0)
    _, dit_cfg = build_teacher(cfg)
    b = make_batch(clips, [0, 1, 2, 3], 0, tcfg, dcfg, dit_cfg, tr, null)
    assert torch.equal(b.text[0, : null[0].shape[0]], null[0])
    assert b.cond.track_map.abs().sum() == 0 and b.cond.guide.abs().sum() == 0 and b.cond.guide_mask.sum() == 0
    assert b.cond.image_latent.abs().sum() > 0  # the image condition is never dropped
    cfg, tcfg, dcfg, tr = _parts(cfg_path, text_drop=0.0, motion_drop=0.0, stage=2)
    tr = replace(tr, mask_prob=1.0)
    b = make_batch(clips, [0, 1, 2, 3], 0, tcfg, dcfg, dit_cfg, tr, null)
    assert b.cond.track_map[:, :, 0].abs().sum() > 0          # frame 0 is never masked
    assert b.cond.track_map[:, :, 1:].abs().sum() == 0        # every later latent frame masked
    assert b.cond.guide_mask.sum() == 0
    assert not torch.equal(b.text[0], null[0])


def test_guide_skip_makes_untrained_teacher_paste_the_prior(setup):
    """Zero-initialised output layer + the guide skip: sampling lands on the prior the conditions imply."""
    _, _, cache_dir, cfg_path = setup
    cfg, tcfg, dcfg, tr = _parts(cfg_path, text_drop=0.0, motion_drop=0.0)
    model, dit_cfg = build_teacher(cfg)
    cache = TeacherCache(cache_dir)
    null = cache.text(text_key(""))
    b = make_batch([cache[0], cache[1]], [0, 1], 0, tcfg, dcfg, dit_cfg, tr, null)
    prior = condition_prior(b.cond)
    assert prior.shape == b.z0.shape and torch.equal(prior[:, :, 0], b.z0[:, :, 0])
    kw = dict(steps=6, shift=3.0, text_scale=0.0, motion_scale=0.0)  # the conditional prediction alone
    exact = sample(model, b.cond, (b.text, b.text_mask), null, TeacherParam("guide", 1e-6), **kw,
                   generator=torch.Generator().manual_seed(0))
    assert torch.allclose(exact, prior, atol=1e-4)
    damped = sample(model, b.cond, (b.text, b.text_mask), null, TeacherParam("guide", 0.25), **kw,
                    generator=torch.Generator().manual_seed(0))
    assert (damped - prior).abs().mean() < 0.3 * (exact - prior).abs().mean() + 0.2
    plain = sample(model, b.cond, (b.text, b.text_mask), null, TeacherParam("none"), steps=6, shift=3.0,
                   noise=torch.ones_like(prior))  # joint guidance of three zero predictions is zero too
    assert torch.equal(plain, torch.ones_like(prior))  # v = 0 everywhere without the skip


def test_teacher_loss_overfits_a_batch(setup):
    _, _, cache_dir, cfg_path = setup
    cfg, tcfg, dcfg, tr = _parts(cfg_path)
    torch.manual_seed(0)
    model, dit_cfg = build_teacher(cfg)
    cache = TeacherCache(cache_dir)
    b = make_batch([cache[i] for i in range(4)], [0, 1, 2, 3], 0, tcfg, dcfg, dit_cfg, tr, cache.text(text_key("")))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    param = TeacherParam("guide", 0.25)
    losses = []
    for _ in range(40):
        loss = teacher_loss(model, b, param, dcfg, moving_weight=4.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def _cli(*args):
    """Run the command in-process (a subprocess would pay the imports again for every call)."""
    from motionstream.cli import main

    assert main([str(a) for a in args]) == 0


def _state(run):
    return load_file(str(run / "state.safetensors"))


def test_cli_resume_is_exact_and_export_loads(setup, tmp_path):
    _, _, cache_dir, cfg_path = setup
    common = ["train", "teacher", "--config", str(cfg_path), "--cache", str(cache_dir), "--no-eval",
              "--no-build-cache", "--no-progress", "--threads", "1", "--device", "cpu"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    _cli(*common, "--run", str(straight), "--steps", "3")
    _cli(*common, "--run", str(split), "--steps", "1")
    _cli(*common, "--run", str(split), "--steps", "3")   # resumes at step 1, crosses the phase switch at 2
    a, b = _state(straight), _state(split)
    assert json.loads((split / "state.json").read_text())["step"] == 3
    for k in a:
        if k.startswith(("model.", "ema.", "opt.")):
            assert torch.allclose(a[k], b[k], atol=1e-6), k
    log = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["latent_frames"] for r in log] == [2, 2, 3]
    assert "loss" in (straight / "train.log").read_text()
    _cli(*common, "--run", str(straight), "--export", str(tmp_path / "export"))
    from motionstream.diffusion.sampling import load_teacher

    model, param, dcfg, meta = load_teacher(tmp_path / "export")
    assert meta["kind"] == "teacher" and meta["step"] == 3 and param.output_skip == "warp"
    ema = {k[4:]: v for k, v in a.items() if k.startswith("ema.")}
    for k, v in model.state_dict().items():
        assert torch.allclose(v, ema[k], atol=1e-3 * max(1.0, ema[k].abs().max().item())), k  # fp16 on disk


def test_cli_set_overrides_the_preset_and_reaches_the_export(setup, tmp_path):
    _, _, cache_dir, cfg_path = setup
    run = tmp_path / "full-length"
    _cli("train", "teacher", "--config", cfg_path, "--cache", cache_dir, "--no-build-cache",
         "--no-progress", "--threads", 1, "--device", "cpu", "--run", run, "--steps", 1,
         "--set", "train_teacher.phase1_steps=0", "--set", "train_teacher.lr=1e-4",
         "--set", "train_teacher.eval_minutes=1e-6", "--set", "train_teacher.val_clips=1")
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [(r["latent_frames"], r["lr"]) for r in steps] == [(3, pytest.approx(1e-4))]  # preset: 2 and 1e-3
    (report,) = [r["eval"] for r in log if "eval" in r]  # the report of the periodic eval, now due every step
    assert report["eval_frames"] == 1 + 4 * 2 and np.isfinite([report["epe_ratio"], report["val_loss"]]).all()
    # the zero-initialised output head after one step: still about the skip alone
    assert report["val_loss"] == pytest.approx(report["val_loss_prior_only"], rel=0.05)
    _cli("train", "teacher", "--config", cfg_path, "--run", run, "--export", tmp_path / "export")
    saved = json.loads((tmp_path / "export" / "config.json").read_text())
    assert saved["config_overrides"][:2] == ["train_teacher.phase1_steps=0", "train_teacher.lr=1e-4"]


def test_warp_prior_moves_uncovered_cells_with_the_tracks():
    """A translating frame seen through 30% of its cells: the warp prior recovers most of the rest."""
    from motionstream.diffusion.sampling import warp_prior

    g = torch.Generator().manual_seed(0)
    h, w, dx, dy = 18, 32, 3, 2
    first = torch.nn.functional.avg_pool2d(torch.randn(1, 16, h + 4, w + 4, generator=g), 3, 1)[:, :, :h, :w] * 3
    truth = torch.roll(first, shifts=(dy, dx), dims=(2, 3))                 # every cell moves by (dx, dy)
    covered = (torch.rand(1, 1, h, w, generator=g) < 0.3).float()
    covered[:, :, :dy], covered[:, :, :, :dx] = 0, 0                        # wrapped-around cells carry no track
    guide = torch.stack([torch.zeros_like(first), truth * covered], 2)      # frame 0 empty, as build_guide
    mask = torch.stack([torch.zeros_like(covered), covered], 2)
    prior = warp_prior(first, guide, mask)
    assert torch.allclose(prior[:, :, 0], first, atol=1e-5) and torch.allclose(prior[:, :, 1] * covered, truth * covered)
    inner = (1 - covered)[:, :, dy + 2:-2, dx + 2:-2]
    err_warp = ((prior[:, :, 1] - truth)[:, :, dy + 2:-2, dx + 2:-2].abs() * inner).sum()
    err_frozen = ((first - truth)[:, :, dy + 2:-2, dx + 2:-2].abs() * inner).sum()
    assert err_warp < 0.1 * err_frozen
    dropped = warp_prior(first, torch.zeros_like(guide), torch.zeros_like(mask))
    assert torch.allclose(dropped, first[:, :, None].expand_as(dropped), atol=1e-5)  # no tracks: frozen frame


def test_mmse_skip_is_the_flow_of_a_gaussian_around_the_prior():
    """With F = 0 the 'mmse' velocity is exact for z0 ~ N(prior, s): Euler samples have that mean and spread."""
    from motionstream.diffusion.flow import euler_sample, sampling_schedule
    from motionstream.diffusion.sampling import apply_skip

    param = TeacherParam("warp", skip_form="mmse", prior_var=0.25)
    prior = torch.randn(1, 4, 2, 6, 8, generator=torch.Generator().manual_seed(1)).repeat(400, 1, 1, 1, 1)
    z = torch.randn_like(prior)
    ends = apply_skip(torch.zeros_like(z), z, torch.ones(400, 2), prior, param)
    assert torch.allclose(ends, z - prior, atol=1e-5)                               # t = 1: straight to the prior
    assert torch.allclose(apply_skip(torch.zeros_like(z), z, torch.zeros(400, 2), prior, param), -z, atol=1e-5)
    out = euler_sample(lambda x, t: apply_skip(torch.zeros_like(x), x, t, prior, param), z,
                       sampling_schedule(200, 3.0))
    assert (out.mean(0) - prior[0]).abs().max() < 0.2
    assert abs(out.std(0).mean().item() - 0.5) < 0.05                                 # sqrt(prior_var)
    with pytest.raises(ValueError, match="skip_form"):
        apply_skip(z, z, torch.ones(400, 2), prior, TeacherParam("warp", skip_form="bogus"))


def test_video_prior_in_batches_follows_dropout_and_moves_content(setup):
    """output_skip "video": each sample's prior is its image warped along its own track subset and
    encoded (frame 0 = the image latent); a motion-dropped sample gets the frozen first frame."""
    from motionstream.models.codec import frames_to_tensor, load_codec
    from motionstream.models.conditioning import video_prior
    from motionstream.tracks.warp import forward_warp

    _, vae, cache_dir, cfg_path = setup
    codec = load_codec(vae, tiny_decoder=None)
    cache = TeacherCache(cache_dir)
    null = cache.text(text_key(""))
    clips = [cache[i] for i in range(2)]
    cfg, tcfg, dcfg, tr = _parts(cfg_path, text_drop=0.0, motion_drop=0.0, output_skip="video")
    _, dit_cfg = build_teacher(cfg)
    with pytest.raises(ValueError, match="encode"):
        make_batch(clips, [0, 1], 0, tcfg, dcfg, dit_cfg, tr, null)
    b = make_batch(clips, [0, 1], 0, tcfg, dcfg, dit_cfg, tr, null, encode=codec.encode)
    assert b.cond.prior.shape == b.z0.shape
    torch.testing.assert_close(b.cond.prior[:, :, 0], b.z0[:, :, 0], atol=2e-3, rtol=0)  # the cache is fp16
    assert torch.equal(condition_prior(b.cond, "video"), b.cond.prior)
    # rebuild sample 1's prior by hand from the batch's own tracks: the warp is the tracks.warp one
    num_f = b.z0.shape[2]
    tracks = clips[1].tracks.frames(0, 1 + 4 * (num_f - 1))
    whole = video_prior(codec.encode, [clips[1].first_frame], [tracks], num_f)
    direct = codec.encode(frames_to_tensor(forward_warp(clips[1].first_frame, tracks)))
    torch.testing.assert_close(whole, direct)
    # the prior of a moving clip is not the frozen frame
    assert (b.cond.prior[:, :, 1:] - b.z0[:, :, :1]).abs().mean() > 1e-3
    _, tcfg_drop, _, _ = _parts(cfg_path, text_drop=0.0, motion_drop=1.0, output_skip="video")
    b = make_batch(clips, [0, 1], 0, tcfg_drop, dcfg, dit_cfg, tr, null, encode=codec.encode)
    assert torch.equal(b.cond.prior, b.z0[:, :, :1].expand_as(b.z0))
    assert b.cond.drop_motion().prior is None


def test_video_prior_decodes_closer_to_the_moved_clip_than_the_frozen_frame():
    """On a real [world] clip with the shipped VAE, the decoded video prior is nearer the ground truth
    than the frozen first frame (the point of parameterising the output around it)."""
    from motionstream.data.synth import render_clip
    from motionstream.models.codec import load_codec, tensor_to_frames
    from motionstream.models.conditioning import video_prior

    codec = load_codec("vae-tiny-cpu", tiny_decoder=None)
    errs = []
    for seed in (11, 12):
        clip = render_clip(seed, num_frames=17, width=256, height=144)
        decoded = tensor_to_frames(codec.decode(video_prior(codec.encode, [clip.frames[0]], [clip.tracks], 5)))
        gt = clip.frames.astype(np.float32)
        errs.append((np.abs(decoded - gt).mean(), np.abs(clip.frames[:1] - gt).mean()))
    prior_err, frozen_err = np.mean(errs, 0)
    assert prior_err < 0.9 * frozen_err, errs


def test_heldout_loss_scores_the_prior_skip_on_fixed_noise(setup):
    """With a tiny prior variance the skip alone is the velocity of z0 = prior: exact (loss ~0 at every t)
    for the true latents as the prior, wrong by (prior - z0) / t for another; the same noise every call."""
    from motionstream.models.codec import load_codec
    from motionstream.train.teacher import TeacherEval

    _, vae, _, cfg_path = setup
    cfg, tcfg, dcfg, _ = _parts(cfg_path, output_skip="video", skip_form="mmse", prior_var=1e-6,
                                eval_loss_times=[0.1, 0.5, 0.9])
    model, dit_cfg = build_teacher(cfg)
    ev = TeacherEval(cfg, tcfg, dcfg, dit_cfg, load_codec(vae, tiny_decoder=None), HashTextEncoder(), 2,
                     log=lambda *_: None, seeds=[10, 11])
    param = teacher_param(tcfg)
    ev.cond = replace(ev.cond, prior=ev.latents)
    exact = ev.heldout_loss(None, param)
    assert sorted(exact) == ["val_loss", "val_loss_t0.1", "val_loss_t0.5", "val_loss_t0.9"]
    assert exact["val_loss"] < 1e-3
    ev.cond = replace(ev.cond, prior=torch.zeros_like(ev.latents))
    wrong = ev.heldout_loss(None, param)
    err = float(ev.latents.pow(2).mean())  # a skip sure of a zero prior is wrong by (0 - z0) / t
    for t in (0.1, 0.5, 0.9):
        assert wrong[f"val_loss_t{t}"] == pytest.approx(err / t ** 2, rel=1e-3)
    assert ev.heldout_loss(model, param) == ev.heldout_loss(model, param)


@pytest.mark.parametrize("command", [["teacher", "--run", "RUN"], ["teacher-cache"], ["ode", "--pairs-only", "--run", "RUN"]])
def test_malformed_preset_section_is_a_one_line_error(tmp_path, capsys, command):
    import yaml

    from motionstream.cli import main
    from motionstream.config import load_config

    cfg = load_config("tiny-cpu")
    cfg["train_teacher"]["no_such_key"] = 1            # a hand-edited preset, not a --set (those are checked earlier)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = [str(tmp_path / "run") if a == "RUN" else a for a in command]
    assert main(["train", *args, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown keys ['no_such_key']" in err and "Traceback" not in err
