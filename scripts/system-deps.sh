#!/usr/bin/env bash
# Debian packages the tests need: wine (runs .bat scripts on Linux) and chromium (browser
# tests). Installs only what is missing.
set -euo pipefail
missing=()
command -v wine >/dev/null 2>&1 || missing+=(wine64)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: install ${missing[*]} with your package manager" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "system-deps: installing ${missing[*]} (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
