#!/usr/bin/env bash
# Rebuild the bundled default model (src/ptp/assets/default-model) from scratch on this machine (CPU).
# The committed model took the GPU route instead: steps 1-2 below, then scripts/prepare_gpu_data.sh and
# scripts/gpu_build.sh on one GPU (see its header). This script is the no-GPU way to the same layout.
# Every step is a ptp command; each writes under data/ or runs/ (git-ignored) and can be rerun alone.
# Steps 4-5 and 6-7 run two single-threaded jobs side by side (a 2-core machine; never oversubscribe
# the cores: two 2-thread jobs on 2 cores run several times slower than two 1-thread jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
PTP=".venv/bin/ptp --threads 1"
SAMPLING="--temperature 0.7 --top-k 50 --top-p 0.95"
TEACHER_MINUTES=${TEACHER_MINUTES:-45}
DISTILL_MINUTES=${DISTILL_MINUTES:-30}

# 1. corpus: stdlib + installed dependencies' .py sources, split by file path; tokenizer; held-out prompts
[ -f data/corpus/manifest.json ] || $PTP corpus --out data/corpus
[ -f data/tokenizer/tokenizer.json ] || $PTP tokenizer --data data/corpus --out data/tokenizer
[ -f data/prompts/test.jsonl ] || $PTP prompts --corpus data/corpus --out data/prompts/test.jsonl
# 2. document shards for pretraining (train and held-out val split)
for split in val train; do
  [ -f data/shards/$split/manifest.json ] || \
    $PTP pregenerate --documents data/corpus --split $split --tokenizer data/tokenizer --out data/shards/$split
done
# 3. the teacher: plain Llama, d=256, 8 layers, best checkpoint by held-out loss
$PTP pretrain --config configs/pretrain-small.yaml train.max_steps=1200 train.max_minutes=$TEACHER_MINUTES \
  optim.beta2=0.95 optim.warmup_steps=100 train.patience=6 train.eval_every=200 train.save_every=200
# 4. teacher samples to distil from (contexts cut from train documents; val for validation)
$PTP pregenerate --teacher runs/teacher-small/model --tokenizer data/tokenizer --prompts data/shards/train \
  --prompt-tokens 96 --max-prompts 1600 --completions 2 --max-new-tokens 128 $SAMPLING --out data/samples/train &
# 5. a small separate draft model for the sps baseline (same tokenizer)
$PTP pretrain --config configs/pretrain-small.yaml teacher.hidden_size=128 teacher.layers=2 teacher.heads=2 \
  teacher.kv_heads=2 teacher.intermediate_size=352 train.max_steps=1500 train.max_minutes=12 \
  optim.beta2=0.95 train.out_dir=runs/draft-tiny &
wait
$PTP pregenerate --teacher runs/teacher-small/model --tokenizer data/tokenizer --prompts data/shards/val \
  --prompt-tokens 96 --max-prompts 100 --completions 2 --max-new-tokens 128 $SAMPLING --out data/samples/val
# 6-7. the O-PTP drafter and the independent-prediction control, same data and budget
DISTILL="--config configs/distill-o-ptp.yaml model.teacher=runs/teacher-small/model data.train=data/samples/train
  data.val=data/samples/val train.max_minutes=$DISTILL_MINUTES train.max_steps=100000"
$PTP train $DISTILL distill.objective=o-ptp train.out_dir=runs/o-ptp-small &
$PTP train $DISTILL distill.objective=mtp train.out_dir=runs/mtp-small &
wait
# 8. bundle, tune the slot budget for this machine, check losslessness end to end
rm -rf src/ptp/assets/default-model
$PTP export --checkpoint runs/o-ptp-small/best --out src/ptp/assets/default-model \
  --prompts data/prompts/test.jsonl --num-prompts 64
$PTP tune --model src/ptp/assets/default-model --write --num-prompts 4
$PTP demo --model src/ptp/assets/default-model --seed 0
