#!/usr/bin/env bash
# make demo-down: stops the stack `make demo-up` left running — only the
# processes it recorded in .demo/pids ("PID NAME LOG" lines), and only while
# each one's command line still names .demo/ (a PID the kernel reused for
# something else is left alone). One at a time, agents first:
# SIGTERM, then SIGKILL after 20s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/.demo"
PIDS="$DEMO/pids"
if [ ! -s "$PIDS" ]; then
	echo "demo-down: no demo stack recorded (.demo/pids); nothing to stop"
	exit 0
fi
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q "$DEMO/"; }
# Agents before the control plane: the reverse order of their start.
tac "$PIDS" | while read -r pid name _; do
	ours "$pid" || continue
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 200); do ours "$pid" || break; sleep 0.1; done
	if ours "$pid"; then
		echo "demo-down: $name (pid $pid) did not stop within 20s of SIGTERM; SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	else
		echo "demo-down: stopped $name (pid $pid)"
	fi
done
rm -f "$PIDS"
echo "demo-down: stopped; files stay in .demo/ (make clean removes them)"
