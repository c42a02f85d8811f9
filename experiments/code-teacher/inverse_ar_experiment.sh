#!/usr/bin/env bash
# Inverse-autoregressive C-PTP (DESIGN §1, paper §2.2.2 / Table 2) against a small real teacher with a
# small vocabulary, on a 2-core CPU. Reproduces the figures of the inverse-AR note (issue 3).
# Everything goes to data/iar-* and runs/iar-* (git-ignored). One job at a time, one thread each.
# Usage: scripts/inverse_ar_experiment.sh [step ...]   steps: data teacher iar char floor long deep ablate
# (default: all but long and deep)
set -euo pipefail
cd "$(dirname "$0")/.."
PTP=".venv/bin/ptp --threads 1"
TEACHER_MIN=${TEACHER_MIN:-9}
IAR_MIN=${IAR_MIN:-12}
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(data teacher iar char floor ablate)

for step in "${steps[@]}"; do case $step in
data)  # ~12 MB of stdlib train sources (split of `ptp corpus` in data/corpus), the val split as is
  mkdir -p data/iar-docs
  .venv/bin/python - <<'PY'
import json
out, size = open("data/iar-docs/train.jsonl", "w"), 0
for line in open("data/corpus/train.jsonl"):
    doc = json.loads(line)
    if not doc["path"].startswith("stdlib/"):
        continue
    out.write(json.dumps({"text": doc["text"]}) + "\n")
    size += len(doc["text"])
    if size > 12e6:
        break
with open("data/iar-docs/val.jsonl", "w") as val:
    for line in open("data/corpus/val.jsonl"):
        val.write(json.dumps({"text": json.loads(line)["text"]}) + "\n")
PY
  $PTP tokenizer --data data/iar-docs/train.jsonl --format jsonl --out data/iar-tok512 --vocab-size 512
  for split in train val; do
    $PTP pregenerate --documents data/iar-docs/$split.jsonl --format jsonl --tokenizer data/iar-tok512 \
      --out data/iar-shards512/$split --quiet
  done ;;
teacher)  # 4-layer d=128 Llama over the 512-token BPE
  $PTP pretrain --config configs/pretrain-small.yaml teacher.hidden_size=128 teacher.layers=4 teacher.heads=4 \
    teacher.kv_heads=4 teacher.intermediate_size=352 data.train=data/iar-shards512/train \
    data.val=data/iar-shards512/val train.out_dir=runs/iar-teacher512 train.max_steps=4000 \
    train.max_minutes=$TEACHER_MIN train.eval_every=250 train.patience=100 optim.lr=2e-3 optim.warmup_steps=100 ;;
iar)  # inverse-AR C-PTP over it (window 4, LoRA r=32, arith u-embedding), then the comparisons
  common=(--config configs/distill-o-ptp.yaml model.teacher=runs/iar-teacher512/model model.window=4
          data.train=data/iar-shards512/train data.val=data/iar-shards512/val train.max_steps=100000
          train.eval_every=250 train.save_every=250)
  $PTP train "${common[@]}" model.embedding=arith distill.objective=inverse-ar \
    train.out_dir=runs/iar-a-arith-w4 train.max_minutes=$IAR_MIN
  # the same with the teacher's distributions (C-PTP distillation, KL): is the objective the limit?
  $PTP train "${common[@]}" model.embedding=arith distill.objective=c-ptp \
    train.out_dir=runs/iar-b-cptp-arith-w4 train.max_minutes=10
  # the paper's float32-bit embedding at the same budget
  $PTP train "${common[@]}" model.embedding=binary distill.objective=inverse-ar \
    train.out_dir=runs/iar-c-binary-w4 train.max_minutes=10 ;;
char)  # the same with a 41-token character-level vocabulary (lower-cased, digits -> 0, rest -> <unk>)
  .venv/bin/python scripts/iar_char_tokenizer.py data/iar-tokchar
  .venv/bin/python - <<'PY'
import json
out, size = open("data/iar-docs/train4m.jsonl", "w"), 0
for line in open("data/iar-docs/train.jsonl"):
    out.write(line)
    size += len(json.loads(line)["text"])
    if size > 4e6:
        break
PY
  $PTP pregenerate --documents data/iar-docs/train4m.jsonl --format jsonl --tokenizer data/iar-tokchar \
    --out data/iar-shardschar/train --quiet
  $PTP pregenerate --documents data/iar-docs/val.jsonl --format jsonl --tokenizer data/iar-tokchar \
    --out data/iar-shardschar/val --quiet
  $PTP pretrain --config configs/pretrain-small.yaml teacher.hidden_size=128 teacher.layers=4 teacher.heads=4 \
    teacher.kv_heads=4 teacher.intermediate_size=352 data.train=data/iar-shardschar/train \
    data.val=data/iar-shardschar/val train.out_dir=runs/iar-teacherchar train.max_steps=2500 train.max_minutes=6 \
    train.eval_every=250 train.patience=100 optim.lr=2e-3 optim.warmup_steps=100
  for w in 4 2; do
    [ $w = 4 ] && run=runs/iar-d-char-arith-w4 min=11 || run=runs/iar-e-char-arith-w2 min=7
    $PTP train --config configs/distill-o-ptp.yaml model.teacher=runs/iar-teacherchar/model model.embedding=arith \
      model.window=$w data.train=data/iar-shardschar/train data.val=data/iar-shardschar/val \
      distill.objective=inverse-ar train.out_dir=$run train.max_steps=100000 \
      train.max_minutes=$min train.eval_every=250 train.save_every=250
  done
  # the window-2 run at a lower learning rate
  $PTP train --config configs/distill-o-ptp.yaml model.teacher=runs/iar-teacherchar/model model.embedding=arith \
    model.window=2 data.train=data/iar-shardschar/train data.val=data/iar-shardschar/val \
    distill.objective=inverse-ar optim.lr=3e-4 train.out_dir=runs/iar-f-char-arith-w2-lr3e-4 \
    train.max_steps=100000 train.max_minutes=6 train.eval_every=250 train.save_every=250 ;;
