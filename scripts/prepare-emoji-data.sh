#!/usr/bin/env bash
# Prepares the emoji model's training data (docs/data.md, "Emoji"): installs the pinned npm
# packages of the seven emoji sets and emojibase-data into a cache folder with Debian's npm, then
# rasterises every icon (build/tools/dartserve-emoji-data). Training-time only: nothing at build,
# test or serve time needs it. Re-running reuses the cache.
#
#   scripts/prepare-emoji-data.sh [CACHE_DIR]      # default data/cache/emoji
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-data/cache/emoji}
# Pinned: the versions the shipped model was trained on (their licences are checked below).
PACKAGES=(
  @iconify-json/twemoji@1.2.5 @iconify-json/noto@1.2.9 @iconify-json/noto-v1@1.2.5
  @iconify-json/fluent-emoji-flat@1.2.6 @iconify-json/fluent-emoji@1.2.7
  @iconify-json/emojione@1.2.3 @iconify-json/streamline-emojis@1.2.4 emojibase-data@17.0.0
)
if ! command -v npm >/dev/null; then
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm
fi
mkdir -p "$CACHE"
if [ ! -f "$CACHE/node_modules/emojibase-data/package.json" ]; then
  npm install --prefix "$CACHE" --no-audit --no-fund --ignore-scripts --no-save "${PACKAGES[@]}"
fi
# Each package's own licence field must still be a permissive one.
for p in "${PACKAGES[@]}"; do
  name=${p%@*}
  license=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["license"])' \
    "$CACHE/node_modules/$name/package.json")
  case "$license" in
    CC-BY-4.0|Apache-2.0|MIT) ;;
    *) echo "prepare-emoji-data: $name has licence $license, not one the model may use" >&2; exit 1 ;;
  esac
done
TARGET=dartserve-emoji-data scripts/build.sh
build/tools/dartserve-emoji-data --npm "$CACHE/node_modules" --out "$CACHE/images64"
