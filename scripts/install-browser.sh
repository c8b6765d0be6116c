#!/bin/sh
# Install Debian's chromium for the browser tests (pytest -m browser) if it is missing.
# Idempotent and quiet; Playwright drives this binary, so `playwright install` (which
# downloads its own browsers from a CDN) is never needed.
set -eu
# A Japanese font too: translation prompts are Japanese and render as empty boxes without one.
if [ -x /usr/bin/chromium ] && [ -d /usr/share/fonts/opentype/ipafont-gothic ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser.sh: apt-get not found; install chromium yourself (browser tests will be skipped)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq chromium fonts-ipafont-gothic >/dev/null 2>&1 || {
    $SUDO apt-get update -qq >/dev/null 2>&1
    $SUDO apt-get install -y -qq chromium fonts-ipafont-gothic >/dev/null
}
