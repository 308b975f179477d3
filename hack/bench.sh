#!/usr/bin/env bash
# Benchmarks behind `make bench`. Each is measured against its baseline in the
# same run and prints the ratio; being below a target is reported, never a
# failure (shared machines are noisy). Exits non-zero only on real errors.
#
# tgsp: the real bin/tgsp packs, verifies and unpacks a random payload; verify
# and unpack are compared with in-memory SHA-256 and AES-256-GCM-open+SHA-256
# baselines on 1 and 2 cores, and peak RSS is checked to be bounded and
# independent of the payload size (hack/tgspbench/main.go says how).
#
#   BENCH_SIZE_MB=1024   payload size in MiB
#   BENCH_REPS=3         timed runs after one warm-up run; the best counts
#   KEEP=1               keep the work files in .bench/tgsp-work
#   BENCH_ONLY=attest|rollout|load  skip the tgsp benchmark and run only
#                        that phase of hack/bench-fleet.sh (which lists its
#                        knobs; load: 1,000 simulated agents, issue 8)
#   BENCH_ONLY=inference only the inference API benchmark (BENCH_INFER_N
#                        interleaved requests, default 2000)
#   BENCH_ONLY=dp        only the accountants and the DP-SGD MNIST benchmark
#
# Outputs: a table on stdout and a one-line JSON summary in .bench/tgsp.json.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

# Issue 6: the local inference API against a direct in-process ONNX Runtime
# call of the same ~0.5 ms model, interleaved; and resident memory per
# loaded model.
bench_inference() {
	echo "bench: inference API vs direct ONNX Runtime (agent/internal/inferapi)"
	mkdir -p .bench
	{
		go test -run '^$' -bench 'InferenceAPI|HandlerOverhead|RoundTripNop' -benchtime "${BENCH_INFER_N:-2000}x" ./agent/internal/inferapi/
		go test -run '^$' -bench 'ModelMemory' -benchtime 1x ./agent/internal/inferapi/
	} | tee .bench/inference.txt
}
# Issue 7: the accountants' time on the issue's case, then DP-SGD on MNIST
# (step time DP vs non-DP, test accuracy per ε; hack/bench-dp.sh lists its
# knobs and costs).
bench_dp() {
	echo "bench: accountants (internal/dpaccount)"
	go test -run '^$' -bench 'RDP|PRV|Moments' -cpu 1 ./internal/dpaccount/ | tee .bench/accountants.txt
	bash hack/bench-dp.sh
}
case "${BENCH_ONLY:-}" in
inference)
	bench_inference
	exit 0
	;;
dp)
	mkdir -p .bench
	bench_dp
	exit 0
	;;
esac

if [ -n "${BENCH_ONLY:-}" ]; then
	echo "bench: BENCH_ONLY=$BENCH_ONLY: skipping the tgsp benchmark"
	exec bash hack/bench-fleet.sh
fi

mkdir -p bin .bench
echo "bench: go build -o bin/ ./tgsp/cmd/tgsp"
go build -o bin/ ./tgsp/cmd/tgsp
go build -o .bench/tgspbench ./hack/tgspbench
if [ ! -x /usr/bin/time ]; then
	echo "bench: GNU time (/usr/bin/time) is missing; peak RSS will be approximate (bash hack/install-deps.sh installs it)" >&2
fi

status=0
.bench/tgspbench -tgsp bin/tgsp -dir .bench || status=$?
if [ "${KEEP:-}" != 1 ]; then
	rm -f .bench/tgspbench
fi
if ((status != 0)); then
	echo "bench: tgspbench failed (exit $status)" >&2
	exit "$status"
fi
echo
echo "bench: summary (.bench/tgsp.json):"
cat .bench/tgsp.json
bench_inference
bench_dp
bash hack/bench-fleet.sh # issue-3/4/5/8 fleet benchmarks (enrollment, agent idle, 1,000 mTLS MQTT devices, attestation, rollout, load)
