#!/usr/bin/env bash
# make demo (hack/demo.sh) and make demo-up (hack/demo.sh up): TensorGuardFlow
# end to end on this machine, on its embedded defaults.
#  1. The TGSP package format, offline: a signed + encrypted package with its
#     DP certificate, inspected, verified without a key, unpacked by the
#     device key; tampered, truncated and misaddressed copies refused.
#  2. A control plane (SQLite, embedded MQTT broker, the TG-Tinker trainer)
#     and three agents, each with its own simulated TPM, enrolled with
#     one-time tokens; their attestation verdicts as a stock MQTT client
#     sees them.
#  3. A small LM trained with DP-SGD through the TG-Tinker Go SDK
#     (examples/train-dp), exported as a TGSP package, pushed, admitted by
#     the example install policy (examples/policy: ε ≤ 8), rolled out in two
#     waves (one device, then the rest), one inference through each
#     agent's local KServe v2 API, and the ε it was trained under — from the
#     package's dp_cert and from the trainer's privacy endpoint, which agree.
#  4. `make demo`: revoke a device, verify the audit chain, stop everything
#     and check that no process is left. `make demo-up`: leave the stack
#     running and print how to poke it; `make demo-down` stops it.
# Everything it makes goes into .demo/ (removed first), logs included; a
# failure stops it with the reason and still stops what it started.
# DEMO_HTTP_PORT / DEMO_MQTT_PORT move the control plane off 18000 / 18883.
set -Eeuo pipefail

MODE="${1:-run}"
case "$MODE" in run | up) ;; *)
	echo "usage: hack/demo.sh [up]" >&2
	exit 2
	;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/bin:/usr/local/go/bin:$PATH"
export GOMLX_BACKEND="${GOMLX_BACKEND:-go:parallelism=-1}"
DEMO="$ROOT/.demo"
HTTP_PORT="${DEMO_HTTP_PORT:-18000}"
MQTT_PORT="${DEMO_MQTT_PORT:-18883}"
SERVER="https://127.0.0.1:$HTTP_PORT"
TENANT=acme
FLEET=edge
AGENTS=(1 2 3)
MODEL=edge-lm
VERSION=1.0.0
START=$SECONDS

# ---- output ---------------------------------------------------------------
SECTION=preflight
NSECTIONS=10
n=0
BOLD="" RED="" PLAIN=""
if [ -t 1 ]; then BOLD=$'\033[1m' RED=$'\033[1;31m' PLAIN=$'\033[0m'; fi
section() {
	n=$((n + 1))
	SECTION="$*"
	printf '\n%s== %d/%d  %s%s  (%ds)\n' "$BOLD" "$n" "$NSECTIONS" "$*" "$PLAIN" $((SECONDS - START))
}
say() { printf '   %s\n' "$*"; }
LAST=""
show() {
	LAST="$*"
	printf '$ %s\n' "$*"
}
indent() { sed 's/^/   /'; }
# run CMD...: show it, run it, indent its output.
run() {
	show "$*"
	"$@" 2>&1 | indent
}
# refused CMD...: the command must fail; show its one-line reason.
refused() {
	show "$*"
	local err
	if err="$("$@" 2>&1 >/dev/null)"; then
		die "expected this to be refused, but it succeeded: $*"
	fi
	say "refused -> $err"
}
die() {
	printf '\n%sdemo failed%s in "%s": %s\n' "$RED" "$PLAIN" "$SECTION" "$*" >&2
	exit 1
}

