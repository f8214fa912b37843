#!/bin/sh
# Installs Debian's chromium (for test/server/chat-page.test.ts, the chat page's browser test) when
# no chromium is on the PATH. Needs root (or sudo) and apt-get; does nothing when one is present.
# Usage: scripts/install-chromium.sh   (exit 0: chromium available; else the test skips, saying why)
set -e
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then
    echo "install-chromium: $(command -v "$b") already present"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get here; install chromium yourself (the browser test skips without it)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-chromium: not root and no sudo: cannot install chromium (the browser test skips without it)" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "install-chromium: installed $(command -v chromium)"
