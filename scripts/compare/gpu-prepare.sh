#!/usr/bin/env bash
# Prepares the side-by-side benchmarks for a GPU machine that has PyTorch but no Rust toolchain
# (issue 19, point 6; docs/benchmarks.md, "the same benches on an H200"): builds
# `tilpass-compare` with the wgpu backend (burn's CUDA backend cannot be built offline: its
# build script downloads LLVM), strips it and writes it gzipped to .devbin/ (git-ignored), and
# prints the command to run on that machine from the repository root.
#
#   scripts/compare/gpu-prepare.sh            # then run the printed command there
#
# On the machine, tilpass runs through Vulkan (`--tilpass-device wgpu:0`), PyTorch on CUDA
# (`--device cuda`); the Vulkan loader must be installed there (on this workplace's GPU
# machines: the .deb files of the device tool's README, unpacked before the run).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --release -p tilpass-benches --bin tilpass-compare --features wgpu >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release/tilpass-compare"
mkdir -p .devbin
strip -o .devbin/tilpass-compare "$bin"
gzip -9 -f .devbin/tilpass-compare
ls -l .devbin/tilpass-compare.gz >&2
commit=$(git rev-parse --short=12 HEAD)
git diff --quiet HEAD -- crates benches || commit="$commit (with uncommitted changes)"
# Two rounds per group fit one 10-minute call on an H200: tilpass's first process per group
# spends 1-2 minutes compiling and autotuning kernels (cubecl keeps them on disk for the
# next process), later ones 40-65 s; the Python processes 20-50 s.
cat <<CMD
gunzip -c .devbin/tilpass-compare.gz > .devbin/tilpass-compare && chmod +x .devbin/tilpass-compare && \\
export TILPASS_COMMIT="$commit" TILPASS_RUSTC="$(rustc -V)" TILPASS_COMPARE_BIN=\$PWD/.devbin/tilpass-compare \\
  TILPASS_REF_PYTHON=\$(command -v python3) PYTHONUNBUFFERED=1 && \\
timeout 250 scripts/compare/run.sh --rounds 2 --only lora_sft_step,t5_lora_sft_step \\
  --device cuda --tilpass-device wgpu:0 --process-timeout 150 --out \$OUT/train; \\
timeout 280 scripts/compare/run.sh --rounds 2 \\
  --only prefill_512,greedy_decode_256,greedy_decode_256_b8,decode_step_16,decode_step_512 \\
  --device cuda --tilpass-device wgpu:0 --process-timeout 150 --out \$OUT/dec
CMD
