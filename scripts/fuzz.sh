#!/usr/bin/env bash
# Runs every go test -fuzz target in the module for a short time each.
set -euo pipefail
t=${1:-4s}
fail=0
while IFS= read -r line; do
	file=${line%%:*}
	name=$(sed -E 's/^.*func (Fuzz[A-Za-z0-9_]+).*/\1/' <<<"$line")
	pkg=./$(dirname "$file")
	echo "fuzz: $pkg $name ($t)"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg" >/tmp/mnguard-fuzz.log 2>&1; then
		cat /tmp/mnguard-fuzz.log
		fail=1
	fi
done < <(git grep -n -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' -- '*_test.go')
exit $fail
