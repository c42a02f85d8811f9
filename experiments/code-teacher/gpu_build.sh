#!/usr/bin/env bash
# Build the bundled default model on one CUDA GPU and benchmark it there, in one pass that fits a
# ~10-minute GPU lease. The data is prepared on CPU first (scripts/build_default_model.sh steps 1-2):
#   DATA/shards/{train,val}  document shards    DATA/tokenizer  the BPE tokenizer
#   DATA/prompts.jsonl       held-out prompts
# Usage:  DATA=data WORK=runs/gpu scripts/gpu_build.sh
# The bundled model was made this way: scripts/prepare_gpu_data.sh here, then on the lent H100
#   cd gpu/snap && DATA=.. WORK=/tmp/w ARCHIVE=$OUT BENCH_PROMPTS=8 bash scripts/gpu_build.sh
# and back here: the archives unpacked, teacher/model copied into model/teacher, the result copied to
# src/ptp/assets/default-model (without teacher/tokenizer*), then `ptp tune --write` on the CPU.
# Steps (each a ptp command; minutes are wall-clock budgets, the cosine LR decays over them):
#   1. pretrain the Llama teacher (d=256, 8 layers), best by held-out loss
#   2. sample teacher completions to distil from (T=0.7, top-k 50, top-p 0.95)
#   3. distil the O-PTP drafter and the mtp control side by side (same minutes, same GPU)
#   4. export the bundled model; benchmark ar-hf / ar / draft-verify / pqd / mtp / pld on the GPU
# With ARCHIVE set, finished results are tarred in parts of at most 15 MiB into that folder.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DATA=${DATA:-data}
WORK=${WORK:-runs/gpu}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
PTP=${PTP:-$PY -m ptp.cli}
TEACHER_MINUTES=${TEACHER_MINUTES:-3.0}
DISTILL_MINUTES=${DISTILL_MINUTES:-2.0}
TEACHER_ROWS=${TEACHER_ROWS:-64}        # packed rows of 1024 tokens per step
PREGEN_PROMPTS=${PREGEN_PROMPTS:-10000}  # contexts cut from train documents, 2 completions each
DISTILL_ROWS=${DISTILL_ROWS:-64}        # packed rows of 256 tokens (32 windows each) per step
BENCH_PROMPTS=${BENCH_PROMPTS:-10}
SAMPLING="--temperature 0.7 --top-k 50 --top-p 0.95"
mkdir -p "$WORK"
started=$SECONDS
stage() { echo "=== [$((SECONDS - started)) s] $*"; }
archive() {  # archive NAME [TAR ARGS] PATHS...: tar into ARCHIVE/NAME.tar.partNN (15 MiB parts)
  [ -n "${ARCHIVE:-}" ] || return 0
  local name=$1; shift
  mkdir -p "$ARCHIVE"
  tar -cf - "$@" 2>/dev/null | split -b 15m -d - "$ARCHIVE/$name.tar.part"
  ls -la "$ARCHIVE"
}

stage "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
  'cuda', torch.cuda.is_available())"

stage "1. pretrain the teacher ($TEACHER_MINUTES min)"
timeout "$($PY -c "print(int($TEACHER_MINUTES * 60 + 120))")" \
  $PTP pretrain --config configs/pretrain-small.yaml data.train=$DATA/shards/train data.val=$DATA/shards/val \
  data.tokenizer=$DATA/tokenizer packing.seq_len=1024 packing.rows=$TEACHER_ROWS data.val_rows=64 \
  optim.lr=2e-3 optim.beta2=0.95 optim.warmup_steps=100 train.max_steps=100000 \
  train.max_minutes=$TEACHER_MINUTES train.eval_every=200 train.save_every=0 train.patience=0 \
  train.log_every=50 train.tensorboard=false train.out_dir=$WORK/teacher || exit 1
archive teacher "$WORK/teacher/model" "$WORK/teacher/eval.csv" "$WORK/teacher/metrics.csv"

stage "2. teacher samples"
$PTP pregenerate --teacher $WORK/teacher/model --tokenizer $DATA/tokenizer --prompts $DATA/shards/train \
  --prompt-tokens 96 --max-prompts $PREGEN_PROMPTS --completions 2 --max-new-tokens 128 $SAMPLING \
  --batch-size 512 --prompts-per-shard 2500 --device $DEVICE --quiet --out $WORK/samples/train || exit 1
$PTP pregenerate --teacher $WORK/teacher/model --tokenizer $DATA/tokenizer --prompts $DATA/shards/val \
  --prompt-tokens 96 --max-prompts ${VAL_PROMPTS:-200} --completions 2 --max-new-tokens 128 $SAMPLING \
  --batch-size 512 --device $DEVICE --quiet --out $WORK/samples/val || exit 1

stage "3. distil o-ptp and the mtp control side by side ($DISTILL_MINUTES min each)"
DISTILL="--config configs/distill-o-ptp.yaml model.teacher=$WORK/teacher/model data.train=$WORK/samples/train
  data.val=$WORK/samples/val data.val_rows=64 packing.rows=$DISTILL_ROWS optim.lr=2e-3 optim.schedule=cosine
  train.max_minutes=$DISTILL_MINUTES train.max_steps=100000 train.eval_every=250 train.save_every=0
  train.log_every=50 train.tensorboard=false"
$PTP train $DISTILL distill.objective=o-ptp train.out_dir=$WORK/o-ptp > $WORK/o-ptp.log 2>&1 &
optp=$!
$PTP train $DISTILL distill.objective=mtp train.out_dir=$WORK/mtp > $WORK/mtp.log 2>&1 &
mtp=$!
wait $optp; optp_rc=$?
wait $mtp; mtp_rc=$?
tail -n 4 $WORK/o-ptp.log $WORK/mtp.log
[ $optp_rc = 0 ] || exit 1

stage "4. export and benchmark on $DEVICE"
rm -rf $WORK/model $WORK/mtp-model
$PTP export --checkpoint $WORK/o-ptp/best --out $WORK/model --prompts $DATA/prompts.jsonl --num-prompts 64 || exit 1
methods="ar-hf ar draft-verify pqd pld"
mtp_arg=""
if [ $mtp_rc = 0 ] && $PTP export --checkpoint $WORK/mtp/best --out $WORK/mtp-model; then
  methods="ar-hf ar draft-verify pqd mtp pld"
  mtp_arg="--mtp-model $WORK/mtp-model"
fi
archive drafters --exclude=teacher --ignore-failed-read "$WORK/model" "$WORK/mtp-model" "$WORK"/*/eval.csv \
  "$WORK"/samples/*/manifest.json "$WORK"/*.log
$PTP bench --model $WORK/model $mtp_arg --methods $methods --num-prompts $BENCH_PROMPTS --max-new-tokens 128 \
  --slot-budget 16 --device $DEVICE --json $WORK/bench/bench.json
archive bench "$WORK/bench"
stage "5. cost of a call over q tokens, and PQD speed per slot budget on $DEVICE"
$PTP tune --model $WORK/model --device $DEVICE --num-prompts 2 --budgets 4 8 16 32 --max-new-tokens 64
stage "done"
