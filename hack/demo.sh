#!/usr/bin/env bash
# make demo: what TensorGuardFlow can do today, end to end, on this machine.
#  1. The TGSP package format: keys, a signed + encrypted model package with
#     its DP certificate, inspection, keyless verification, an unpack by the
#     device key, and tampered or misaddressed copies refused.
#  2. A control plane (SQLite, embedded MQTT broker) and three agents, each
#     with its own simulated TPM, enrolling with one-time tokens, appearing
#     online, watched over MQTT with an operator credential; their TPM
#     quotes are verified and the retained verdicts shown; one is revoked.
# Everything it makes goes into .demo/ (removed first). It needs Go; the MQTT
# view uses mosquitto_sub when installed (hack/install-deps.sh installs it).
# DEMO_HTTP_PORT / DEMO_MQTT_PORT move the control plane off 18000 / 18883.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="/usr/local/go/bin:$PATH"
DEMO="$ROOT/.demo"
export PATH="$ROOT/bin:$PATH"
TGSP=tgsp

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# refused CMD...: the command must fail; show its one-line reason.
refused() {
	printf '$ %s\n' "$*"
	local err
	if err="$("$@" 2>&1 >/dev/null)"; then
		echo "demo: expected this to be refused, but it succeeded" >&2
		exit 1
	fi
	printf '   refused -> %s\n' "$err"
}

bold "build"
run make --no-print-directory build

rm -rf "$DEMO"
mkdir -p "$DEMO"
cd "$DEMO"

bold "keys: the publisher signs, the device decrypts"
run "$TGSP" keygen --kind signer --out publisher
run "$TGSP" keygen --kind recipient --out device
ls -l publisher.key publisher.pub device.key device.pub

bold "a model directory and the DP certificate it was trained under"
mkdir -p model/tokenizer
head -c 3000000 /dev/urandom >model/weights.bin # 3 MB: 46 chunks, one shard
printf '{"vocab":256}\n' >model/tokenizer/config.json
cat >dp_cert.json <<'JSON'
{"schema":"tgsp.dp_cert.v1","epsilon":2.93,"delta":1e-5,"accountant":"rdp",
 "noise_multiplier":1.1,"clipping_norm":1.0,"sampling_rate":0.004,"steps":3000,
 "dataset_size":60000,"sampling":"poisson"}
JSON
cat >evidence.json <<'JSON'
{"schema":"tgsp.evidence.v1","base_model":"mnist-mlp","trainer":"demo",
 "datasets":[{"name":"mnist-train","size":60000}]}
JSON
find model -type f -exec ls -l {} +

bold "pack: encrypt to the device key, sign with the publisher key"
run "$TGSP" pack --signer-key publisher.key --recipient device.pub \
	--name mnist-mlp --version 1.0.0 --device-type jetson-orin --device-type x86-64 \
	--dp-cert dp_cert.json --evidence evidence.json --out mnist-mlp-1.0.0.tgsp model

bold "inspect: the signed manifest (no key needed; nothing about the plaintext leaks)"
"$TGSP" inspect mnist-mlp-1.0.0.tgsp | head -40
echo "   ..."
printf '$ tgsp inspect --all mnist-mlp-1.0.0.tgsp   # the DP certificate travels in clear, bound by the signature\n'
"$TGSP" inspect --all mnist-mlp-1.0.0.tgsp | awk '/^  "dp_cert"/{on=1} on{print} on&&/^  }/{exit}'

bold "verify: both signature halves, expiry, every shard hash — without any decryption key"
run "$TGSP" verify --trust publisher.pub mnist-mlp-1.0.0.tgsp

bold "unpack with the device key"
run "$TGSP" unpack --trust publisher.pub --recipient-key device.key --out installed mnist-mlp-1.0.0.tgsp
run diff -r model installed && echo "   identical to the input"

bold "what is refused"
size=$(stat -c %s mnist-mlp-1.0.0.tgsp)
cp mnist-mlp-1.0.0.tgsp tampered.tgsp
# flip one bit in the middle of the encrypted payload
off=$((size / 3))
byte=$(od -An -tu1 -j "$off" -N1 tampered.tgsp | tr -d ' ')
printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of=tampered.tgsp bs=1 seek="$off" conv=notrunc status=none
echo "(tampered.tgsp: one bit flipped at byte $off)"
refused "$TGSP" verify --trust publisher.pub tampered.tgsp
refused "$TGSP" unpack --trust publisher.pub --recipient-key device.key --out tampered-out tampered.tgsp
[ ! -e tampered-out ] && echo "   and tampered-out/ was never created"
head -c $((size - 100)) mnist-mlp-1.0.0.tgsp >truncated.tgsp
refused "$TGSP" verify --trust publisher.pub truncated.tgsp
"$TGSP" keygen --kind signer --out impostor >/dev/null
"$TGSP" keygen --kind recipient --out other-device >/dev/null
refused "$TGSP" verify --trust impostor.pub mnist-mlp-1.0.0.tgsp
refused "$TGSP" unpack --trust publisher.pub --recipient-key other-device.key --out other mnist-mlp-1.0.0.tgsp
refused "$TGSP" unpack --trust publisher.pub --recipient-key publisher.key --out other mnist-mlp-1.0.0.tgsp
"$TGSP" pack --signer-key publisher.key --recipient device.pub --version 1.0.1 --expires 2s \
	--out short-lived.tgsp model >/dev/null
