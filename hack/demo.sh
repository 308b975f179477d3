#!/usr/bin/env bash
# make demo: what TensorGuardFlow can do today, end to end, on this machine.
# Today that is the TGSP package format: keys, a signed + encrypted model
# package with its DP certificate, inspection, keyless verification, an
# unpack by the device key, and tampered or misaddressed copies refused.
# Everything it makes goes into .demo/ (removed first); it needs only Go.
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
run go build -o bin/ ./tgsp/cmd/tgsp

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

bold "done"
echo "Everything above is in .demo/. The agent, control plane and trainer join this demo as they land."
