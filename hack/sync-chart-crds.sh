#!/usr/bin/env bash
# Copy the CRDs (crds/*.yaml, the one source) into the Helm chart (charts/azora/crds/), byte
# for byte. tests/chart/test_crds.py fails when the two differ; run this after editing crds/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/crds"
dst="$root/charts/azora/crds"

mkdir -p "$dst"
# Remove chart copies whose source is gone, then copy every source file.
for f in "$dst"/*.yaml; do
    [[ -e "$f" ]] || continue
    [[ -e "$src/$(basename "$f")" ]] || rm -f -- "$f"
done
cp -- "$src"/*.yaml "$dst"/
echo "synced $(find "$src" -maxdepth 1 -name '*.yaml' | wc -l) CRDs into ${dst#"$root"/}"
