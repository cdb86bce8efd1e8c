#!/usr/bin/env bash
# Installs every Debian 12 package dartserve needs to build, test and run.
# Idempotent: when everything is present it only checks (no apt-get call), so it is quick.
set -euo pipefail

PACKAGES=(
  # Toolchain. clang: scripts/test.sh checks the lock annotations with -Wthread-safety;
  # libclang-rt-14-dev: clang's libFuzzer and sanitizer runtimes (scripts/fuzz.sh), which apt
  # installs with clang only as a recommendation.
  g++ clang libclang-rt-14-dev cmake ninja-build pkg-config
  # Model: LibTorch (CPU) and an OpenMP BLAS (without it LibTorch falls back to reference BLAS).
  libtorch-dev libopenblas0-openmp
  # Common libraries.
  libabsl-dev nlohmann-json3-dev libpng-dev
  # Service layers. prometheus-cpp serves the server's metrics; civetweb (under its Exposer) is
  # also used directly by the metrics tests' HTTP client.
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler prometheus-cpp-dev
  libcivetweb-dev curl openssl
  # Text conditioning.
  libsentencepiece-dev sentencepiece
  # Tests, benchmarks, the Python reference peer; promtool and a real Prometheus for the metrics
  # tests.
  libgtest-dev libgmock-dev python3-torch zlib1g-dev prometheus
  # Deployment tests (tests/deploy/): the manifests, rules and dashboard are parsed in Python.
  python3-yaml
  # The web page's browser test (tests/server/web_page_test.py): headless Chromium via Selenium.
  chromium chromium-driver python3-selenium
  # Data. librsvg2-dev: the emoji data preparation rasterises SVG icons (data/emoji_prep.h); npm
  # fetches those icons, at training time only (scripts/prepare-emoji-data.sh).
  dataset-fashion-mnist librsvg2-dev
)

# DARTSERVE_DEPS_SKIP: space-separated packages to leave out. Dockerfile.cuda builds against a
# LibTorch CUDA distribution instead of Debian's CPU LibTorch.
skip=" ${DARTSERVE_DEPS_SKIP:-} "
missing=()
for p in "${PACKAGES[@]}"; do
  if [[ "$skip" == *" $p "* ]]; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
