#!/usr/bin/env bash
# GPU readiness in one run (under 8 minutes on one GPU): training speed of the three image models at the paper's
# width on the GPU and on the CPU, rdlb's seconds per step at the paper's physics recipe, and cross-device
# decoding (compressed on the GPU, decompressed on the CPU) for mbt2018 and ms2020. See docs/gpu.md.
#
#   RDS_DATA_DIR=/path/to/data bench/gpu_check.sh [--smoke] [LOG_DIR]
#
# --smoke: tiny sizes (the CPU recipe's width, few steps, small rdlb batch, 8-filter codecs on a Kodak crop), and
# without a GPU the "GPU" side runs on the CPU and says so; it exercises every part of this script on a CPU machine.
# Each part runs under its own timeout, capped by what is left of the whole run's budget ($GPU_CHECK_BUDGET seconds:
# 530 by default, 1800 with --smoke);
# a part that fails, times out or finds the budget spent shows as FAILED/TIMEOUT/SKIPPED in the summary table.
# Cross-device decoding runs first (it decides the exit status), then rdlb, then the training speeds.
# Exit status: 1 if cross-device decoding failed (or its part did not finish), 2 on bad usage or no GPU without
# --smoke, else 0. Every part's full output is kept in LOG_DIR (default: a new folder under results/).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SMOKE=0
LOG=""
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n "2,/^set -u/p" "$0" | grep "^#" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $arg (expected --smoke and an optional log folder)" >&2; exit 2 ;;
    *) LOG=$arg ;;
  esac
done
case "${GPU_CHECK_BUDGET:-1}" in
  ''|*[!0-9]*) echo "error: GPU_CHECK_BUDGET=$GPU_CHECK_BUDGET: expected a whole number of seconds" >&2; exit 2 ;;
esac
LOG=${LOG:-$(mkdir -p results && mktemp -d results/gpu_check.XXXXXX)}
mkdir -p "$LOG" || { echo "error: log folder $LOG: cannot create it" >&2; exit 2; }
[ -x "$PY" ] || { echo "error: $PY: no Python there (make venv, or set PYTHON)" >&2; exit 2; }
export RDS_DATA_DIR=${RDS_DATA_DIR:-}
[ -d "$RDS_DATA_DIR/kodak" ] || { echo "error: \$RDS_DATA_DIR/kodak: not found (set RDS_DATA_DIR to the data folder)" >&2; exit 2; }
[ -f "$RDS_DATA_DIR/physics/ppzee-split=train.npy" ] || { echo "error: \$RDS_DATA_DIR/physics/ppzee-split=train.npy: not found" >&2; exit 2; }

GPU=$("$PY" -c "import utils, tensorflow as tf; g = tf.config.list_physical_devices('GPU'); print(g[0].name if g else '')" 2>/dev/null | tail -1)
if [ -z "$GPU" ]; then
  if [ "$SMOKE" = 0 ]; then echo "error: TensorFlow sees no GPU (run with --smoke to exercise this script on the CPU)" >&2; exit 2; fi
  GPU_LABEL="CPU (no GPU: fallback)"
  echo "note: TensorFlow sees no GPU: the GPU side of every part runs on the CPU (smoke mode)"
else
  GPU_LABEL="GPU $GPU"
fi
echo "$(date -u +%FT%TZ) gpu_check $([ "$SMOKE" = 1 ] && echo smoke || echo full); GPU side: $GPU_LABEL; $(nproc) CPUs; logs in $LOG"

# Sizes and timeouts (seconds). The full run's CPU rows time one step after one compiling step: enough for a ratio.
if [ "$SMOKE" = 1 ]; then
  WIDTH=recipe; BENCH_FLAGS="--quick"; GPU_STEPS=1; CPU_STEPS=1; IMAGES=1
  RDLB_K=256; RDLB_GPU_STEPS=4; RDLB_CPU_STEPS=4; RDLB_LOG=2
  XD_MODEL_mbt2018="--num_filters 8"
  XD_MODEL_ms2020="--num_filters 8 --latent_depth 16 --hyperprior_depth 8 --num_slices 2 --max_support_slices 1"
  XD_FLAGS=(--patchsize 64 --batchsize 1 --images 2)
  T_GPU=600; T_CPU=600; T_RDLB=240; T_XD=300; BUDGET=${GPU_CHECK_BUDGET:-1800}
