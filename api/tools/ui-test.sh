#!/usr/bin/env bash
# The control center's browser test (api/tests/ui/console_test.py): headless Chromium and
# chromedriver from Debian's packages, Selenium from PyPI in a venv under ~/.cache.
#
#   ui-test.sh [--if-available] [SCREENSHOT_DIR]
#     --if-available   skip, saying why, where Chromium or chromedriver is missing (make test)
#   REALMQ_BIN         the node binary (default: the debug build)
#   UI_TEST_DIR        where the Selenium venv lives
set -euo pipefail
cd "$(dirname "$0")/.."
OPTIONAL=0
if [ "${1:-}" = --if-available ]; then OPTIONAL=1; shift; fi
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/realmq-target}
SHOTS=${1:-$TARGET/ui-screenshots}
export REALMQ_BIN=${REALMQ_BIN:-$TARGET/debug/realmq}
for tool in chromium chromedriver mosquitto_sub; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ $OPTIONAL = 1 ]; then
      echo "ui-test: SKIPPED: $tool is not installed (make test-ui installs it and runs the test)"
      exit 0
    fi
    echo "ui-test: $tool is not installed (make test-ui installs it)"; exit 1
  fi
done
VENV=${UI_TEST_DIR:-$HOME/.cache/realmq-ui}/venv
if ! "$VENV/bin/python" -c 'import selenium' >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'selenium==4.27.1'
fi
echo "ui-test: the control center in headless Chromium; screenshots in $SHOTS"
timeout 600 "$VENV/bin/python" tests/ui/console_test.py "$SHOTS"
