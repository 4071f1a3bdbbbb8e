#!/usr/bin/env bash
# Makes `cargo +nightly fuzz` available for fuzz/run.sh: installs cargo-fuzz from the
# crate registry when the nightly toolchain is there and cargo-fuzz is not. Exits 1 (and
# says why) when fuzzing cannot run here: no nightly toolchain (`rustup toolchain install
# nightly` adds one; the fuzz targets need it for libFuzzer's coverage instrumentation).
set -euo pipefail

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "install-fuzz: no nightly toolchain, so no fuzzing (rustup toolchain install nightly)"
    exit 1
fi
if cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "install-fuzz: $(cargo +nightly fuzz --version) already installed"
    exit 0
fi
echo "install-fuzz: installing cargo-fuzz (a few minutes)..."
if ! cargo install --locked cargo-fuzz; then
    echo "install-fuzz: cargo install cargo-fuzz failed, so no fuzzing"
    exit 1
fi
cargo +nightly fuzz --version
