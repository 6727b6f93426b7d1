#!/bin/bash
# Copy a run directory's small files (report, figures, statistics, certificates, manifest, the ledge
# series) into docs/recorded/<name>, leaving out the endpoint arrays (inner*, outer, indicators*).
# Usage: docs/record_run.sh RUN_DIR NAME
set -euo pipefail
src=$1; dst=$(dirname "$0")/recorded/$2
mkdir -p "$dst"
(cd "$src" && find . -type f ! -path './inner*' ! -path './outer/*' ! -path './indicators*' ! -path '*/inner*' \
   ! -path '*/outer/*' ! -path '*/indicators*' -print0) | while IFS= read -r -d '' f; do
  mkdir -p "$dst/$(dirname "$f")"; cp "$src/$f" "$dst/$f"; done
