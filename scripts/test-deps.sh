#!/usr/bin/env bash
# Makes sure what the tests need besides Go is on this machine: redis-server (the tests start
# their own on a free port unless NIGHTONA_TEST_REDIS_URL names one), Node's npm for the
# Claude Code CLI, which `make tools` installs, and headless Chromium for the web pages' tests
# (unless NIGHTONA_SKIP_BROWSER=1 or NIGHTONA_CHROMIUM names a browser).
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "test-deps: need root to run: $*" >&2; return 1; fi
}

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: please install $* with your package manager" >&2
    return 1
  fi
  if [ -z "${apt_updated:-}" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ -z "${NIGHTONA_TEST_REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
  echo "test-deps: installing redis-server" >&2
  apt_install redis-server
fi

if [ "${NIGHTONA_SKIP_BROWSER:-}" != 1 ] && [ -z "${NIGHTONA_CHROMIUM:-}" ] &&
  ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "test-deps: installing chromium" >&2
  apt_install chromium
fi
