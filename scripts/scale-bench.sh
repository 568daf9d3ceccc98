#!/usr/bin/env bash
# The index as it grows (docs/index.md, "Toward 5 million"): `latentqa bench-scale` at 10^4, 10^5 and 10^6
# synthetic paragraphs, then the 10^5 index built again by 2 processes under torchrun and compared with the
# one-process build: the same paragraphs in the same rows, the same windows, states and vectors, the same
# retrieval for 200 questions.
#   scripts/scale-bench.sh OUT_DIR [STATES]       e.g. runs/bench-scale int8-pca64
set -euo pipefail
out=$1; states=${2:-int8-pca64}
latentqa bench-scale --sizes 10000 100000 1000000 --states "$states" --out-dir "$out"
latentqa bench-scale --sizes 100000 --states "$states" --keep --grow 0 --queries 20 --encoder-paragraphs 0 \
  --out-dir "$out/one-process"
OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 2 -m latentqa.cli index \
  --model "$out/one-process/standin-reader" --data "$out/one-process/corpus-100000.jsonl" \
  --out "$out/two-processes" --states "$states"
python - "$out/one-process/index-100000" "$out/two-processes" "$out/torchrun.json" <<'PY'
import json, sys
import numpy as np
from latentqa.benchmark.scale import synthetic_question, synthetic_vector
from latentqa.index.retrieval import Retriever
from latentqa.index.store import IndexStore

one, two = IndexStore(sys.argv[1]), IndexStore(sys.argv[2])
a, b = Retriever(one), Retriever(two)
rng = np.random.default_rng(0)
rows = rng.integers(len(one), size=200)
same_hits = sum(a.search(q, v, 10) == b.search(q, v, 10) for q, v in
                ((synthetic_question(one.paragraphs[r], rng), synthetic_vector(one, r, rng)) for r in rows))
windows = rng.integers(one.num_windows, size=2000)
result = {
    "paragraphs": len(one), "same_paragraphs_in_order": one.paragraphs == two.paragraphs,
    "same_windows": bool(np.array_equal(one._sorted_keys, two._sorted_keys)),
    "max_state_difference": max(float((one.window_states(w) - two.window_states(w)).abs().max()) for w in windows),
    "same_vectors": bool(np.array_equal(one.window_vectors(windows), two.window_vectors(windows))),
    "same_top10_of_200_questions": int(same_hits),
}
json.dump(result, open(sys.argv[3], "w"), indent=2)
print(json.dumps(result, indent=2))
PY
