#!/usr/bin/env bash
# Runs every Fuzz* target of the module for FUZZTIME each (default 10s): a
# bounded smoke run on top of the seed corpora that `go test` already runs.
# Targets are discovered, so a new fuzz test is picked up without editing
# this script. Exits non-zero if any target fails, after running them all.
#
#   FUZZTIME=1m hack/fuzz.sh              # longer run
#   hack/fuzz.sh ./tgsp/...               # only some packages
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
FUZZTIME="${FUZZTIME:-10s}"
patterns=("$@")
((${#patterns[@]} > 0)) || patterns=(./...)

# Only packages whose test files declare a fuzz function are compiled for
# `go test -list`, which keeps discovery cheap on a large tree.
candidates=()
while read -r pkg dir; do
	[ -n "$pkg" ] || continue
	if grep -lqs '^func Fuzz' "$dir"/*_test.go; then
		candidates+=("$pkg")
	fi
done < <(go list -f '{{.ImportPath}} {{.Dir}}' "${patterns[@]}" 2>/dev/null)

ran=0
failed=()
for pkg in ${candidates[@]+"${candidates[@]}"}; do
	targets="$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)"
	for target in $targets; do
		echo "--- fuzz $pkg $target ($FUZZTIME)"
		ran=$((ran + 1))
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "${FUZZMINIMIZETIME:-2s}" "$pkg"; then
			failed+=("$pkg.$target")
		fi
	done
done

if ((ran == 0)); then
	echo "fuzz: no Fuzz targets in ${patterns[*]}"
	exit 0
fi
if ((${#failed[@]} > 0)); then
	echo "fuzz: ${#failed[@]} of $ran targets failed: ${failed[*]}"
	echo "fuzz: a failing input is saved under the package's testdata/fuzz/; commit it as a regression case"
	exit 1
fi
echo "fuzz: $ran targets passed ($FUZZTIME each)"
