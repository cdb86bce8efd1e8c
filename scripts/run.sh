#!/usr/bin/env bash
# The main job from a fresh Debian 12 machine: install dependencies, build, and start the dartserve
# server with the shipped model(s): gRPC on port 50051, the web page and HTTP/JSON API on port 8080,
# Prometheus metrics on port 9464.
# Extra arguments go to the server (e.g. --port 50052 --auth_token_file token.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# The server's default --model is the shipped set under weights/ (`dartserve --helpfull`): DART-FM
# (flow head) first, the default model, then the mean-head DART and the text-to-image models (the
# 32x32 pixel one, the 64x64 latent one and the emoji one; requests with a prompt).
exec "${BUILD_DIR:-build}"/server/dartserve --port 50051 --http_port 8080 --metrics_port 9464 "$@"
