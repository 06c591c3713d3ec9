#!/usr/bin/env bash
# Builds the benchmark's C entry point (bench/lookup_capi.cpp) with the lookup kernels compiled under
# other tuning macros (src/cuda/lookup_kernel.cuh, "Build-time tuning knobs"), for an A/B run of
# bench/bench_cuda_lookup.py --variants NAME=PATH: the same process then times the default build and
# each variant on the same tables and ids. Builds here (no GPU needed) or on the GPU machine.
#
#   bench/build_capi_variant.sh OUT.so [-DTPEMBED_LOOKUP_...=V ...]
#   e.g. bench/build_capi_variant.sh .device/variants/nohints.so -DTPEMBED_LOOKUP_STREAM_HINTS=0
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: build_capi_variant.sh OUT.so [-DMACRO=VALUE ...]}
shift
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
objects=() pids=()
for source in bench/lookup_capi.cpp src/cuda/lookup_cuda.cu src/cuda/lookup_float_tables.cu \
              src/cuda/lookup_quantized_tables.cu; do
  object=$tmp/$(basename "$source").o
  "$nvcc" -std=c++17 -O3 -arch=sm_90 -Xcompiler -fPIC -I"$root/include" -I"$root/src" "$@" \
          -x "$([[ $source == *.cu ]] && echo cu || echo c++)" -c "$root/$source" -o "$object" &
  objects+=("$object") pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$nvcc" -shared -arch=sm_90 -o "$out" "${objects[@]}"
echo "built $out ($*)"
