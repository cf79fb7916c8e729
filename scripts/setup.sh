#!/usr/bin/env bash
# Idempotent setup: a .venv with the pinned requirements and the package installed editable.
# Re-running is cheap: it only reinstalls when requirements.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.setup-stamp
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and alone, so nothing else can choose a different (CUDA) build for us.
  .venv/bin/python -m pip install -q "$(grep '^torch==' requirements.txt)"
  # opencv-contrib replaced opencv (session 12): both install the same cv2 package, so the old one goes
  # first, and contrib is reinstalled in case removing the old one took shared files with it
  if .venv/bin/python -m pip show -q opencv-python-headless >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y opencv-python-headless
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "$(grep '^opencv-contrib' requirements.txt | cut -d' ' -f1)"
  fi
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  # OpenVINO's model converter (stream.openvino) reports anonymous usage unless opted out; MotionStream
  # runs offline and sends nothing: opt out (a consent file under ~/intel, openvino-telemetry's own tool)
  .venv/bin/opt_in_out --opt_out >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi
