#!/usr/bin/env bash
# Pack what scripts/gpu_build.sh needs into gpu/ (git-ignored via .git/info/exclude), small enough for
# a lent GPU machine's 64 MiB working-tree limit: the first SHARDS train shards (6 MB each) and the val
# shards of data/shards, the tokenizer, the held-out prompts, and a snapshot of the committed code
# (so uncommitted edits in the checkout do not travel). Run after scripts/build_default_model.sh
# steps 1-2, then on the GPU machine: cd gpu/snap && DATA=.. scripts/gpu_build.sh (see its header).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:-8}
PROMPTS=${PROMPTS:-src/ptp/assets/default-model/prompts.jsonl}
rm -rf gpu && mkdir -p gpu/shards/train gpu/shards/val gpu/snap
grep -qx "/gpu/" .git/info/exclude 2>/dev/null || echo "/gpu/" >> .git/info/exclude
cp -r data/tokenizer gpu/tokenizer
cp "$PROMPTS" gpu/prompts.jsonl
cp data/shards/val/* gpu/shards/val/
.venv/bin/python - "$SHARDS" <<'PY'
import json, shutil, sys
keep_n = int(sys.argv[1])
for split, n in (("train", keep_n), ("val", None)):
    manifest = json.load(open(f"data/shards/{split}/manifest.json"))
    keep = manifest["shards"][:n]
    for shard in keep:
        shutil.copy(f"data/shards/{split}/{shard['file']}", f"gpu/shards/{split}/{shard['file']}")
    manifest["shards"] = keep
    manifest["counts"] = {"sequences": sum(s["rows"] for s in keep), "tokens": sum(s["tokens"] for s in keep)}
    manifest["tokenizer"] = "../tokenizer"
    json.dump(manifest, open(f"gpu/shards/{split}/manifest.json", "w"), indent=1)
    print(split, manifest["counts"])
PY
git archive HEAD src configs scripts | tar -x -C gpu/snap
rm -rf gpu/snap/src/ptp/assets/default-model
du -sh gpu
