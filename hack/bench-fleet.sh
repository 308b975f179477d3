#!/usr/bin/env bash
# Issue-3 and issue-4 benchmarks (run by hack/bench.sh after the tgsp
# benchmark; also runnable alone). Each is measured against its baseline or
# goal in the same run and prints the ratio; being below a target is
# reported, never a failure.
#
#   enrollment   devices/s with the simulator TPM (sequential, full protocol),
#                the control plane's CPU per enrollment, and a measured
#                concurrent rate for devices without a TPM
#   agent idle   RSS and CPU of the real tg-agent, binary sizes (as built,
#                stripped, without the simulator); anchors: 30 MiB RSS goal,
#                Mender's ~7 MB binary; baseline: an idle Go program
#   fleet        BENCH_DEVICES mTLS MQTT devices on tg-controlplane's
#                embedded broker, then on Debian's mosquitto with the same
#                certificates (connects/s, RSS, CPU; anchor ~264 connects/s)
#   attestation  BENCH_ATTEST_DEVICES devices with software TPMs (full TPM
#                enrollment, then a quote per challenge) on their own
#                tg-controlplane with attestation.interval
#                BENCH_ATTEST_INTERVAL; p50/p90/p99/max from a device
#                publishing evidence to an operator subscriber receiving
#                its verdict, against the issue-4 goal p99 < 1 s; the
#                server's CPU and RSS. Any untrusted or stale verdict, lost
#                verdicts (> 0.5 %) or lost connections fail the run.
#   rollout      (issue 5) a BENCH_ROLLOUT_MIB model package (ONNX MLP with
#                its self-test, packed by the real tgsp) rolled out to
#                BENCH_ROLLOUT_DEVICES devices on their own tg-controlplane:
#                BENCH_ROLLOUT_AGENTS real tg-agent processes (simulator
#                TPM, ONNX Runtime) and simulated devices for the rest
#                (soft TPMs, the agent's routes and reports); total time,
#                the server's CPU and RSS, key grants per second (also as a
#                burst), and the agent's verify+decrypt against tgsp
#                verify + tgsp unpack. A device that does not commit, a
#                refused grant or an untrusted verdict fails the run.
#   load         (issue 8) BENCH_LOAD_DEVICES simulated agents on one
#                tg-controlplane, and the same scenario at
#                BENCH_LOAD_BASELINE_DEVICES first as the baseline: each
#                enrolls (full TPM protocol, soft TPM) and connects
#                (presence), is challenged every BENCH_LOAD_ATTEST_INTERVAL,
#                sends the agent's heartbeat every
#                BENCH_LOAD_TELEMETRY_INTERVAL; BENCH_LOAD_DURATION of that
#                (steady), then one rollout of a BENCH_LOAD_PACKAGE_MIB
#                package to every device in waves BENCH_LOAD_WAVES. The
#                control plane's CPU (user, sys, % of a core) and RSS (steady,
#                peak), verdict latency (evidence published → operator
#                receives the verdict) and job latency (job released →
#                committed report recorded) as p50/p90/p99/max, the rollout's
#                total time; ratios to the baseline and to the issue-4 goal
#                p99 < 1 s. Lost verdicts or heartbeats (> 0.5 %), an
#                untrusted verdict, a device that does not converge or a lost
#                connection fail the run.
#
# hack/fleetbench/main.go says how each number is taken.
#
#   BENCH_IDLE_S=60       agent idle window (s)
#   BENCH_HOLD_S=30       how long the fleet is held (s)
#   BENCH_DEVICES=1000    fleet size
#   BENCH_ENROLL_N=100    simulator-TPM enrollments
#   BENCH_CONC=16         MQTT connection attempts in flight
#   BENCH_ENROLL_CONC=8   concurrent enrollments (no-TPM fleet; attestation
#                         devices, each also connecting)
#   BENCH_ATTEST_DEVICES=1000  attesting devices
#   BENCH_ATTEST_INTERVAL=10s  the control plane's attestation.interval
#   BENCH_ATTEST_S=60     measured window (s), after every device is trusted
#   BENCH_ONLY=attest     run only the attestation phase (no mosquitto needed)
#   BENCH_ROLLOUT_DEVICES=100  devices in the rollout (real agents included)
#   BENCH_ROLLOUT_AGENTS=10    of them real tg-agent processes (each peaks
#                         near 3x the model size in RSS while it installs:
#                         the model is decrypted into memory, then loaded
#                         by ONNX Runtime)
#   BENCH_ROLLOUT_MIB=256      package size
#   BENCH_ROLLOUT_WAVES=100    the rollout's waves (e.g. 10,50,100)
#   BENCH_ROLLOUT_GRANT_ROUNDS=10  rounds of the key-grant burst
#   BENCH_ROLLOUT_ATTEST_INTERVAL=60s  attestation.interval of its control
#                         plane (a grant needs a verdict at most 2 intervals old)
#   BENCH_ONLY=rollout    run only the rollout phase (no mosquitto needed;
#                         needs libonnxruntime: bash hack/fetch-onnxruntime.sh)
#   BENCH_LOAD_DEVICES=1000           simulated agents in the load phase
#   BENCH_LOAD_BASELINE_DEVICES=100   the baseline's (0: no baseline)
#   BENCH_LOAD_DURATION=3m            steady phase of each (Go duration or s)
#   BENCH_LOAD_ATTEST_INTERVAL=30s    the control plane's attestation.interval
#   BENCH_LOAD_TELEMETRY_INTERVAL=10s heartbeat interval
#   BENCH_LOAD_WAVES=10,50,100        the rollout's waves
#   BENCH_LOAD_PACKAGE_MIB=1          its package (each device downloads it)
#   BENCH_LOAD_ROLLOUT_TIMEOUT=15m
#   BENCH_ONLY=load       run only the load phase (no mosquitto needed;
#                         ~2 x (BENCH_LOAD_DURATION + 2 min) at the defaults)
#   KEEP=1                keep the work files in .bench/fleet-work
#                         (attest/latency.csv, load-N/latency.csv: one line
#                         per verdict)
#
# Outputs: a table on stdout and a one-line JSON summary in .bench/fleet.json
# (the rollout and load phases' also alone in .bench/rollout.json and
# .bench/load.json; `.bench/fleet/fleetbench load-table .bench/load.json`
# with KEEP=1 prints its table again).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
if [ -z "${BENCH_ONLY:-}" ] && ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
	echo "bench-fleet: mosquitto is missing (bash hack/install-deps.sh installs it)" >&2
	exit 1
