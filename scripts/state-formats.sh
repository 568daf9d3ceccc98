#!/usr/bin/env bash
# Each stored-state format of `latentqa index`, measured on the 200 real validation questions (docs/index.md,
# "Stored states"): an index of their 1,985 paragraphs, after 256 training paragraphs whose states the projected
# formats are fitted on (a build fits them on its first shard); then `predict --index` and the official scores.
#   scripts/state-formats.sh READER OUT_DIR FORMAT...     e.g. runs/minilm-answer/best runs/formats fp16 int8
set -euo pipefail
reader=$1; out=$2; shift 2
data=../shared/data/hotpotqa/real
mkdir -p "$out"
python - "$data" "$out/corpus.jsonl" <<'PY'
import json, sys
data, path = sys.argv[1:]
validation = [p for ex in json.load(open(f"{data}/validation.json")) for p in ex["context"]]
held = {title for title, _ in validation}
train = [p for ex in json.load(open(f"{data}/train.json")) for p in ex["context"] if p[0] not in held]
first, seen = [], set()
for title, sentences in train:
    if title not in seen and len(first) < 256:
        seen.add(title)
        first.append((title, sentences))
with open(path, "w") as f:
    for title, sentences in first + validation:
        f.write(json.dumps({"title": title, "sentences": sentences}) + "\n")
PY
for format in "$@"; do
  latentqa index --model "$reader" --data "$out/corpus.jsonl" --out "$out/$format" --states "$format" \
    | tee "$out/$format.index.log"
  latentqa predict --model "$reader" --index "$out/$format" --data "$data/validation.json" --out "$out/$format.pred.json"
  latentqa score --gold "$data/validation.json" --pred "$out/$format.pred.json" --json > "$out/$format.scores.json"
done
