"""MotionStream: real-time video generation with interactive motion controls.

One image + a prompt + motion tracks in, a video stream out. See README.md and
docs/ for the pieces; `motionstream --help` for the command line.
"""

__version__ = "0.1.0"