else
  WIDTH=paper; BENCH_FLAGS=""; GPU_STEPS=10; CPU_STEPS=1; IMAGES=1
  RDLB_K=2048; RDLB_GPU_STEPS=30; RDLB_CPU_STEPS=6; RDLB_LOG=3
  # The CPU recipe's widths: the CPU decodes all 24 Kodak images within the part's time.
  XD_MODEL_mbt2018="--num_filters 64"
  XD_MODEL_ms2020="--num_filters 64 --latent_depth 160 --hyperprior_depth 64"
  XD_FLAGS=(--patchsize 128)
  T_GPU=90; T_CPU=120; T_RDLB=45; T_XD=180; BUDGET=${GPU_CHECK_BUDGET:-530}
fi

DEADLINE=$((SECONDS + BUDGET))
declare -a ROWS
STATUS_XD=0
row() { ROWS+=("$(printf '%-52s %-30s %s' "$1" "$2" "$3")"); }

# part NAME TIMEOUT DEVICE(gpu|cpu) CMD...: runs CMD with its output in $LOG/NAME.log (and on the screen).
part() {
  local name=$1 limit=$2 device=$3; shift 3
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then echo "== $name: SKIPPED (the run's ${BUDGET} s budget is spent)"; return 125; fi
  local env=()
  [ "$device" = cpu ] && env=(env CUDA_VISIBLE_DEVICES=)
  echo "== $name ($device, timeout ${limit}s): $*"
  local t0=$SECONDS
  "${env[@]}" timeout "$limit" "$@" > "$LOG/$name.log" 2>&1
  local rc=$?
  tail -n 30 "$LOG/$name.log" | sed 's/^/   /'
  echo "   -> exit $rc in $((SECONDS - t0)) s"
  return $rc
}

verdict() {  # verdict STATUS VALUE: the value when the part printed it (even if it then failed), else why not
  if [ -n "$2" ]; then echo "$2"; return; fi
  case "$1" in 0) echo "none printed" ;; 124) echo "TIMEOUT" ;; 125) echo "SKIPPED" ;; *) echo "FAILED (exit $1)" ;; esac
}

# 1. cross-device decoding: Kodak compressed on the GPU, decompressed there and in separate CPU processes; every
#    image must decode to the GPU's own PNG (bench/decode_matrix.py, on a run trained for one step).
XD_CONFIGS=$([ -n "$GPU" ] && echo "gpu,t$(nproc)" || echo "t2,t1")
for c in mbt2018 ms2020; do
  model=XD_MODEL_$c
  part "cross_device_$c" "$T_XD" gpu "$PY" bench/decode_matrix.py --codec $c --configs "$XD_CONFIGS" \
    --encode_configs "${XD_CONFIGS%%,*}" --model_flags "${!model}" "${XD_FLAGS[@]}"
  rc=$?
  cells=$(grep "^| ${XD_CONFIGS%%,*} |" "$LOG/cross_device_$c.log" 2>/dev/null | tr -s ' ')
  if [ $rc = 0 ]; then
    row "$c cross-device decoding" "GPU side -> CPU" "identical: $cells"
  else
    STATUS_XD=1
    row "$c cross-device decoding" "GPU side -> CPU" "$(verdict $rc "") $cells"
  fi
done

