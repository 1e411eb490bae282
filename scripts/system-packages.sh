#!/usr/bin/env sh
# System packages the tests need, installed when missing (called by `make test`).
# chromium: the what-if report test renders the HTML report headless (Debian's package).
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: apt-get could not install chromium; the report rendering test will be skipped"
else
  echo "note: chromium is missing and cannot be installed here (needs root + apt-get: apt-get install -y chromium); the report rendering test will be skipped"
fi
exit 0