floor)  # the exact u-blind floor of the first slot (what an adapter that ignores u can reach at best)
  .venv/bin/python scripts/iar_ublind_floor.py runs/iar-teacherchar/model data/iar-shardschar/val ;;
long)  # 80-minute runs, window 2, lr 1e-3 cosine over the time budget, sorted vs id CDF order (side by side)
  for order in sorted id; do
    $PTP train --config configs/distill-o-ptp.yaml model.teacher=runs/iar-teacherchar/model model.embedding=arith \
      model.window=2 data.train=data/iar-shardschar/train data.val=data/iar-shardschar/val \
      distill.objective=inverse-ar sampling.order=$order optim.lr=1e-3 optim.schedule=cosine \
      train.out_dir=runs/iar-long-w2-$order train.max_steps=1000000 train.max_minutes=${LONG_MIN:-80} \
      train.eval_every=1000 train.save_every=1000 &
  done
  wait ;;
deep)  # the same long run over an 8-layer character teacher (7 minutes of pretraining): does depth help?
  $PTP pretrain --config configs/pretrain-small.yaml teacher.hidden_size=128 teacher.layers=8 teacher.heads=4 \
    teacher.kv_heads=4 teacher.intermediate_size=352 data.train=data/iar-shardschar/train \
    data.val=data/iar-shardschar/val train.out_dir=runs/iar-teacherchar8 train.max_steps=2500 train.max_minutes=7 \
    train.eval_every=250 train.patience=100 optim.lr=2e-3 optim.warmup_steps=100
  .venv/bin/python scripts/iar_ublind_floor.py runs/iar-teacherchar8/model data/iar-shardschar/val
  $PTP train --config configs/distill-o-ptp.yaml model.teacher=runs/iar-teacherchar8/model model.embedding=arith \
    model.window=2 data.train=data/iar-shardschar/train data.val=data/iar-shardschar/val \
    distill.objective=inverse-ar sampling.order=sorted optim.lr=1e-3 optim.schedule=cosine \
    train.out_dir=runs/iar-long-w2-sorted-8l train.max_steps=1000000 train.max_minutes=40 \
    train.eval_every=1000 train.save_every=1000
  # one u-slot per window (two tokens per call), the same recipe for 35 minutes
  $PTP train --config configs/distill-o-ptp.yaml model.teacher=runs/iar-teacherchar8/model model.embedding=arith \
    model.window=1 data.train=data/iar-shardschar/train data.val=data/iar-shardschar/val \
    distill.objective=inverse-ar sampling.order=sorted optim.lr=1e-3 optim.schedule=cosine \
    train.out_dir=runs/iar-long-w1-sorted-8l train.max_steps=1000000 train.max_minutes=35 \
    train.eval_every=1000 train.save_every=1000 ;;
ablate)  # does the adapter use its u's? own inverse-AR u's vs u's of another window
  .venv/bin/python scripts/iar_u_ablation.py runs/iar-a-arith-w4/last data/iar-shards512/val
  .venv/bin/python scripts/iar_u_ablation.py runs/iar-d-char-arith-w4/last data/iar-shardschar/val ;;
*) echo "unknown step $step" >&2; exit 2 ;;
esac; done
# Figures measured on the 2-core CPU (one thread; last evaluation, 16 val rows x 32 windows, uniform z):
#   teacher512 (4L d=128, V=512): val ppl 40.3 (pretrain eval), 34.9 on the window targets
#   a  inverse-ar arith L=4, 4749 steps/12 min: slot ppl 123.5, ratio 3.54 (slots 3.65 3.30 3.68 3.53)
#   b  c-ptp (KL) arith L=4, 4831 steps/10 min: slot ppl 135.5, ratio 3.88 (unigram ppl 198)
#   teacherchar (4L d=128, V=41): val ppl 10.1 (pretrain eval), 9.94 on the window targets
#   d  inverse-ar arith L=4, 4396 steps/11 min: slot ppl 23.8, ratio 2.39 (best 2.09 at step 3500)
#      (unigram ppl 21.1, skip-bigram 15.8); u-ablation: own u's 23.8, another window's u's 28.1
#   e  inverse-ar arith L=2, 4310 steps/7 min: slot ppl 22.4, ratio 2.15 (slots 2.04 2.27; best 1.82 at 3500)
#   f  the same at lr 3e-4, 3763 steps/6 min: slot ppl 21.2, ratio 2.04 (slots 2.04 2.04)
# Figures: runs/iar-*/eval.csv (ppl_ratio, slot{j}_ppl, slot{j}_ratio per evaluation); teacher: runs/iar-teacher512/eval.csv
