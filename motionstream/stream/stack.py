"""Load everything a stream needs from a preset and a model folder, once: the one loaded stack.

Shared by the applications' commands (cli/stream.py), the studio (app/) and the evaluation: the
model folder ('student' = the preset's `stream.student`, 'teacher', a weights/ name or a path),
the StreamConfig it runs under (preset + what the folder was distilled for + overrides), the
codec, the text encoder, the tracks section, and the output frame size checked against the
model's patch grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motionstream.config import load_config, section, video_config
from motionstream.models.checkpoints import WeightsNotFound, resolve_model_dir
from motionstream.models.codec import load_codec
from motionstream.models.text import load_text_encoder
from motionstream.stream.engine import StreamConfig, load_stream_model, stream_config_for
from motionstream.tracks.embed import TracksConfig


class StreamModelNotFound(WeightsNotFound):
    """The model folder itself is missing (as opposed to the codec's or the text encoder's weights)."""


@dataclass
class StreamStack:
    """A loaded model stack. width / height: output frames in px (multiples of the latent patch)."""

    cfg: dict[str, Any]            # the loaded preset
    name: str                      # the model folder name or path that was loaded
    folder: Path                   # where that folder is (for consoles and logs; clients see `label`)
    model: Any                     # models.dit.WanDiT
    param: Any                     # diffusion.sampling.TeacherParam
    meta: dict[str, Any]           # the folder's metadata (kind, student, lineage)
    stream_cfg: Any                # stream.engine.StreamConfig
    codec: Any                     # models.codec codec (VAE + optional tiny decoder)
    text_encoder: Any              # .encode(prompts)
    tracks_cfg: Any                # tracks.embed.TracksConfig
    width: int
    height: int
    fps: float

    @property
    def is_teacher(self) -> bool:
        return self.meta.get("kind") == "teacher"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the output frames in px."""
        return self.width, self.height

    @property
    def latent_cells(self) -> int:
        """Latent cells per frame (height / stride x width / stride)."""
        s = self.codec.spatial_stride
        return (self.width // s) * (self.height // s)

    @property
    def label(self) -> str:
        """Which weights run, as clients may see it: kind, folder name (never its path), cache shape."""
        note = " (teacher weights run as a causal few-step stream: not distilled)" if self.is_teacher else ""
        precision = " openvino" if self.stream_cfg.openvino else " int8" if self.stream_cfg.int8 else ""
        return f"{self.meta.get('kind')} {self.folder.name} {self.stream_cfg.name}{precision}{note}"

    def describe(self) -> dict[str, Any]:
        """The model as the studio's status and hello messages report it."""
        return {"name": self.folder.name, "label": self.label, "kind": self.meta.get("kind"), "cache": self.stream_cfg.name,
                "decoder": self.stream_cfg.decoder}


def load_stream_stack(model: str = "student", config: str = "tiny-cpu", size: tuple[int, int] | None = None, *,
                      vae: str | None = None, tiny_decoder: str | None = None, decoder: str | None = None,
                      seed: int | None = None, sink_refresh_chunks: int | None = None, cache: str | None = None,
                      quality: str | None = None, text_encoder: Any = None, offline_teacher: bool = False) -> StreamStack:
    """Load a streaming model stack.

    size: (width, height) of the output frames (None: the preset's `video` size). The overrides
    (vae ... quality) replace the matching StreamConfig fields when not None; cache is a cXsYwZ name.
    text_encoder: an object with .encode(prompts) (None: the preset's). offline_teacher: teacher
    weights will be sampled offline with the VAE, so no tiny decoder is loaded for them.
    Raises StreamModelNotFound (the model folder), WeightsNotFound (codec / text weights),
    ConfigError or ValueError (bad preset, override or size); callers turn them into one-line errors."""

    cfg = load_config(config)
    base = section(cfg, "stream", StreamConfig)
    name = {"student": base.student}.get(model, model)
    try:
        net, param, meta = load_stream_model(name)
    except WeightsNotFound as err:
        raise StreamModelNotFound(str(err)) from None
    is_teacher = meta.get("kind") == "teacher"
    stream_cfg = stream_config_for(cfg, None if is_teacher else meta, decoder=decoder, seed=seed, vae=vae,
                                   tiny_decoder=tiny_decoder, sink_refresh_chunks=sink_refresh_chunks,
                                   quality=quality)
    if cache:
        stream_cfg = stream_cfg.with_cache_name(cache)
    video = video_config(cfg)
    width, height = size or video.size
    use_tiny = stream_cfg.decoder == "tiny" and not (is_teacher and offline_teacher)
    codec = load_codec(stream_cfg.vae, stream_cfg.tiny_decoder if use_tiny else None)
    if text_encoder is None:
        text_encoder = load_text_encoder(cfg)
    step = codec.spatial_stride * net.cfg.patch_size[1]
    if width % step or height % step:
        raise ValueError(f"size {width}x{height} must be a multiple of {step} in both directions")
    return StreamStack(cfg, name, resolve_model_dir(name), net, param, meta, stream_cfg, codec, text_encoder,
                       section(cfg, "tracks", TracksConfig), width, height, video.fps)
