#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible server (llama-server, CPU, one static binary) from the llama.cpp
# sources vendored in the pinned llama-cpp-python sdist on PyPI (the only registry this project can
# reach; there is no llama.cpp wheel or Debian package). About 3.5 min on 2 cores; skipped when built.
#   usage: scripts/build-llama-server.sh OUT_DIR     → OUT_DIR/llama-server
# The tests of the `remote` backend against a real server (tests/integration/test_remote_server.py) use it.
set -euo pipefail
VERSION=0.3.36
OUT=${1:?usage: $0 OUT_DIR}
BIN="$OUT/llama-server"
# What the binary was built from and with; a binary without this stamp (or another one) is rebuilt.
# AMX is switched off: GGML_NATIVE turns on ggml's AMX kernels on CPUs that report AMX, and where the
# kernel or sandbox does not grant AMX state to the process they die with SIGILL at the first matmul
# (seen here on a Sapphire Rapids machine: llama-server exited -11 after "threadpool init").
BUILD="llama-cpp-python==$VERSION native no-amx"
STAMP="$BIN.build"
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$BUILD" ] && "$BIN" --version >/dev/null 2>&1; then exit 0; fi
PY=${PY:-python3}
for tool in cmake c++; do
  if ! command -v "$tool" >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      echo "==> installing cmake and g++ (to build llama-server)"
      apt-get update -qq && apt-get install -y -qq cmake g++ >/dev/null
    else
      echo "error: $tool is needed to build llama-server (apt-get install cmake g++)" >&2; exit 2
    fi
  fi
done
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
GEN=""; command -v ninja >/dev/null && GEN="-G Ninja"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "==> building llama-server from llama-cpp-python==$VERSION's vendored llama.cpp into $OUT"
$PY -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION"
tar xzf "$WORK"/llama_cpp_python-$VERSION.tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$SRC" -B "$WORK/build" $GEN -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=OFF \
  -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX" >/dev/null
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >/dev/null
mkdir -p "$OUT"
cp "$WORK/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN" && echo "$BUILD" > "$STAMP"
"$BIN" --version 2>&1 | head -2
