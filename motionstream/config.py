"""Configuration: YAML presets in `configs/` (tiny-cpu, wan2.1-1.3b, wan2.2-5b) -> dataclasses.

A preset is a YAML mapping of sections (`video`, `tracks`, `vae`, `dit`, `train_*`, ...). Each
subsystem owns a dataclass for its section and builds it with `section(cfg, "name", Cls)`, which
rejects unknown keys so a typo in a config is an error, not a silently ignored setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from motionstream.errors import ConfigError  # noqa: F401 (re-exported)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
WEIGHTS_DIR = REPO_ROOT / "weights"

T = TypeVar("T")


def load_config(name_or_path: str | Path, overrides: typing.Sequence[str] = ()) -> dict[str, Any]:
    """Load a preset by name (`tiny-cpu`) or by path (`configs/tiny-cpu.yaml`), then apply `overrides`
    (`SECTION.KEY=VALUE`, see `apply_overrides`)."""
    path = Path(name_or_path)
    if not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config {name_or_path!r} not found (looked for a file and for {path}); known presets: {known}")
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    cfg.setdefault("name", path.stem)
    return apply_overrides(cfg, overrides)


def add_config_arguments(parser: argparse.ArgumentParser, default: str = "configs/tiny-cpu.yaml") -> None:
    """`--config PRESET` and repeatable `--set SECTION.KEY=VALUE` (read with `load_config(args.config, args.set)`)."""
    parser.add_argument("--config", default=default, help=f"preset name or YAML path (default: {default})")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable; give the same ones again to resume a run), "
                        "e.g. --set train_teacher.lr=1e-4")


def apply_overrides(cfg: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Set `SECTION.KEY=VALUE` items in place (VALUE parsed as YAML: `1e-4`, `[0, 1]`, `true`).

    Only keys the preset already has may be set, so a typo fails here instead of being ignored.
    """
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        parts = dotted.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE, e.g. train_teacher.lr=1e-4")
        node = cfg
        for i, key in enumerate(parts):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(parts[:i]) or "the config"
                known = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"override {item!r}: {where} has no key {key!r}; known: {known}")
            if i < len(parts) - 1:
                node = node[key]
        node[parts[-1]] = _parse_value(raw)
    return cfg


def _parse_value(raw: str) -> Any:
    """YAML scalar, except that `1e-4` is a float (YAML 1.1 reads it as a string without the `.0`)."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys (nested dataclasses supported)."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for name in fields:
        sub = hints.get(name)
        if isinstance(sub, type) and dataclasses.is_dataclass(sub) and isinstance(values.get(name), dict):
            values[name] = from_dict(sub, values[name], f"{where}.{name}")
    return cls(**values)


def section(cfg: dict[str, Any], name: str, cls: type[T]) -> T:
    """The dataclass for section `name` of a loaded config (defaults when the section is absent)."""
    return from_dict(cls, cfg.get(name), f"{cfg.get('name', 'config')}.{name}")


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    """Section `video`: the model's native video format, shared by every stage (data, training,
    streaming, evaluation). The defaults are the tiny-cpu preset's, used when a preset has no
    `video` section. Read it with `video_config(cfg)`."""

    width: int = 256      # frame width in pixels (a multiple of the VAE stride x the DiT patch)
    height: int = 144     # frame height in pixels
    fps: float = 16.0     # frames per second of generated and training clips

    def __post_init__(self) -> None:
        # YAML gives ints for `fps: 16` and may give floats for sizes: store the types the code expects
        try:
            width, height, fps = int(self.width), int(self.height), float(self.fps)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"video: width, height and fps must be numbers ({err})") from None
        if width <= 0 or height <= 0 or not fps > 0:
            raise ConfigError(f"video: width, height and fps must be positive, got {width}x{height} @ {fps} fps")
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)
        object.__setattr__(self, "fps", fps)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, the order `read_image` / `resize_crop` take."""
        return self.width, self.height


def video_config(cfg: dict[str, Any]) -> VideoConfig:
    """The `video` section of a loaded config (VideoConfig defaults when absent; ConfigError on an
    unknown key or a non-positive value)."""
    return section(cfg, "video", VideoConfig)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain dict (for config.json next to weights)."""
    return dataclasses.asdict(obj)
