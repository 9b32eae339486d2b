#!/usr/bin/env bash
# Every --flag the Helm chart passes to the server must be one the server binary knows (a renamed flag
# would otherwise only show up as a crash-looping pod). Usage: chart_flags_exist.sh SQUEEZESERVE CHART_DIR
set -euo pipefail
server=$1 chart=$2
known=$("$server" --help | grep -oE '^  --[a-z_0-9]+' | tr -d ' ' | sort -u)
used=$(grep -hoE '^\s+- --[a-z_0-9]+' "$chart"/templates/*.yaml | sed 's/.*- //' | sort -u)
[ -n "$used" ] || { echo "no server flags found in $chart/templates"; exit 1; }
missing=$(comm -13 <(echo "$known") <(echo "$used"))
if [ -n "$missing" ]; then
  echo "flags used by the chart but unknown to squeezeserve:"; echo "$missing"; exit 1
fi
echo "all $(echo "$used" | wc -l) chart flags are known to squeezeserve"
