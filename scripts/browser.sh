#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser tests: Debian's chromium and chromium-driver packages
# (Playwright drives /usr/bin/chromium; no browser download). Installs them when missing; needs root.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "scripts/browser.sh: chromium is missing; run as root (apt-get install chromium chromium-driver)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version
