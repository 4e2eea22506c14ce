#!/usr/bin/env bash
# Install the headless browser of the dashboard tests: Debian's chromium, its chromedriver and a
# CJK font (without one every Chinese character of the screenshots is a box).
#
# Why Debian's packages: the browser tests must never download a browser build at run time
# (selenium-manager, `playwright install`): that fails offline and is not reproducible. The
# Debian packages come from the ordinary package registry, chromium and chromedriver matched by
# version. Idempotent: does nothing when all three are there. Uses sudo when not root.
set -euo pipefail

CHROMIUM="${REPAIRQC_CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER="${REPAIRQC_CHROMEDRIVER:-/usr/bin/chromedriver}"
PACKAGES=(chromium chromium-driver fonts-noto-cjk)

have_cjk_font() {
  command -v fc-list >/dev/null 2>&1 && [[ -n "$(fc-list :lang=zh family 2>/dev/null)" ]]
}

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]] && have_cjk_font; then
  echo "install-browser: already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"), $CHROMEDRIVER, a CJK font"
  exit 0
fi

# shellcheck source=scripts/apt-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"
if ! apt_install install-browser "${PACKAGES[@]}"; then
  echo "  (or point REPAIRQC_CHROMIUM / REPAIRQC_CHROMEDRIVER at them)" >&2
  exit 1
fi

"$CHROMIUM" --version
"$CHROMEDRIVER" --version
