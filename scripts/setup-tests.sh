#!/usr/bin/env bash
# Installs what the test suite needs: the pinned Python packages and Debian's Chromium (browser tests drive it
# through Playwright; `playwright install` is never used: it downloads a browser build).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
