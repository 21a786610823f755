#!/usr/bin/env bash
# Every GPU measurement of issue 17 in one go (under 8 minutes on one H100/H200), as one Markdown report:
#   1. a whole 240 x 240 x 155 volume, official UNet, S = 4: official-style baseline (float32, chunks
#      of 320), exact (bf16 autocast + channels_last), exact float32, exact compiled, fast;
#   2. peak GPU memory of exact mode on a 512 x 512 x 64 slab against the 240 x 240 x 155 volume
#      (the engine's GPU memory depends on the batch, not on the volume);
#   3. AP of exact float32, exact bf16 and fast mode with the bundled T1 model on the demo scan and,
#      where ../shared/data/brats2018 exists, on its T1 scans (whole tumour, label > 0);
#   4. seconds per demo volume of the two bundled models (DISYRE S = 4 and masked Bernoulli diffusion).
# Each part has its own time limit, so one that hangs or fails leaves the others' rows.
#
#   benchmarks/gpu_bench.sh                 # on a GPU machine; report in gpu_bench_report.md (and $OUT)
#   benchmarks/gpu_bench.sh --dry-run       # on a CPU: tiny network, 2 slices, demo in fast mode only
#                                           # (checks the script, not the figures)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
REPORT=${REPORT:-gpu_bench_report.md}
BRATS=${BRATS:-../shared/data/brats2018}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [[ "${1:-}" == "--dry-run" ]]; then
    DEVICE=cpu
    VOLUME=(--network tiny --slices 2 --rows "official-style,exact,fast")
    MEMORY=(--network tiny --slices 2 --size 512 --rows exact)
    CASES=demo
    MODES=("--fast")
    LIMIT=600
else
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_bench.sh: this PyTorch sees no CUDA GPU; use --dry-run to check the script on a CPU" >&2
        exit 2
    fi
    DEVICE=cuda
    VOLUME=(--slices 155 --compile)
    MEMORY=(--slices 64 --size 512 --rows exact)
    CASES=all
    MODES=("--precision float32" "--precision auto" "--fast")
    LIMIT=240
fi

section() { printf '\n## %s\n\n' "$1" | tee -a "$REPORT"; }
: > "$REPORT"
{
    echo "# gpu_bench.sh report ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    "$PYTHON" -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU', '| torch', torch.__version__)"
} | tee -a "$REPORT"

section "Whole volume, S = 4 (speed-ups against the official-style row)"
timeout "$LIMIT" "$PYTHON" benchmarks/bench_engine.py --device "$DEVICE" "${VOLUME[@]}" 2>&1 | tee -a "$REPORT"

section "Peak memory of exact mode on a 512 x 512 slab (compare with the exact row above)"
timeout 120 "$PYTHON" benchmarks/bench_engine.py --device "$DEVICE" "${MEMORY[@]}" 2>&1 | tee -a "$REPORT"

section "AP with the bundled T1 model: exact float32, exact (auto precision), fast"
PAIRS="$WORK/brats_t1.csv"
if [[ "$CASES" == all && -d "$BRATS" ]]; then
    echo "scan,label,id" > "$PAIRS"
    for case in "$BRATS"/Brats18_*/; do
        id=$(basename "$case")
        echo "$case${id}_t1.nii.gz,$case${id}_seg.nii.gz,$id" >> "$PAIRS"
    done
fi
for data in demo brats; do
    if [[ "$data" == demo ]]; then what=(--demo); else [[ -f "$PAIRS" ]] || continue; what=(--pairs "$PAIRS"); fi
    for mode in "${MODES[@]}"; do
        echo "### $data, $mode" | tee -a "$REPORT"
        # shellcheck disable=SC2086
        timeout 150 "$PYTHON" -m napari_disyre.cli evaluate "${what[@]}" --device "$DEVICE" $mode \
            --baselines none -q 2>&1 | tail -n 8 | tee -a "$REPORT"
    done
done
section "Seconds per demo volume: bundled DISYRE (S = 4) against bundled Bernoulli diffusion (L = 100)"
timeout 150 "$PYTHON" -m napari_disyre.cli evaluate --demo --checkpoint demo --checkpoint demo-berdiff \
    --device "$DEVICE" --baselines none -q 2>&1 | tail -n 6 | tee -a "$REPORT"
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then cp "$REPORT" "$OUT/"; fi
echo "report: $REPORT"
