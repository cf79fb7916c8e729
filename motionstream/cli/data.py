"""`motionstream data ...`: render synthetic shards, preview them, print their statistics."""

from __future__ import annotations

import argparse

PREVIEW_GRID = 4          # preview: a 4 x 4 grid of clips
PREVIEW_TRACK_STRIDE = 5  # draw every 5th grid row/column (a 10 x 10 subset of a 50 x 50 grid)


def parse_size(text: str) -> tuple[int, int]:
    """'256x144' -> (256, 144)."""
    from motionstream.errors import UserError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 256x144, got {text!r}") from None
    if w < 8 or h < 8:
        raise UserError(f"--size must be at least 8x8, got {text!r}")
    return w, h


def world_config(name: str):
    """WorldConfig from the `data` section of a preset."""
    from motionstream.errors import UserError
    from motionstream.config import ConfigError, load_config, section
    from motionstream.data.synth import WorldConfig

    try:
        return section(load_config(name), "data", WorldConfig)
    except ConfigError as err:
        raise UserError(str(err)) from None


def cmd_synth(args: argparse.Namespace) -> int:
    from motionstream.errors import UserError
    from motionstream.data.shards import ShardError, write_shards

    width, height = parse_size(args.size)
    if args.n < 1 or args.frames < 1 or args.workers < 1 or args.clips_per_shard < 1:
        raise UserError("--n, --frames, --workers and --clips-per-shard must be >= 1")
    try:
        paths = write_shards(args.out, args.split, args.n, num_frames=args.frames, width=width, height=height,
                             clips_per_shard=args.clips_per_shard, workers=args.workers, fps=args.fps,
                             cfg=world_config(args.config), start=args.start)
    except (ShardError, ValueError) as err:
        raise UserError(str(err)) from None
    print(f"{args.n} {args.split} clips in {len(paths)} shards under {args.out}")
    return 0


def _load_dataset(folder: str):
    from motionstream.errors import UserError
    from motionstream.data.shards import ShardDataset, ShardError

    try:
        return ShardDataset(folder, shuffle=False, extras=[])
    except ShardError as err:
        raise UserError(str(err)) from None


def cmd_preview(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from motionstream.errors import UserError
    from motionstream.tracks.draw import draw_tracks
    from motionstream.video import write_video

    ds = _load_dataset(args.dir)
    count = PREVIEW_GRID * PREVIEW_GRID
    index = [(shard, i) for shard in ds.shards for i in range(len(shard.seeds))]
    if not index:
        raise UserError(f"{args.dir} holds no clips")
    pick = np.random.default_rng(args.seed).choice(len(index), size=min(count, len(index)), replace=False)
    tiles = []
    for k in tqdm(pick, desc="preview", unit="clip"):
        shard, i = index[k]
        clip = ds.clip(shard, ds.load_shard(shard), i)
        grid = int(round(np.sqrt(clip.tracks.num_tracks)))
        rows = np.arange(clip.tracks.num_tracks).reshape(grid, -1)
        subset = rows[::PREVIEW_TRACK_STRIDE, ::PREVIEW_TRACK_STRIDE].ravel() if grid * grid == clip.tracks.num_tracks else slice(None)
        tiles.append(draw_tracks(clip.frames, clip.tracks.subset(subset), tail=6, radius=1))
        print(f"[{len(tiles) - 1:2d}] seed {clip.seed}: {clip.caption}")
    while len(tiles) < count:  # fewer clips than tiles: pad with black
        tiles.append(np.zeros_like(tiles[0]))
    t = min(len(x) for x in tiles)
    rows = [np.concatenate([x[:t] for x in tiles[r * PREVIEW_GRID:(r + 1) * PREVIEW_GRID]], 2) for r in range(PREVIEW_GRID)]
    write_video(args.output, np.concatenate(rows, 1), fps=ds.manifest["fps"])
    print(f"wrote {args.output}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import collections

    import numpy as np
    from tqdm import tqdm

    ds = _load_dataset(args.dir)
    m = ds.manifest
    effects: collections.Counter[str] = collections.Counter()
    visible, occluded, outside, moving, speed, words, disk = [], [], [], [], [], [], 0
    for shard in ds.shards:
        disk += sum(p.stat().st_size for p in shard.path.iterdir())
    for clip in tqdm(ds, total=len(ds), desc="stats", unit="clip"):
        ts = clip.tracks
        inf = ts.in_frame()
        visible.append(ts.visibility.mean())
        occluded.append((~ts.visibility & inf).mean())
        outside.append((~inf).mean())
        moving.append(clip.moving_mask.mean())
        both = ts.visibility[1:] & ts.visibility[:-1]
        step = np.linalg.norm(np.diff(ts.tracks, axis=0), axis=-1)
        speed.append(step[both].mean() if both.any() else 0.0)
        words.append(len(clip.caption.split()))
        effects.update(clip.effects or ["(none)"])
    n = len(visible)
    print(f"{args.dir}: {n} {m['split']} clips in {len(ds.shards)} shards, {m['num_frames']} frames "
          f"{m['width']}x{m['height']} @ {m['fps']:g} fps, {disk / 1e9:.2f} GB")
    print(f"  tracks: visible {np.mean(visible):.1%}, occluded {np.mean(occluded):.1%}, out of frame {np.mean(outside):.1%}; "
          f"mean speed of visible points {np.mean(speed):.2f} px/frame")
    print(f"  moving pixels {np.mean(moving):.1%}; caption words mean {np.mean(words):.1f} (max {max(words)})")
    print("  effects: " + ", ".join(f"{k} {v} ({v / n:.0%})" for k, v in effects.most_common()))
    return 0


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="synthetic training/eval data: render shards, preview, stats",
                               description="The synthetic video world (exact tracks, captions, effects) on disk.")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("synth", help="render synthetic clips into shard folders (resumable)",
                       description="Render clips of a split into DIR. Re-running continues where it stopped.")
    p.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--n", type=int, required=True, help="number of clips")
    p.add_argument("--start", type=int, default=0, help="first seed index within the split")
    p.add_argument("--frames", type=int, default=33, help="frames per clip")
    p.add_argument("--size", default="256x144", help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--workers", type=int, default=2, help="render processes")
    p.add_argument("--clips-per-shard", type=int, default=16)
    p.add_argument("--config", default="tiny-cpu", help="preset whose `data` section configures the world")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("preview", help="a 4x4 grid video of random clips with their tracks drawn")
    p.add_argument("dir", help="shard folder written by `data synth`")
    p.add_argument("-o", "--output", default="preview.mp4")
    p.add_argument("--seed", type=int, default=0, help="which clips are picked")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("stats", help="counts, track visibility, motion, effects of a shard folder")
    p.add_argument("dir")
    p.set_defaults(func=cmd_stats)
