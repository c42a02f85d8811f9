#!/usr/bin/env bash
# Pack what a GPU script needs into gpu/ (git-ignored via .git/info/exclude), small enough for a lent
# GPU machine's 64 MiB working-tree limit: the first SHARDS train shards (6 MB each; with ROWS, only
# their first ROWS documents) and the val shards of data/shards, the tokenizer, the held-out prompts,
# and (SNAPSHOT=1, the default) a snapshot of the committed code without the bundled model, so
# uncommitted edits in the checkout do not travel. Run after scripts/build_default_model.sh steps 1-2.
#   scripts/gpu_build.sh (rebuild the bundled model):  scripts/prepare_gpu_data.sh; on the GPU machine
#     cd gpu/snap && DATA=.. scripts/gpu_build.sh (see its header)
#   scripts/gpu_continue.sh (extend the bundled drafter; the tree carries the model itself):
#     SHARDS=1 ROWS=300 SNAPSHOT=0 scripts/prepare_gpu_data.sh; on the GPU machine
#     DATA=gpu scripts/gpu_continue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:-8}
ROWS=${ROWS:-0}          # 0: whole shards
SNAPSHOT=${SNAPSHOT:-1}
PROMPTS=${PROMPTS:-src/ptp/assets/default-model/prompts.jsonl}
rm -rf gpu && mkdir -p gpu/shards/train gpu/shards/val
grep -qx "/gpu/" .git/info/exclude 2>/dev/null || echo "/gpu/" >> .git/info/exclude
cp -r data/tokenizer gpu/tokenizer
cp "$PROMPTS" gpu/prompts.jsonl
.venv/bin/python - "$SHARDS" "$ROWS" <<'PY'
import json, sys
import pyarrow.parquet as pq
keep_n, rows = int(sys.argv[1]), int(sys.argv[2])
for split, n in (("train", keep_n), ("val", None)):
    manifest = json.load(open(f"data/shards/{split}/manifest.json"))
    keep = manifest["shards"][:n]
    for shard in keep:
        table = pq.read_table(f"data/shards/{split}/{shard['file']}")
        if rows and table.num_rows > rows:
            table = table.slice(0, rows)
            shard["rows"] = rows
            shard["tokens"] = int(sum(len(t) for t in table.column(0).to_pylist()))
        pq.write_table(table, f"gpu/shards/{split}/{shard['file']}")
    manifest["shards"] = keep
    manifest["counts"] = {"sequences": sum(s["rows"] for s in keep), "tokens": sum(s["tokens"] for s in keep)}
    manifest["tokenizer"] = "../tokenizer"
    json.dump(manifest, open(f"gpu/shards/{split}/manifest.json", "w"), indent=1)
    print(split, manifest["counts"])
PY
if [ "$SNAPSHOT" = 1 ]; then
  mkdir -p gpu/snap
  git archive HEAD src configs scripts | tar -x -C gpu/snap
  rm -rf gpu/snap/src/ptp/assets/default-model
fi
du -sh gpu