# 2. rdlb seconds per step, the paper's physics recipe (n = 16, MLP 200,200,200, k = 2048, M = 2, quick top-3
#    starts, lr 5e-4 with its schedule): from the `time` of rdlb.py's log lines, after the first (compiling) interval.
rdlb_rate() {  # rdlb_rate RUN_FOLDER -> seconds per step between the first and the last step of its log.jsonl
  "$PY" -c 'import glob, json, sys
r = [json.loads(line) for f in glob.glob(sys.argv[1] + "/*/log.jsonl") for line in open(f)]
if len(r) > 1 and r[-1]["step"] > r[0]["step"]:
    print("%.3g" % ((r[-1]["time"] - r[0]["time"]) / (r[-1]["step"] - r[0]["step"])))' "$1"
}
declare -A RDLB
for dev in gpu cpu; do
  steps=$([ $dev = gpu ] && echo $RDLB_GPU_STEPS || echo $RDLB_CPU_STEPS)
  part "rdlb_$dev" "$T_RDLB" $dev "$PY" rdlb.py --dataset "$RDS_DATA_DIR/physics/ppzee-split=train.npy" --data_dim 16 \
    --checkpoint_dir "$LOG/rdlb_$dev" --model mlp --units 200,200,200 --lamb 1000 train --batchsize $RDLB_K \
    --num_Ck_samples 2 --last_step "$steps" --checkpoint_interval "$steps" --log_interval $RDLB_LOG --y_init quick \
    --y_quick_topn 3 --lr 5e-4 --lr_schedule
  RDLB[$dev]=$(verdict $? "$(rdlb_rate "$LOG/rdlb_$dev")")
done
ratio=$(awk -v g="${RDLB[gpu]}" -v c="${RDLB[cpu]}" 'BEGIN { if (g + 0 > 0 && c + 0 > 0) printf "CPU/GPU %.1fx", c / g; else print "CPU/GPU n/a" }')
row "rdlb s/step (physics, n=16, k=$RDLB_K, M=2)" "GPU side ${RDLB[gpu]:-?}, CPU ${RDLB[cpu]:-?}" "$ratio"

# 3. training steps/s, 256x256 patches, batch 8, at $WIDTH width: codec_bench.py and resnet_vae_bench.py.
codec_rate() {  # codec_rate LOG CODEC -> steps/s at 256px of the $WIDTH row
  awk -v c="$2" -v w="$WIDTH" '$1 == c && $2 == w { for (i = 1; i <= NF; i++) if ($i == "steps/s:") { print $(i + 1); exit } }' "$1" 2>/dev/null
}
rv_rate() {  # rv_rate LOG -> steps/s of the $WIDTH model on 256x256 crops
  awk -v w="$WIDTH:" '$1 == w { on = 1; next } /^[a-z]+:/ { on = 0 } on && /train 256x256 batch 8:/ { print $5; exit }' "$1" 2>/dev/null
}
declare -A RATE
for dev in gpu cpu; do
  steps=$([ $dev = gpu ] && echo $GPU_STEPS || echo $CPU_STEPS)
  limit=$([ $dev = gpu ] && echo $T_GPU || echo $T_CPU)
  part "codec_bench_$dev" "$limit" $dev "$PY" bench/codec_bench.py $BENCH_FLAGS --steps "$steps" --images $IMAGES
  rc=$?
  for c in mbt2018 ms2020; do RATE[$c,$dev]=$(verdict $rc "$(codec_rate "$LOG/codec_bench_$dev.log" $c)"); done
  part "resnet_vae_bench_$dev" "$limit" $dev "$PY" bench/resnet_vae_bench.py $BENCH_FLAGS --steps "$steps" --images $IMAGES
  RATE[resnet_vae,$dev]=$(verdict $? "$(rv_rate "$LOG/resnet_vae_bench_$dev.log")")
done
for m in mbt2018 ms2020 resnet_vae; do
  g=${RATE[$m,gpu]}; c=${RATE[$m,cpu]}
  ratio=$(awk -v g="$g" -v c="$c" 'BEGIN { if (g + 0 > 0 && c + 0 > 0) printf "GPU/CPU %.1fx", g / c; else print "GPU/CPU n/a" }')
  row "$m train steps/s ($WIDTH width, 256px, batch 8)" "GPU side ${g:-?}, CPU ${c:-?}" "$ratio"
done

echo
echo "== summary ($([ "$SMOKE" = 1 ] && echo "smoke: tiny sizes, not the paper's" || echo "the paper's sizes"); GPU side: $GPU_LABEL; logs in $LOG)"
printf '%-52s %-30s %s\n' "what" "measured" "ratio / result"
printf '%s\n' "${ROWS[@]}"
if [ $STATUS_XD != 0 ]; then
  echo "cross-device decoding failed or did not finish: see docs/gpu.md (make the tables the decoder recomputes device-independent)" >&2
fi
exit $STATUS_XD