sleep 3
refused "$TGSP" verify --trust publisher.pub short-lived.tgsp
chmod 644 device.key
refused "$TGSP" unpack --trust publisher.pub --recipient-key device.key --out other mnist-mlp-1.0.0.tgsp
chmod 600 device.key
ln -s /etc/passwd model/escape
refused "$TGSP" pack --signer-key publisher.key --recipient device.pub --out escape.tgsp model
rm model/escape

# ---------------------------------------------------------------------------
HTTP_PORT="${DEMO_HTTP_PORT:-18000}"
MQTT_PORT="${DEMO_MQTT_PORT:-18883}"
SERVER="https://127.0.0.1:$HTTP_PORT"
export XDG_CONFIG_HOME="$DEMO/config" # tgctl's context file stays in .demo/
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

bold "control plane: first run creates the tenant, its CA and an admin API key"
run tg-controlplane init --tenant acme --data-dir cp -o json >init.json
key=$(sed -n 's/.*"api_key": *"\([^"]*\)".*/\1/p' init.json)
cahash=$(sed -n 's/.*"ca_hash": *"\([^"]*\)".*/\1/p' init.json)
echo "   api key tgk_…(hidden), CA hash $cahash"
# A short attestation interval so the demo's devices get verdicts quickly
# (the default is 60s).
cat >cp.yaml <<'YAML'
version: 1
attestation: {interval: 5s}
YAML
run cat cp.yaml
tg-controlplane serve --config cp.yaml --data-dir cp --listen "127.0.0.1:$HTTP_PORT" --mqtt-listen "127.0.0.1:$MQTT_PORT" >cp.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null && break; sleep 0.2; done
printf '$ tgctl login --server %s --api-key - --ca-hash %s   # key on stdin\n' "$SERVER" "$cahash"
tgctl login --server "$SERVER" --api-key - --ca-hash "$cahash" <<<"$key"

bold "a fleet that admits simulated TPMs (development only), and one token per device"
run tgctl fleet create edge --allow-simulated-tpm
for i in 1 2 3; do
	mkdir -p "agent$i"
	tgctl token create edge --ttl 10m -o json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' >"agent$i/token"
	chmod 600 "agent$i/token"
	cat >"agent$i/agent.yaml" <<YAML
version: 1
server_url: $SERVER
ca_hash: $cahash
token_file: $DEMO/agent$i/token
state_path: $DEMO/agent$i/agent.db
tpm: {simulator: true, simulator_seed: $i}
YAML
done
echo "   tokens written to agentN/token; agentN/agent.yaml pins the control plane by its CA hash"

bold "three agents enroll with their TPMs (EK, AK, credential activation, TPM-resident TLS key)"
for i in 1 2 3; do
	tg-agent run --config "agent$i/agent.yaml" >"agent$i/agent.log" 2>&1 &
	pids+=($!)
done
for _ in $(seq 100); do
	[ "$(tgctl device list -o json | grep -o '"online": *true' | wc -l)" -eq 3 ] && break
	sleep 0.2
done
run tgctl device list

bold "fleet state over MQTT, with a read-only operator credential"
run tgctl mqtt credentials --out mqtt
if command -v mosquitto_sub >/dev/null 2>&1; then
	printf '$ mosquitto_sub … -t "tg/v1/acme/devices/+/status" -v   # retained: the whole fleet at once\n'
	timeout 3 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" --cafile mqtt/ca.pem --cert mqtt/operator.crt \
		--key mqtt/operator.key -t 'tg/v1/acme/devices/+/status' -v -W 2 2>/dev/null | sed 's/^/   /' || true
else
	echo "   (mosquitto_sub not installed: run hack/install-deps.sh to see the retained statuses here)"
fi

bold "fleet attestation: TPM quotes verified against the fleet policy, verdicts retained over MQTT"
echo "   (the control plane challenges every device every 5s here; the fleet admits simulated TPMs)"
for _ in $(seq 100); do
	[ "$(tgctl fleet watch edge --once -o json 2>/dev/null | grep -o '"state": *"trusted"' | wc -l)" -eq 3 ] && break
	sleep 0.3
done
if command -v mosquitto_sub >/dev/null 2>&1; then
	printf '$ mosquitto_sub … -t "tg/v1/acme/fleets/+/attestation/+" -v -W 3   # retained: every verdict at once\n'
	timeout 5 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" --cafile mqtt/ca.pem --cert mqtt/operator.crt \
		--key mqtt/operator.key -t 'tg/v1/acme/fleets/+/attestation/+' -v -W 3 2>/dev/null | sed 's/^/   /' || true
else
	echo "   (mosquitto_sub not installed: run hack/install-deps.sh to see the retained verdicts here)"
fi
run tgctl fleet watch edge --once
first=$(tgctl device list -o json | sed -n 's/.*"id": *"\(dev-[^"]*\)".*/\1/p' | head -1)
run tgctl attestation history "$first"

bold "revoke one device: it is disconnected at once and its Will marks it offline"
victim=$(tgctl device list -o json | sed -n 's/.*"id": *"\(dev-[^"]*\)".*/\1/p' | head -1)
run tgctl device revoke "$victim"
sleep 2
run tgctl device list
run tgctl audit verify

bold "shutdown"
cleanup
pids=()
echo "   control plane and agents stopped (SIGTERM); logs in .demo/cp.log and .demo/agentN/agent.log"

bold "done"
echo "Everything above is in .demo/. Rollouts and the trainer join this demo as they land."
