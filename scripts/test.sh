#!/usr/bin/env bash
# The tests: installs onnxruntime (PyPI wheel), checks formatting and lints (GPU features
# included, so they compile), builds in release and runs the whole test suite, then the
# LibTorch trainer's tests (libtorch 2.9.0 from PyPI, ~0.9 GB once). Idempotent.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
echo "== browser for the lab-tool test (Debian's chromium + chromium-driver; skipped by the test if this fails)"
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "warning: could not install chromium; the browser test will say SKIPPED"
  else
    echo "warning: chromium/chromedriver missing and not root: the browser test will say SKIPPED"
  fi
fi
echo "== Ray for the scale-out test (PyPI, into runs/ray-venv)"
if ! runs/ray-venv/bin/python -c "import ray" 2>/dev/null; then
  python3 -m venv runs/ray-venv && runs/ray-venv/bin/pip install -q "ray==2.60.0" \
    || echo "warning: could not install Ray; the Ray test will say SKIPPED"
fi
echo "== fmt"
cargo fmt --all --check
# the loss and provider registries declare their modules in a macro, which cargo fmt does not follow
rustfmt --check --edition 2024 runtime/src/ep/*.rs trainer/src/loss/*.rs
echo "== clippy (with the GPU features: trainer/gpu, runtime/cuda, runtime/tensorrt)"
cargo clippy --release --workspace --all-targets --features trainer/gpu,runtime/cuda,runtime/tensorrt -- -D warnings
echo "== the index library alone: no runtime, onnxruntime or HTTP stack in its tree"
cargo clippy --release -p index --no-default-features -- -D warnings
if cargo tree -p index --no-default-features -e normal --prefix none | grep -E '^(runtime|ort|axum|hyper|tokio) '; then
  echo "error: the index library without features depends on the crates above" >&2
  exit 1
fi
echo "== the runtime library alone: no burn, and no command-line or terminal crates without its cli feature"
cargo clippy --release -p runtime --no-default-features --lib -- -D warnings
if cargo tree -p runtime --no-default-features -e normal --prefix none | grep -E '^(burn|burn-[a-z-]+|clap|anyhow|indicatif) '; then
  echo "error: the runtime library without features depends on the crates above" >&2
  exit 1
fi
echo "== the trainer library alone: no command-line or terminal crates without its cli feature"
cargo clippy --release -p trainer --no-default-features --lib -- -D warnings
if cargo tree -p trainer --no-default-features -e normal --prefix none | grep -E '^(clap|anyhow|indicatif) '; then
  echo "error: the trainer library without features depends on the crates above" >&2
  exit 1
fi
echo "== build and test (release; real-data tests read ../shared/data and skip with a reason without it)"
cargo build --release --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace --no-fail-fast -- --show-output 2>&1 | tee "$log" || status=$?
echo "== the LibTorch trainer (libtorch 2.9.0 assembled from PyPI wheels; vendor/burn-tch patch)"
if LIBTORCH=$(scripts/setup-libtorch.sh); then
  export LIBTORCH
  cargo clippy --release -p trainer -p cellspace --all-targets --features cellspace/libtorch -- -D warnings || status=1
  cargo test --release -p cellspace --features libtorch --test trainer_fit -- libtorch --show-output 2>&1 | tee -a "$log" || status=$?
  unset LIBTORCH
else
  echo "SKIPPED the LibTorch trainer tests: libtorch could not be fetched from PyPI (scripts/setup-libtorch.sh)" | tee -a "$log"
fi
# one closing line for the whole suite (cargo prints one per test binary)
sum() { grep -E '^test result:' "$log" | sed -E "s/.* ([0-9]+) $1.*/\\1/" | awk '{s+=$1} END {print s+0}'; }
passed=$(sum passed)
failed=$(sum failed)
skipped=$(grep -cE '^SKIPPED ' "$log" || true)
echo "cellspace: $((passed - skipped)) passed, $failed failed, $skipped skipped"
exit "$status"
