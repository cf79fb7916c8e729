import subprocess
import sys

import motionstream.tracks as tracks


def test_public_api_resolves_to_the_defining_modules():
    from motionstream.tracks import draw, io, sources, tracker

    assert tracks.load_tracks is io.load_tracks and tracks.save_tracks is io.save_tracks
    assert tracks.resample is io.resample
    assert tracks.track_frames is tracker.track_frames and tracks.track_video is tracker.track_video
    assert tracks.draw_tracks is draw.draw_tracks and tracks.patch_points is sources.patch_points
    for name in tracks.__all__:
        assert getattr(tracks, name) is not None
    assert "track_video" in dir(tracks)
    try:
        tracks.no_such_thing
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("unknown names must raise AttributeError")


def test_import_stays_light():
    code = ("import sys, motionstream.tracks as t; t.load_tracks; t.grid_points; "
            "print(sorted(m for m in ('cv2', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
