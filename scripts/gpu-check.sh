#!/usr/bin/env bash
# What only a GPU can check, in one run: the tiny reader trained in fp32, bf16 and fp16 on CUDA, through each
# shipped Accelerate config (DDP, FSDP, DeepSpeed; one process each on a one-GPU machine), then the speed bench on
# CUDA. Each step has its own time limit and the run goes on past a failure; a summary line per step.
#   OUT=DIR [WHEELS=DIR] bash scripts/gpu-check.sh     (from the repository root; docs/gpu.md has the last figures)
# WHEELS: a folder of wheels (and a DeepSpeed sdist) for packages the machine lacks, installed offline first;
# WHEELS_SITE: a folder put on the path as it is (e.g. the MiniLM package's tokenizer files, whose vocabulary the
# bench uses, without its 90 MB of weights).
set -u
OUT=${OUT:-runs/gpu-check}
WORK=${WORK:-/tmp/latentqa-gpu}
mkdir -p "$OUT" "$WORK/logs"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.log"

step() {  # step NAME LIMIT_S COMMAND...: run it, log to WORK/logs/NAME.log, one summary line
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s :: $(grep -E 'done:|Error|error' "$WORK/logs/$name.log" | tail -n 2 | tr '\n' ' ' | cut -c1-400)" | tee -a "$SUMMARY"
    tar czf "$OUT/logs.tar.gz" -C "$WORK" logs  # after every step: a run stopped at its limit still brings its logs
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
} | tee "$SUMMARY"

if [ -n "${WHEELS:-}" ]; then
    SITE="$WORK/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE${WHEELS_SITE:+:$WHEELS_SITE}"
    for sdist in "$WHEELS"/deepspeed-*.tar.gz; do  # DeepSpeed ships no wheel: built here, its ops compiled on use
        [ -e "$sdist" ] && DS_BUILD_OPS=0 step deepspeed-install 150 python3 -m pip install -q --no-index --no-deps \
            --no-build-isolation --target "$SITE" "$sdist"
    done
fi

train() {  # train NAME [launcher args...] -- [overrides...]
    local name=$1; shift
    local launcher=()
    while [ "$1" != "--" ]; do launcher+=("$1"); shift; done; shift
    step "$name" 100 "${launcher[@]}" -m latentqa.cli train --config configs/tiny-latent.yaml \
        train.output_dir="$WORK/runs/$name" "$@"
    cp "$WORK/runs/$name/metrics.jsonl" "$WORK/logs/$name.metrics.jsonl" 2>/dev/null
}

train fp32 python3 -- train.mixed_precision=no  # 'no' as a bare YAML word: read as the string
train bf16 python3 -- train.mixed_precision=bf16
train fp16 python3 -- train.mixed_precision=fp16
for cfg in ddp fsdp deepspeed; do
    train "accelerate-$cfg" python3 -m accelerate.commands.launch --config_file "configs/accelerate/$cfg.yaml" --num_processes 1 --
done

step bench 200 python3 -m latentqa.cli bench --out-dir "$WORK/bench" --repeats 5
step bench-modes 120 python3 -m latentqa.cli bench --modes --lengths 2048 --repeats 3 --out-dir "$WORK/bench-modes"
cp "$WORK/bench/bench.json" "$WORK/bench/bench.png" "$OUT/" 2>/dev/null
cp "$WORK/bench-modes/bench.json" "$OUT/bench-modes.json" 2>/dev/null
tar czf "$OUT/logs.tar.gz" -C "$WORK" logs
