#!/usr/bin/env bash
# On one CUDA GPU (a lent machine, ~10 minutes): benchmark the bundled model, then extend its drafter
# and measure what that bought. The working tree carries the bundled model; the data comes from
#   SHARDS=1 ROWS=300 SNAPSHOT=0 scripts/prepare_gpu_data.sh      (gpu/shards/{train,val}, ~3 MB)
# Usage (repo root):  DATA=gpu OUT=dir scripts/gpu_continue.sh
# Dry run on a CPU:    BENCH_FIRST=0 DEVICE=cpu PREGEN_PROMPTS=16 DISTILL_MINUTES=0.2 DISTILL_ROWS=2 BENCH_PROMPTS=1 ...
# Stages, each archived into OUT as soon as it is done (a lease cut short still returns them):
#   1. scripts/gpu_bench.sh on the bundled model (the GPU speedup figure)            -> OUT/before
#   2. scripts/check_flex_cuda.py: flex_attention vs sdpa training step (gradients, time, memory);
#      if flex fails or disagrees, the runs below use sdpa                            -> OUT/flex
#      then teacher samples from train contexts (and val contexts for validation)
#   3. distillation runs side by side on the GPU, DISTILL_MINUTES each, flex_attention when the
#      check passed. RUNS lists them as INIT:ORDER[:fst]: INIT = continue (from the bundled drafter,
#      model.init_from) or scratch, ORDER = the CDF order (sampling.order), fst = model.first_slot_token.
#      The default continues the bundled drafter and compares, from scratch at equal budget, the id
#      and sorted orders and sorted with first_slot_token                              -> OUT/<run>
#   4. export each drafter and benchmark ar / draft-verify / pqd with it on the GPU   -> OUT/<run>
# (The bundled drafter was trained in id order and reads u that way: continuing it in another order
# first costs acceptance, so orders are compared from scratch.)
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DATA=${DATA:-gpu}
OUT=${OUT:-runs/gpu-continue}
WORK=${WORK:-/tmp/ptp-continue}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
PTP=${PTP:-$PY -m ptp.cli}
BUNDLED=src/ptp/assets/default-model
RUNS=${RUNS:-continue:id scratch:id scratch:sorted scratch:sorted:fst}
DISTILL_MINUTES=${DISTILL_MINUTES:-4.0}
DISTILL_ROWS=${DISTILL_ROWS:-64}
PREGEN_PROMPTS=${PREGEN_PROMPTS:-20000}
BENCH_PROMPTS=${BENCH_PROMPTS:-12}
SAMPLING="--temperature 0.7 --top-k 50 --top-p 0.95"
mkdir -p "$OUT" "$WORK"
started=$SECONDS
stage() { echo "=== [$((SECONDS - started)) s] $*"; }

if [ "${BENCH_FIRST:-1}" = 1 ]; then
  stage "1. benchmark the bundled model"
  OUT=$OUT/before PTP="$PTP" BUDGET=${BUDGET:-16} PROMPTS=$BENCH_PROMPTS bash scripts/gpu_bench.sh
fi

stage "2. flex_attention check, then teacher samples"
ATTENTION=${ATTENTION:-auto}
if [ "$ATTENTION" = auto ] && ! $PY scripts/check_flex_cuda.py $OUT/flex; then
  echo "flex_attention check failed: distilling with sdpa"; ATTENTION=sdpa
fi
$PTP pregenerate --teacher $BUNDLED/teacher --tokenizer $BUNDLED --prompts $DATA/shards/train --prompt-tokens 96 \
  --max-prompts $PREGEN_PROMPTS --completions 2 --max-new-tokens 128 $SAMPLING --batch-size 512 \
  --prompts-per-shard 5000 --device $DEVICE --quiet --out $WORK/samples/train || exit 1
$PTP pregenerate --teacher $BUNDLED/teacher --tokenizer $BUNDLED --prompts $DATA/shards/val --prompt-tokens 96 \
  --max-prompts 200 --completions 2 --max-new-tokens 128 $SAMPLING --batch-size 512 --device $DEVICE --quiet \
  --out $WORK/samples/val || exit 1

stage "3. distil side by side ($DISTILL_MINUTES min each): $RUNS"
pids=()
for run in $RUNS; do
  IFS=: read -r init order fst <<< "$run"
  name=${run//:/-}
  init_arg=""
  [ "$init" = continue ] && init_arg="model.init_from=$BUNDLED"
  [ "$fst" = fst ] && init_arg="$init_arg model.first_slot_token=true"
  $PTP train --config configs/distill-o-ptp.yaml model.teacher=$BUNDLED/teacher $init_arg \
    data.train=$WORK/samples/train data.val=$WORK/samples/val data.val_rows=64 \
    sampling.temperature=0.7 sampling.top_k=50 sampling.top_p=0.95 sampling.order=$order \
    packing.rows=$DISTILL_ROWS optim.lr=${LR:-2e-3} optim.schedule=cosine optim.warmup_steps=50 \
    train.max_minutes=$DISTILL_MINUTES train.max_steps=100000 train.eval_every=200 train.save_every=0 \
    train.log_every=50 train.tensorboard=false train.attention=$ATTENTION train.out_dir=$WORK/$name \
    > $OUT/train-$name.log 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait $pid; done
for run in $RUNS; do
  name=${run//:/-}
  mkdir -p $OUT/$name && cp $WORK/$name/eval.csv $OUT/$name/ 2>/dev/null
  echo "--- $name"; tail -n 3 $OUT/train-$name.log
done

stage "4. export and benchmark each drafter"
for run in $RUNS; do
  name=${run//:/-}
  $PTP export --checkpoint $WORK/$name/best --out $WORK/model-$name --tokenizer $BUNDLED \
    --prompts $BUNDLED/prompts.jsonl || continue
  cp $WORK/model-$name/adapter.safetensors $WORK/model-$name/ptp_config.json $OUT/$name/
  $PTP bench --model $WORK/model-$name --device $DEVICE --methods ar draft-verify pqd --sampling 0.7,50,0.95 \
    --num-prompts $BENCH_PROMPTS --max-new-tokens 128 --slot-budget ${BUDGET:-16} --json $OUT/$name/bench.json
done
stage "done"
