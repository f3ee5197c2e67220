#!/usr/bin/env bash
# The README's test command: sets up everything the tests need on a fresh machine, runs them all.
# Slow tests (real models, a real `chroma run` server, a real browser) are included.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip

# torch first, pinned: the CPU build ships on this disk; an unpinned torch pulls GBs of CUDA.
pip install -q "torch==2.13.0"
# The embedded LLM extra builds llama-cpp-python from source: portable flags, since a native
# build crashes on CPUs with AMX. pip caches the built wheel, so later runs take seconds.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
pip install -q -e ".[dev,st,llamacpp]"

# Debian packages: Chromium for the browser tests (Playwright must not download its own
# browser), and FreeDict's bilingual dictionaries, which translate English question words into
# the articles' languages (rag.lang.dictionary; the product works without them).
DEBS=""
command -v chromium >/dev/null 2>&1 || DEBS=" chromium"
for pair in bul rus pol ces srp; do
  [ -e "/usr/share/dictd/freedict-eng-$pair.index" ] || DEBS="$DEBS dict-freedict-eng-$pair"
done
if [ -n "$DEBS" ]; then
  if [ "$(id -u)" = 0 ]; then
    # shellcheck disable=SC2086 # one word per package
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $DEBS >/dev/null
  else
    echo "missing Debian packages, tests that need them will be skipped:" \
         "sudo apt-get install$DEBS" >&2
  fi
fi

export HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False
ruff check rag tests app.py benchmarks
python -m pytest -p no:cacheprovider "$@"
