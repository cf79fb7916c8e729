"""The studio page in a real browser: Playwright driving Debian's Chromium against a studio server on
loopback (tiny random model, see tests/app/test_studio.py). Upload an image, Enter, drag on the canvas,
frames change where the drag was, Space pauses, record + download the mp4 and decode it.
Screenshots of the page with a running stream go to runs/studio-screens/."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from test_studio import STUDIO_H, STUDIO_W, ServerProcess

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENS = Path(__file__).resolve().parents[2] / "runs" / "studio-screens"
WAIT_MS = 60_000


def ensure_chromium() -> None:
    """Debian's chromium (never `playwright install`): installed with apt-get when missing."""
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None:
        pytest.skip("no /usr/bin/chromium and no apt-get to install it")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"could not install chromium: {done.stderr[-300:]}")


def block_image(path: Path) -> Path:
    """A dark frame with one bright textured block on the left: moving it is easy to see."""
    from motionstream.video import write_image

    y, x = np.mgrid[0:STUDIO_H * 2, 0:STUDIO_W * 2]
    img = np.stack([20 + 10 * np.sin(x / 9.0), 25 + 10 * np.sin(y / 7.0), np.full_like(x, 30.0)], -1)
    block = (slice(64, 128), slice(48, 112))
    img[block] = np.stack([230 + 20 * np.sin(x[block] / 3.0), 200 + 40 * np.cos(y[block] / 4.0),
                           np.full(x[block].shape, 60.0)], -1)
    return write_image(path, np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("studio_browser"))
    yield srv
    srv.stop()


def grab(page) -> np.ndarray:
    """The video canvas as float32 RGB [H, W, 3]."""
    data = page.evaluate("""() => { const c = document.getElementById('video');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
    return np.asarray(data, np.float32).reshape(STUDIO_H, STUDIO_W, 4)[..., :3]


def frames(page) -> int:
    return page.evaluate("window.studio.framesReceived")


def wait_frames(page, count: int) -> None:
    page.wait_for_function(f"window.studio.framesReceived >= {count}", timeout=WAIT_MS)


def test_page_drag_pause_record_download(server, tmp_path):
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    from motionstream.video import read_video

    SCREENS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                    headless=True, args=CHROMIUM_ARGS, accept_downloads=True,
                                                    viewport={"width": 1200, "height": 760})
        try:
            page = ctx.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("window.studio.status === 'idle' && window.studio.imageId", timeout=WAIT_MS)
            header = page.text_content("#model")
            assert "student" in header and "/" not in header              # the model's name, not a path
            sample_id = page.evaluate("window.studio.imageId")
            page.set_input_files("#image-file", str(block_image(tmp_path / "block.png")))
            page.wait_for_function(f"window.studio.imageId && window.studio.imageId !== '{sample_id}'",
                                   timeout=WAIT_MS)
            page.fill("#prompt", "a bright block slides right")
            page.keyboard.press("Enter")                                 # focus is in the prompt: Enter starts
            page.wait_for_function("window.studio.status === 'streaming'", timeout=WAIT_MS)
            wait_frames(page, 21)
            page.click("#record")
            page.wait_for_function("window.studio.recording", timeout=WAIT_MS)
            assert page.is_visible("#hud-rec")

            # drag the block's centre 40 px to the right, slowly, and hold it there
            box = page.locator("#overlay").bounding_box()
            sx, sy = box["width"] / STUDIO_W, box["height"] / STUDIO_H
            x0, y0, x1 = 40.0, 48.0, 80.0
            before = grab(page)
            page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
            page.mouse.down()
            for k in range(1, 21):
                page.mouse.move(box["x"] + (x0 + (x1 - x0) * k / 20) * sx, box["y"] + y0 * sy)
                time.sleep(0.04)
            n = frames(page)
            wait_frames(page, n + 30)                                    # >= 2 chunks after the drag
            after = grab(page)
            hud_fps, paints_2s, latency = page.evaluate("""() => { const S = window.studio, t = performance.now();
                return [S.fps, S.paintLog.filter((p) => t - p <= 2000).length, S.latencyLog.length]; }""")
            assert hud_fps is not None and abs(hud_fps - paints_2s / 2) <= 1.0, (hud_fps, paints_2s)  # paints/s
            assert latency > 0 and page.text_content("#hud-latency") != "–"   # pointer -> painted frame
            page.screenshot(path=str(SCREENS / "studio-drag.png"), full_page=True)
            page.mouse.up()

            diff = np.abs(after - before).mean(2)
            near = diff[32:64, 24:104].mean()                            # along the drag (size 32 patch)
            far = np.concatenate([diff[:16].ravel(), diff[-16:].ravel()]).mean()
            assert near > 2 * far + 2, (near, far)

            # a pin (red) and a pre-drawn path (blue), then a screenshot of all three colours streaming
            page.check("input[name=tool][value=pin]")
            page.mouse.click(box["x"] + 110 * sx, box["y"] + 20 * sy)
            page.check("input[name=tool][value=path]")
            page.mouse.move(box["x"] + 20 * sx, box["y"] + 80 * sy)
            page.mouse.down()
            for k in range(1, 11):
                page.mouse.move(box["x"] + (20 + 6 * k) * sx, box["y"] + (80 - 3 * k) * sy)
                time.sleep(0.02)
            page.mouse.up()
            page.check("input[name=tool][value=drag]")
            page.mouse.move(box["x"] + 64 * sx, box["y"] + 48 * sy)
            page.mouse.down()
            page.mouse.move(box["x"] + 70 * sx, box["y"] + 44 * sy, steps=5)
            wait_frames(page, frames(page) + 6)
            page.screenshot(path=str(SCREENS / "studio-streaming.png"), full_page=True)
            page.mouse.up()
            errors = page.evaluate("window.studio.errors")
            assert not errors, errors

            # Space pauses: no new frames; recording stopped while paused: REC goes; Space again resumes
            page.keyboard.press("Space")
            page.wait_for_function("window.studio.status === 'paused'", timeout=WAIT_MS)
            time.sleep(0.3)
            n = frames(page)
            page.click("#record")
            page.wait_for_function("!window.studio.recording", timeout=WAIT_MS)
            assert not page.is_visible("#hud-rec")
            time.sleep(1.2)
            assert frames(page) == n
            page.keyboard.press("Space")
            wait_frames(page, n + 5)

            # download the recording (finished by the Record button) and decode it
            with page.expect_download(timeout=WAIT_MS) as dl:
                page.click("#download")
            mp4 = tmp_path / "studio.mp4"
            dl.value.save_as(str(mp4))
            video, _ = read_video(mp4)
            assert video.shape[1:] == (STUDIO_H, STUDIO_W, 3) and len(video) >= 30

            page.keyboard.press("Enter")
            page.wait_for_function("window.studio.status === 'idle'", timeout=WAIT_MS)
            time.sleep(0.2)                                              # a few animation frames
            # stopped: fps and latency clear, no REC; the count is what the page received
            assert page.text_content("#hud-fps") == "–" and page.text_content("#hud-latency") == "–"
            assert not page.is_visible("#hud-rec")
            assert page.evaluate("window.studio.stoppedFrames === window.studio.streamFrames")
        finally:
            ctx.close()
