#!/usr/bin/env bash
# Inverse-AR C-PTP on a lent GPU (issue 3's "within 5 % of the teacher's perplexity"): the
# character-level setting of scripts/inverse_ar_experiment.sh (V=41 teacher, 4 layers, d=128) with
# 16x the CPU runs' rows per step. On the 2-core CPU (4 rows a step, window 2) the 8-layer teacher's
# adapter reached ratio 1.007 on the first slot and 1.31 on the second in 40 minutes, the second still
# falling (README, "Inverse-AR"); the target is the window as a whole within 5 %.
# Carry (ignored paths): data/iar-shardschar runs/iar-teacherchar8/model, plus the transformers wheel.
# The 8-layer teacher by default: on the CPU its adapter learnt to read u far faster than over the
# 4-layer one (TEACHER=runs/iar-teacherchar/model for that).
# Usage (repo root):  OUT=dir [IAR_MINUTES=8] [ROWS=64] [WINDOW=2] scripts/gpu_inverse_ar.sh
# Dry run on a CPU:   DEVICE=cpu IAR_MINUTES=0.2 ROWS=2 OUT=/tmp/iar-dry scripts/gpu_inverse_ar.sh
# The run directory is OUT/run: eval.csv (slot{j}_ratio per evaluation) comes back even if the lease ends.
set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/gpu-iar}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
TEACHER=${TEACHER:-runs/iar-teacherchar8/model}
SHARDS=${SHARDS:-data/iar-shardschar}
for need in "$TEACHER/config.json" "$SHARDS/train/manifest.json" "$SHARDS/val/manifest.json"; do
  [ -f "$need" ] || { echo "missing $need (make it with scripts/inverse_ar_experiment.sh data char deep)" >&2; exit 2; }
done
mkdir -p "$OUT"
threads=1; [ "$DEVICE" = cpu ] || threads=4
$PY -m ptp.cli --threads $threads train --config configs/distill-o-ptp.yaml model.teacher="$TEACHER" \
  model.embedding=arith model.window="${WINDOW:-2}" data.train="$SHARDS/train" data.val="$SHARDS/val" \
  distill.objective=inverse-ar sampling.order="${ORDER:-sorted}" optim.lr="${LR:-1e-3}" optim.schedule=cosine \
  packing.rows="${ROWS:-64}" train.out_dir="$OUT/run" train.max_steps=1000000 \
  train.max_minutes="${IAR_MINUTES:-8}" train.eval_every="${EVAL_EVERY:-500}" train.save_every=0 \
  train.tensorboard=false 2>&1 | tr '\r' '\n' | grep -v 'step/s' | tail -n 40
$PY - "$OUT/run/eval.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = [k for k in rows[0] if k.startswith("slot") and k.endswith("_ratio")] + ["ppl_ratio", "teacher_ppl"]
print("step " + " ".join(keys))
for r in rows:
    print(r["step"], " ".join(f"{float(r[k]):.3f}" for k in keys))
PY
