#!/usr/bin/env bash
# The tests: installs onnxruntime (PyPI wheel), checks formatting and lints (GPU features
# included, so they compile), builds in release and runs the whole test suite. Idempotent.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
echo "== fmt"
cargo fmt --all --check
echo "== clippy (with the GPU features: trainer/gpu, runtime/cuda, runtime/tensorrt)"
cargo clippy --release --workspace --all-targets --features trainer/gpu,runtime/cuda,runtime/tensorrt -- -D warnings
echo "== build and test (release; real-data tests read ../shared/data and skip with a reason without it)"
cargo build --release --workspace --bins
cargo test --release --workspace
