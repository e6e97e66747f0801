#!/usr/bin/env bash
# Installs the pinned Claude Code CLI into the data folder when none is on PATH.
#
# The CLI ships as one native binary per platform in @anthropic-ai/claude-code-<platform>.
# We install that package directly: the @anthropic-ai/claude-code wrapper of recent releases
# declares engines.node >=22, while the platform package needs no Node at all, so this works
# with whatever npm the machine has.
#
# Usage: scripts/install-claude.sh <data-dir> <version>
# Prints the path of the binary to use on its last line.
set -euo pipefail

data_dir=${1:?data dir}
version=${2:?version}

if [ -z "${NIGHTONA_FORCE_CLAUDE_INSTALL:-}" ] && command -v claude >/dev/null 2>&1; then
  command -v claude
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64)  plat=linux-x64 ;;
  Linux-aarch64|Linux-arm64) plat=linux-arm64 ;;
  Darwin-x86_64) plat=darwin-x64 ;;
  Darwin-arm64)  plat=darwin-arm64 ;;
  *) echo "install-claude: unsupported platform $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac
if [ "$(uname -s)" = Linux ] && ldd --version 2>&1 | grep -qi musl; then
  plat="$plat-musl"
fi

prefix="$data_dir/tools/claude-$version"
bin="$prefix/node_modules/@anthropic-ai/claude-code-$plat/claude"
link="$data_dir/tools/bin/claude"

if [ ! -x "$bin" ] || ! "$bin" --version >/dev/null 2>&1; then
  command -v npm >/dev/null 2>&1 || { echo "install-claude: npm is needed to install the Claude Code CLI (install Node.js)" >&2; exit 1; }
  echo "install-claude: installing @anthropic-ai/claude-code-$plat@$version into $prefix" >&2
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code-$plat@$version" >&2
  chmod +x "$bin"
fi
"$bin" --version >/dev/null 2>&1 || { echo "install-claude: $bin does not run" >&2; exit 1; }

mkdir -p "$(dirname "$link")"
ln -sfn "$(cd "$(dirname "$bin")" && pwd)/claude" "$link"
echo "$link"