# ---- processes ------------------------------------------------------------
# Every process the demo starts is recorded in .demo/pids ("PID NAME LOG")
# and only those are ever signalled.
pids=()
names=()
OWN_PIDS=no # yes once .demo/pids is this run's
start() { # start NAME LOG CMD...: in its own session, so that it outlives
	# `make demo-up` and a Ctrl-C reaches only this script, which stops it.
	local name=$1 log=$2
	shift 2
	setsid "$@" >"$log" 2>&1 </dev/null &
	pids+=($!)
	names+=("$name")
	echo "$! $name $log" >>"$DEMO/pids"
}
alive() { kill -0 "$1" 2>/dev/null; }
# ours PID: the process runs from .demo/ (its command line names it).
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q "$DEMO/"; }
# stop_one NAME: stop one recorded process (SIGTERM) and forget it.
stop_one() {
	local i
	for i in "${!pids[@]}"; do
		[ "${names[$i]}" = "$1" ] || continue
		kill -TERM "${pids[$i]}" 2>/dev/null || true
		wait "${pids[$i]}" 2>/dev/null || true
		sed -i "/^${pids[$i]} /d" "$DEMO/pids"
		unset "pids[$i]" "names[$i]"
	done
}
# stop_all: in the reverse order of their start (agents before the control
# plane), SIGTERM each process and wait up to 20s for it, then SIGKILL.
stop_all() {
	local i p
	for i in $(printf '%s\n' "${!pids[@]}" | tac); do
		p=${pids[$i]}
		alive "$p" || continue
		kill -TERM "$p" 2>/dev/null || true
		for _ in $(seq 200); do alive "$p" || break; sleep 0.1; done
		if alive "$p"; then
			echo "demo: ${names[$i]} (pid $p) did not stop within 20s of SIGTERM; killing it" >&2
			kill -KILL "$p" 2>/dev/null || true
		fi
		wait "$p" 2>/dev/null || true
	done
}
# check_alive: every process started must still run; else show its log.
check_alive() {
	local i
	for i in "${!pids[@]}"; do
		if ! alive "${pids[$i]}"; then
			local log
			log=$(awk -v p="${pids[$i]}" '$1 == p {print $3}' "$DEMO/pids")
			echo "--- last lines of ${log#"$ROOT/"}:" >&2
			tail -n 15 "$log" >&2 || true
			die "${names[$i]} (pid ${pids[$i]}) exited"
		fi
	done
}
# wait_for DESC SECONDS CMD...: until CMD succeeds; the started processes
# must stay up meanwhile.
wait_for() {
	local what=$1 secs=$2 deadline
	shift 2
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		check_alive
		[ "$SECONDS" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what"
		sleep 0.3
	done
}
on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	if [ "$rc" -ne 0 ] && [ ${#pids[@]} -gt 0 ]; then
		echo "logs: .demo/cp.log, .demo/agentN/agent.log; stopping what the demo started" >&2
	fi
	if [ "$OWN_PIDS" = yes ] && { [ "$MODE" = run ] || [ "$rc" -ne 0 ]; }; then
		stop_all
		rm -f "$DEMO/pids"
	fi
	exit "$rc"
}
trap on_exit EXIT
trap 'die "interrupted"' INT TERM
trap 'die "exit status $? from: ${LAST:-$BASH_COMMAND}"' ERR

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
json_str() { sed -n 's/.*"'"$1"'": *"\([^"]*\)".*/\1/p' | head -1; }
# field KEY JSON: a string or number member of one line of JSON.
field() { printf '%s' "$2" | sed -n 's/.*"'"$1"'": *"\{0,1\}\([^",}]*\).*/\1/p' | head -1; }
json_num() { sed -n 's/.*"'"$1"'": *\([-0-9.eE+]*\).*/\1/p' | head -1; }

# ---- preflight ------------------------------------------------------------
if [ -f "$DEMO/pids" ]; then
	while read -r p _ _; do
		ours "$p" && die "a demo stack is still running (pid $p, from make demo-up): stop it with make demo-down"
	done <"$DEMO/pids"
fi
for p in "$HTTP_PORT" "$MQTT_PORT"; do
	port_free "$p" || die "port $p on 127.0.0.1 is in use; free it or set DEMO_HTTP_PORT / DEMO_MQTT_PORT"
done
for tool in curl setsid; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (apt-get install curl util-linux)"
done
HAVE_MOSQUITTO=$(command -v mosquitto_sub >/dev/null 2>&1 && echo yes || echo no)
ORT_LIB="$ROOT/.cache/onnxruntime/$(go env GOARCH)/libonnxruntime.so.1"
[ -f "$ORT_LIB" ] || die "no libonnxruntime at .cache/onnxruntime/: run bash hack/fetch-onnxruntime.sh (or, as root, bash hack/install-deps.sh)"

rm -rf "$DEMO"
mkdir -p "$DEMO/bin"
: >"$DEMO/pids"
OWN_PIDS=yes

section "build: the four binaries and the SDK example"
show "make build && go build -o .demo/bin/ ./examples/train-dp"
make --no-print-directory build >"$DEMO/build.log" 2>&1 || {
	tail -n 20 "$DEMO/build.log" >&2
	die "make build failed"
}
go build -o "$DEMO/bin/" ./examples/train-dp >>"$DEMO/build.log" 2>&1 || {
	tail -n 20 "$DEMO/build.log" >&2
	die "building examples/train-dp failed"
}
say "bin/: tgsp tgctl tg-agent tg-controlplane; .demo/bin/: train-dp (log: .demo/build.log)"

cd "$DEMO"
export XDG_CONFIG_HOME="$DEMO/config" # tgctl's context file stays in .demo/

# ---------------------------------------------------------------------------
section "TGSP, offline: sign, encrypt, verify without a key, unpack, refuse"
mkdir -p tgsp && cd tgsp
run tgsp keygen --kind signer --out publisher
run tgsp keygen --kind recipient --out device
mkdir -p model/tokenizer
head -c 1000000 /dev/urandom >model/weights.bin
printf '{"vocab":256}\n' >model/tokenizer/config.json
cat >dp_cert.json <<'JSON'
{"schema":"tgsp.dp_cert.v1","epsilon":2.93,"delta":1e-5,"accountant":"rdp",
 "noise_multiplier":1.1,"clipping_norm":1.0,"sampling_rate":0.004,"steps":3000,
 "dataset_size":60000,"sampling":"poisson"}
JSON
show "tgsp pack --signer-key publisher.key --recipient device.pub --name mnist-mlp --version 1.0.0 \\"
echo "    --dp-cert dp_cert.json --out mnist-mlp.tgsp model"
tgsp pack --signer-key publisher.key --recipient device.pub --name mnist-mlp --version 1.0.0 \
	--dp-cert dp_cert.json --out mnist-mlp.tgsp model 2>&1 | indent
show "tgsp inspect --all mnist-mlp.tgsp   # the DP certificate, in clear, bound by the signature"
tgsp inspect --all mnist-mlp.tgsp | awk '/^  "dp_cert"/{on=1} on{print} on&&/^  }/{exit}' | tr -d '\n' | tr -s ' ' | sed 's/,$//' | fold -s -w 100 | indent
echo
run tgsp verify --trust publisher.pub mnist-mlp.tgsp
run tgsp unpack --trust publisher.pub --recipient-key device.key --out installed mnist-mlp.tgsp
diff -r model installed >/dev/null || die "the unpacked files differ from the packed ones"
say "installed/ is identical to model/"
size=$(stat -c %s mnist-mlp.tgsp)
cp mnist-mlp.tgsp tampered.tgsp
off=$((size / 3))
byte=$(od -An -tu1 -j "$off" -N1 tampered.tgsp | tr -d ' ')
printf '%b' "$(printf '\\%03o' $((byte ^ 1)))" | dd of=tampered.tgsp bs=1 seek="$off" conv=notrunc status=none
say "(tampered.tgsp: one bit flipped at byte $off; truncated.tgsp: the last 100 bytes cut)"
head -c $((size - 100)) mnist-mlp.tgsp >truncated.tgsp
tgsp keygen --kind signer --out impostor >/dev/null
tgsp keygen --kind recipient --out other-device >/dev/null
refused tgsp unpack --trust publisher.pub --recipient-key device.key --out out tampered.tgsp
[ ! -e out ] || die "a failed unpack left out/ behind"
refused tgsp verify --trust publisher.pub truncated.tgsp
refused tgsp verify --trust impostor.pub mnist-mlp.tgsp
refused tgsp unpack --trust publisher.pub --recipient-key other-device.key --out out mnist-mlp.tgsp
cd "$DEMO"

# ---------------------------------------------------------------------------
section "control plane: SQLite, embedded MQTT broker, trainer — one process"
show "tg-controlplane init --tenant $TENANT --data-dir cp -o json > init.json"
tg-controlplane init --tenant "$TENANT" --data-dir cp -o json >init.json 2>init.err || {
	cat init.err >&2
	die "tg-controlplane init failed"
}
key=$(json_str api_key <init.json)
cahash=$(json_str ca_hash <init.json)
if [ -z "$key" ] || [ -z "$cahash" ]; then die "init.json has no api_key or ca_hash"; fi
printf '%s\n' "$key" >api-key
chmod 600 api-key
say "admin API key in .demo/api-key; CA hash $cahash"
# Attestation every 5s instead of the default 60s, so verdicts come quickly.
printf 'version: 1\nattestation: {interval: 5s}\n' >cp.yaml
show "tg-controlplane serve --config cp.yaml --data-dir cp --listen 127.0.0.1:$HTTP_PORT --mqtt-listen 127.0.0.1:$MQTT_PORT &"
say "(cp.yaml: attestation: {interval: 5s}; log in .demo/cp.log)"
start tg-controlplane "$DEMO/cp.log" tg-controlplane serve --config "$DEMO/cp.yaml" --data-dir "$DEMO/cp" \
	--listen "127.0.0.1:$HTTP_PORT" --mqtt-listen "127.0.0.1:$MQTT_PORT"
wait_for "the control plane to answer on :$HTTP_PORT" 60 curl -sf "http://127.0.0.1:$HTTP_PORT/readyz"
show "tgctl login --server $SERVER --api-key - --ca-hash sha256:${cahash#sha256:} < api-key"
tgctl login --server "$SERVER" --api-key - --ca-hash "$cahash" <api-key 2>&1 | indent
tgctl ca show --pem >ca.pem
show "tgctl ca show --pem > ca.pem   # the platform CA, pinned by the hash: curl and the SDK trust it"

# ---------------------------------------------------------------------------
section "three agents, each with its own simulated TPM, enroll and come online"
show "tgctl fleet create $FLEET --allow-simulated-tpm   # development: admit software TPMs"
tgctl fleet create "$FLEET" --allow-simulated-tpm | grep -E '^(ID|Simulated TPMs|Trusted TPM kinds|PCRs)' | indent
for i in "${AGENTS[@]}"; do
	mkdir -p "agent$i"
	tgctl token create "$FLEET" --ttl 10m -o json | json_str token >"agent$i/token"
	chmod 600 "agent$i/token"
	[ -s "agent$i/token" ] || die "no token for agent$i"
	cat >"agent$i/agent.yaml" <<YAML
version: 1
server_url: $SERVER
ca_hash: $cahash
token_file: $DEMO/agent$i/token
state_path: $DEMO/agent$i/agent.db
tpm: {simulator: true, simulator_seed: $i}
install: {onnxruntime_library: $ORT_LIB, onnxruntime_threads: 1}
YAML
done
say "one-time tokens in agentN/token; agentN/agent.yaml pins the control plane by its CA hash"
show "tg-agent run --config agentN/agent.yaml &   # N = 1 2 3; logs in .demo/agentN/agent.log"
for i in "${AGENTS[@]}"; do
	start "tg-agent-$i" "$DEMO/agent$i/agent.log" tg-agent run --config "$DEMO/agent$i/agent.yaml"
done
# devices: tgctl device list, the columns that matter here.
devices() {
	show "tgctl device list   # columns ID, STATUS, ONLINE, QUARANTINED, TPM"
	tgctl device list | awk '{printf "%-26s %-9s %-7s %-12s %s\n", $1, $4, $5, $6, $7}' | indent
}
online() { [ "$(tgctl device list -o json | grep -c '"online": *true')" -eq ${#AGENTS[@]} ]; }
wait_for "${#AGENTS[@]} devices online" 90 online
devices
declare -A DEV
for i in "${AGENTS[@]}"; do
	DEV[$i]=$(tg-agent status --config "agent$i/agent.yaml" -o json 2>/dev/null | json_str device_id)
	[ -n "${DEV[$i]}" ] || die "tg-agent status for agent$i has no device id"
done

# ---------------------------------------------------------------------------
section "fleet attestation: TPM quotes checked every 5s, verdicts retained on MQTT"
trusted() { [ "$(tgctl fleet watch "$FLEET" --once -o json | grep -c '"state": *"trusted"')" -eq ${#AGENTS[@]} ]; }
wait_for "${#AGENTS[@]} trusted verdicts" 90 trusted
tgctl mqtt credentials --out mqtt >/dev/null
show "tgctl mqtt credentials --out mqtt   # ca.pem, operator.crt, operator.key: read-only, this tenant"
if [ "$HAVE_MOSQUITTO" = yes ]; then
	show "mosquitto_sub -h 127.0.0.1 -p $MQTT_PORT --cafile mqtt/ca.pem --cert mqtt/operator.crt --key mqtt/operator.key \\"
	echo "    -t 'tg/v1/$TENANT/fleets/+/attestation/+' -v -C 3   # retained: every verdict at once"
	timeout 10 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" --cafile mqtt/ca.pem --cert mqtt/operator.crt \
		--key mqtt/operator.key -t "tg/v1/$TENANT/fleets/+/attestation/+" -v -C ${#AGENTS[@]} >verdicts.txt 2>&1 ||
		die "mosquitto_sub got no verdicts: $(tail -n 1 verdicts.txt)"
	# One line per device: the topic, then the payload's key fields.
	while read -r topic payload; do
		say "$topic"
		say "    $(field state "$payload"), TPM $(field tpm_kind "$payload"), PCR digest $(field pcr_digest "$payload" | cut -c1-16)…, nonce age $(field nonce_age_ms "$payload")ms, at $(field verdict_at "$payload" | cut -c12-19)"
	done <verdicts.txt
else
	say "(mosquitto_sub is not installed — hack/install-deps.sh installs it; tgctl shows the same verdicts)"
fi
run tgctl fleet watch "$FLEET" --once

# ---------------------------------------------------------------------------
section "train a small LM with DP-SGD through the TG-Tinker SDK, export it as TGSP"
show "TG_TINKER_API_KEY=\$(cat api-key) train-dp --server $SERVER --ca-file ca.pem --out $MODEL.tgsp"
say "(examples/train-dp: go run ./examples/train-dp works the same)"
TG_TINKER_API_KEY="$key" "$DEMO/bin/train-dp" --server "$SERVER" --ca-file ca.pem --name "$MODEL" \
	--version "$VERSION" --out "$MODEL.tgsp" --summary train.json 2>&1 | indent
tc=$(json_str training_client <train.json)
[ -n "$tc" ] || die "train.json has no training client"

# ---------------------------------------------------------------------------
section "push the package; roll it out in waves: 1 device, then the other 2"
run tgctl package push "$MODEL.tgsp"
show "tgctl policy push --fleet $FLEET ../examples/policy   # installs need a pinned publisher, ε ≤ 8, a trusted TPM"
tgctl policy push --fleet "$FLEET" "$ROOT/examples/policy" | awk 'NR == 2 {print "revision " $2 ", signed by the control plane key " $5 "; the agents pin it"}' | indent
# Every agent has it before any install job (they log each bundle they take).
policy_everywhere() {
	local i
	for i in "${AGENTS[@]}"; do grep -q 'msg="policy bundle installed".* revision=1 ' "$DEMO/agent$i/agent.log" || return 1; done
}
wait_for "every agent to take policy revision 1" 60 policy_everywhere
say "every agent verified and installed it"
if [ "$HAVE_MOSQUITTO" = yes ]; then
	# Rollout events are not retained: subscribe before creating it.
	# (stdbuf: line-buffered, so that its SUBACK shows when it happens.)
	start rollout-events "$DEMO/rollout-events.txt" stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" \
		--cafile "$DEMO/mqtt/ca.pem" --cert "$DEMO/mqtt/operator.crt" --key "$DEMO/mqtt/operator.key" \
		-t "tg/v1/$TENANT/rollouts/+/events" -q 1 -d
	wait_for "the rollout-events subscription" 20 grep -q SUBACK "$DEMO/rollout-events.txt"
fi
show "tgctl rollout create --package $MODEL@$VERSION --fleet $FLEET --waves 33,100 --device-timeout 5m"
tgctl rollout create --package "$MODEL@$VERSION" --fleet "$FLEET" --waves 33,100 --device-timeout 5m -o json >rollout.json
rid=$(json_str id <rollout.json)
[ -n "$rid" ] || die "tgctl rollout create printed no id"
say "rollout $rid: 33% of 3 devices is 1 device, then 100%: the other 2"
rollout_state() { tgctl rollout list | awk -v id="$rid" '$1 == id {print $4}'; }
deadline=$((SECONDS + 180))
while st=$(rollout_state) && [ "$st" != completed ]; do
	case "$st" in paused | aborted | rolled_back) die "rollout $rid is $st; see tgctl rollout status $rid" ;; esac
	check_alive
	[ "$SECONDS" -lt "$deadline" ] || die "rollout $rid did not complete in 180s (tgctl rollout status $rid)"
	sleep 0.3
done
if [ "$HAVE_MOSQUITTO" = yes ]; then
	sleep 0.5 # the last events
	stop_one rollout-events
	show "mosquitto_sub … -t 'tg/v1/$TENANT/rollouts/+/events' -q 1   # started before the rollout; what it saw:"
	while read -r ev; do
		[ -n "$ev" ] || continue
		type=$(field type "$ev")
		at=$(field at "$ev" | sed 's/.*T\([0-9:.]\{8,12\}\).*/\1/')
		wave=$(($(field wave "$ev") + 1))
		case "$type" in
		job) say "$at  wave $wave  job $(field device "$ev") $(field job_state "$ev")" ;;
		*) say "$at  wave $wave  $type" ;;
		esac
	done < <(grep '^{' rollout-events.txt)
fi
run tgctl rollout status "$rid"

# ---------------------------------------------------------------------------
section "one inference through each agent's local API (KServe v2, Unix socket)"
body='{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[116,104]}]}'
say "input: the bytes of \"th\" (116, 104); output: next-byte logits [1,2,256]"
# top3: the 3 likeliest bytes after the last input byte (softmax of logits
# 256..511), from the v2 response's data array.
top3() {
	sed 's/.*"data":\[\([^]]*\)\].*/\1/' | tr ',' '\n' | awk '
		NR > 256 && NR <= 512 { l[NR-257] = $1 + 0; if (NR == 257 || $1 + 0 > m) m = $1 + 0 }
		END {
			if (length(l) != 256) { print "no logits"; exit 1 }
			for (i = 0; i < 256; i++) s += exp(l[i] - m)
			for (k = 0; k < 3; k++) {
				b = -1; for (i = 0; i < 256; i++) if (!(i in used) && (b < 0 || l[i] > l[b])) b = i
				used[b] = 1
				c = (b >= 33 && b < 127) ? sprintf("%c", b) : (b == 32 ? "space" : sprintf("\\x%02x", b))
				printf "%s%s (p=%.2f)", (k ? ", " : ""), (k ? "" : "next byte ") c, exp(l[b] - m) / s
			}
		}'
}
declare -A WAVE
while read -r d w; do WAVE[$d]=$w; done < <(tgctl rollout status "$rid" | awk '$2 == "install" {print $1, $3}')
for i in "${AGENTS[@]}"; do
	sock="agent$i/inference.sock"
	if [ "$i" = "${AGENTS[0]}" ]; then
		show "curl -s --unix-socket $sock http://agent/v2/models/$MODEL/infer \\"
		echo "    -d '$body'"
	fi
	out=$(curl -sf --unix-socket "$sock" "http://agent/v2/models/$MODEL/infer" -d "$body") ||
		die "inference through agent$i's socket failed: $(curl -s --unix-socket "$sock" "http://agent/v2/models/$MODEL/infer" -d "$body" || true)"
	if [ "$i" = "${AGENTS[0]}" ]; then
		say "$(printf '%s' "$out" | cut -c1-110)…"
	fi
	ans=$(printf '%s' "$out" | top3) || die "agent$i answered without 512 logits: $(printf '%s' "$out" | cut -c1-200)"
	say "agent$i (${DEV[$i]}, wave ${WAVE[${DEV[$i]}]:-?}): \"th\" → $ans"
done

# ---------------------------------------------------------------------------
section "the ε the model was trained under: the package's dp_cert = the trainer's ledger"
show "tgctl package get $MODEL@$VERSION"
tgctl package get "$MODEL@$VERSION" | grep -i "dp cert\|name\|version" | indent
eps_pkg=$(tgctl package get "$MODEL@$VERSION" -o json | tr -d '\n' | sed -n 's/.*"dp_cert": *{[^}]*"epsilon": *\([-0-9.eE+]*\).*/\1/p')
show "curl -s --cacert ca.pem -H \"Authorization: Bearer \$(cat api-key)\" $SERVER/v1/training_clients/$tc/privacy"
priv=$(curl -sf --cacert ca.pem -H "Authorization: Bearer $key" "$SERVER/v1/training_clients/$tc/privacy") ||
	die "GET /v1/training_clients/$tc/privacy failed"
printf '%s\n' "$priv" | sed 's/,"/, "/g' | fold -s -w 100 | indent
eps_tr=$(printf '%s' "$priv" | json_num epsilon)
if [ -z "$eps_pkg" ] || [ -z "$eps_tr" ]; then die "no ε found (package: '$eps_pkg', trainer: '$eps_tr')"; fi
awk -v a="$eps_pkg" -v b="$eps_tr" 'BEGIN { d = a - b; exit !(d < 1e-9 && d > -1e-9) }' ||
	die "the package's dp_cert says ε=$eps_pkg but the trainer's privacy endpoint says ε=$eps_tr"
say "agree: ε = $eps_pkg (dp_cert.json in the package) = $eps_tr (the trainer's privacy ledger)"

if [ "$MODE" = up ]; then
	# ---------------------------------------------------------------------------
	section "the stack is up — poke it"
	cat >"$DEMO/env" <<ENV
# source .demo/env: tgctl (logged in), the SDK and the paths of the demo stack
export PATH="$ROOT/bin:\$PATH"
export XDG_CONFIG_HOME="$DEMO/config"
export TG_TINKER_BASE_URL="$SERVER"
export TG_TINKER_API_KEY="\$(cat "$DEMO/api-key")"
ENV
	pidlist=$(awk '{printf "%s%s", sep, $1; sep=" "}' pids)
	cat <<EOF
   # from the repository root:
   source .demo/env                 # PATH, tgctl's login, TG_TINKER_* for the SDK
   tgctl device list; tgctl fleet watch $FLEET; tgctl rollout status $rid
   curl -s --unix-socket .demo/agent1/inference.sock http://agent/v2/models/$MODEL
   curl -s --unix-socket .demo/agent2/inference.sock http://agent/v2/models/$MODEL/infer -d '$body'
   mosquitto_sub -h 127.0.0.1 -p $MQTT_PORT --cafile .demo/mqtt/ca.pem --cert .demo/mqtt/operator.crt \\
       --key .demo/mqtt/operator.key -t 'tg/v1/$TENANT/#' -v
   go run ./examples/train-dp --ca-file .demo/ca.pem --version 1.0.1 --out .demo/$MODEL-1.0.1.tgsp
   tgctl package push .demo/$MODEL-1.0.1.tgsp && tgctl rollout create --package $MODEL@1.0.1 --fleet $FLEET --waves 33,100
   dashboard: $SERVER/dashboard/  (CA: .demo/ca.pem; sign in with the API key in .demo/api-key)
   logs: .demo/cp.log, .demo/agentN/agent.log

   stop it: make demo-down    (or: kill $pidlist)
EOF
	trap - EXIT
	exit 0
fi

# ---------------------------------------------------------------------------
section "revoke a device; verify the audit chain; stop everything"
show "tgctl device revoke ${DEV[3]}   # agent3's: its certificate, TLS and MQTT access end at once"
tgctl device revoke "${DEV[3]}" >/dev/null
gone() { tgctl device list -o json | tr -d '\n' | grep -q "\"id\": *\"${DEV[3]}\"[^}]*\"online\": *false"; }
for _ in $(seq 60); do gone && break; sleep 0.3; done
devices
run tgctl audit verify
t0=$SECONDS
stop_all
left=""
for p in "${pids[@]}"; do alive "$p" && left+=" $p"; done
# Anything else still running from .demo/ (by command line; only reported).
for d in /proc/[0-9]*; do
	ours "${d#/proc/}" && left+=" ${d#/proc/}"
done
[ -z "$left" ] || die "processes still running after shutdown:$left"
pids=()
rm -f pids
say "control plane and ${#AGENTS[@]} agents stopped on SIGTERM in $((SECONDS - t0))s; no process left"

printf '\n%sdone in %ds.%s Everything is in .demo/ (logs: cp.log, agentN/agent.log; train.json).\n' "$BOLD" $((SECONDS - START)) "$PLAIN"
printf 'make demo-up runs the same and leaves the stack running.\n'
