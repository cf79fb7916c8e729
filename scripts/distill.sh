#!/usr/bin/env bash
# Distil the shipped teacher into the causal few-step student (paper Sec. 3.2), end to end:
#   1. train ode : teacher ODE pairs under joint guidance (cached), then causal regression
#   2. train dmd : Self-Forcing DMD with the sink + rolling KV cache, critic 5:1, EMA
#   3. export    : weights/student-tiny-cpu (config.json + fp16 model.safetensors + CARD.md)
#
# Every stage is resumable: re-run the script after a kill and it continues where it stopped
# (ODE pairs already written are skipped, training states are reloaded from the run folders).
#
#   scripts/distill.sh                       # tiny-cpu, single process (CPU)
#   NPROC=8 scripts/distill.sh               # torchrun + FSDP (GPU: NCCL, CPU: gloo)
#   CONFIG=configs/wan2.1-1.3b.yaml TEACHER=/path/teacher OUT=weights/student-wan21 NPROC=8 scripts/distill.sh
#
# Knobs (environment): CONFIG, TEACHER (model folder), RUNS (run root), OUT (student folder),
# ODE_STEPS / DMD_STEPS (default: total_steps of the config), THREADS, NPROC.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-configs/tiny-cpu.yaml}
TEACHER=${TEACHER:-weights/teacher-tiny-cpu}
RUNS=${RUNS:-runs}
OUT=${OUT:-weights/student-tiny-cpu}
THREADS=${THREADS:-2}
NPROC=${NPROC:-1}
PY=.venv/bin/python

if [ ! -f "$TEACHER/config.json" ]; then
  echo "distill.sh: no teacher folder at $TEACHER (train it with 'motionstream train teacher' and --export)" >&2
  exit 2
fi

run() {  # run a motionstream command, under torchrun when NPROC > 1
  if [ "$NPROC" -gt 1 ]; then
    .venv/bin/torchrun --standalone --nproc_per_node "$NPROC" -m motionstream "$@"
  else
    $PY -m motionstream "$@"
  fi
}

start=$(date +%s)
ode_steps=()
[ -n "${ODE_STEPS:-}" ] && ode_steps=(--steps "$ODE_STEPS")
dmd_steps=()
[ -n "${DMD_STEPS:-}" ] && dmd_steps=(--steps "$DMD_STEPS")

# 1. ODE pairs (rank 0 only; the slow part on CPU) + causal regression with random sink/window masks
$PY -m motionstream train ode --config "$CONFIG" --teacher "$TEACHER" --run "$RUNS/ode" --pairs-only \
  --threads "$THREADS"
run train ode --config "$CONFIG" --teacher "$TEACHER" --run "$RUNS/ode" --no-generate --threads "$THREADS" \
  "${ode_steps[@]}"

# 2. Self-Forcing DMD from the ODE-initialised student
run train dmd --config "$CONFIG" --teacher "$TEACHER" --student "$RUNS/ode/student" --run "$RUNS/dmd" \
  --threads "$THREADS" "${dmd_steps[@]}"

# 3. export the EMA generator and write its card
$PY -m motionstream train dmd --config "$CONFIG" --run "$RUNS/dmd" --export "$OUT"
wall=$(( $(date +%s) - start ))
$PY - "$OUT" "$RUNS" "$CONFIG" "$TEACHER" "$wall" <<'EOF'
import json, sys
from pathlib import Path

out, runs, config, teacher, wall = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
meta = json.loads((Path(out) / "config.json").read_text())
ode = json.loads((runs / "ode" / "student" / "config.json").read_text())
s = meta["student"]
name = f"c{s['chunk_frames']}s{s['sink_chunks']}w{s['window_chunks']}"
last = {}
metrics = runs / "dmd" / "metrics.jsonl"
if metrics.is_file():
    for line in metrics.read_text().splitlines():
        rec = json.loads(line)
        if "critic_loss" in rec:
            last = rec
card = f"""# student ({name}, {len(s['denoising_steps'])} steps, one evaluation per step)

Causal few-step student distilled from `{teacher}` (teacher step {meta.get('teacher_step', '?')}) with
`scripts/distill.sh` (config `{config}`): ODE regression for {ode.get('step')} steps
({ode.get('train_hours', 0):.2f} h), then Self-Forcing DMD for {meta.get('step')} steps
({meta.get('train_hours', 0):.2f} h), data seed {meta.get('data_seed')}; script wall time {wall / 3600:.2f} h.
Weights: the DMD generator's EMA (fp16). Streaming: sink {s['sink_chunks']} + window {s['window_chunks']}
chunks of {s['chunk_frames']} latent frames (trained with random sink/window sizes, so other cXsYwZ run too).

Last DMD log line: {json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in last.items() if k != 'time'})}

Metrics: run `motionstream eval long` and `motionstream eval transfer` (docs/eval/) and paste the
EPE / PSNR against the teacher and the first-vs-last-tenth drift of c3s1w1, c3s0w1, c3s0w6 here.
"""
(Path(out) / "CARD.md").write_text(card)
print(f"wrote {out}/CARD.md")
EOF
echo "distill.sh: student in $OUT ($(( wall / 60 )) min)"