fi

# 1,000 client sockets in the load generator and as many in the broker,
# plus the broker's database and listeners.
clients=${BENCH_DEVICES:-1000}
if [ "${BENCH_ONLY:-}" = attest ] || (( ${BENCH_ATTEST_DEVICES:-1000} > clients )); then
	clients=${BENCH_ATTEST_DEVICES:-1000}
fi
if [ "${BENCH_ONLY:-}" = rollout ]; then
	clients=${BENCH_ROLLOUT_DEVICES:-100}
fi
want=$(( clients * 2 + 1024 ))
# The load phase's devices hold an MQTT session and HTTPS connections each.
if [ -z "${BENCH_ONLY:-}" ] || [ "${BENCH_ONLY}" = load ]; then
	want=$(( ${BENCH_LOAD_DEVICES:-1000} * 3 + 1024 > want ? ${BENCH_LOAD_DEVICES:-1000} * 3 + 1024 : want ))
fi
if (( $(ulimit -n) < want )); then
	ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
	if (( $(ulimit -n) < want )); then
		echo "bench-fleet: open-file limit $(ulimit -n) is below $want; raise the hard limit (ulimit -Hn)" >&2
		exit 1
	fi
fi

mkdir -p .bench
# One run at a time: runs share .bench/fleet and would measure each other.
exec 9>.bench/fleet.lock
if ! flock -n 9; then
	echo "bench-fleet: another run holds .bench/fleet.lock; waiting for it" >&2
	flock 9
fi
mkdir -p .bench/fleet/bin
echo "bench-fleet: go build tg-controlplane tg-agent tgsp fleetbench"
go build -o .bench/fleet/bin/ ./controlplane/cmd/tg-controlplane ./agent/cmd/tg-agent ./tgsp/cmd/tgsp
go build -o .bench/fleet/fleetbench ./hack/fleetbench

status=0
.bench/fleet/fleetbench -bin .bench/fleet/bin -work .bench/fleet-work -out .bench/fleet.json || status=$?
if [ "${KEEP:-}" != 1 ]; then
	rm -rf .bench/fleet
fi
if ((status != 0)); then
	echo "bench-fleet: fleetbench failed (exit $status); KEEP=1 keeps the logs in .bench/fleet-work" >&2
	exit "$status"
fi
echo
echo "bench-fleet: summary (.bench/fleet.json):"
cat .bench/fleet.json
if [ -z "${BENCH_ONLY:-}" ] || [ "${BENCH_ONLY}" = rollout ]; then
	echo "bench-fleet: rollout summary (.bench/rollout.json):"
	cat .bench/rollout.json
fi
if [ -z "${BENCH_ONLY:-}" ] || [ "${BENCH_ONLY}" = load ]; then
	echo "bench-fleet: load summary (.bench/load.json):"
	cat .bench/load.json
fi
