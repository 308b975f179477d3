#!/usr/bin/env bash
# Installs what building and testing this project needs, on a fresh Debian 12
# machine, as root. Idempotent: installed packages and tools are skipped, so
# a second run does no network traffic.
#
# Add Debian packages to APT_PACKAGES and Go tools to GO_TOOLS as issues need
# them (swtpm, mosquitto, postgresql, lintian, ...). It also fetches
# libonnxruntime into .cache/ (hack/fetch-onnxruntime.sh). On success it writes
# .cache/deps.stamp, which `make` uses to skip this script until it changes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIN_GO_MINOR=26 # go 1.26, as go.mod says

# Debian packages needed so far.
#   build-essential, gcc: cgo (the ONNX Runtime bridge) and go test -race
#   time:                 GNU /usr/bin/time, used by the benchmark scripts
#   postgresql:           a real PostgreSQL server for store tests (internal/testpg)
#   mosquitto, mosquitto-clients: the external-broker tests (controlplane/internal/broker)
#   swtpm, swtpm-tools:   a real TPM 2.0 emulator and swtpm_setup/swtpm_localca (internal/tpmdev, enrollment)
#   tpm2-tools:           tpm2_pcrextend against swtpm in the attestation tests (controlplane/internal/attest)
#   libssl-dev:           OpenSSL headers the go-tpm-tools TPM simulator (cgo) compiles against
#   chromium, chromium-driver: headless browser and its WebDriver for the fleet dashboard test
#   gcc-aarch64-linux-gnu, libc6-dev-arm64-cross: the arm64 agent built with cgo (make deb)
#   qemu-user:            runs the cross-built arm64 binaries here (make deb's check)
#   lintian, debootstrap: checks the .deb packages and installs them into a fresh Debian 12 root
#   systemd:              systemd-analyze security on the shipped units
#   iproute2:             network namespaces for the chaos tests (integration/)
#   curl:                 the demo asks the agents' inference sockets (curl --unix-socket)
APT_PACKAGES=(
	build-essential
	gcc
	time
	postgresql
	mosquitto
	mosquitto-clients
	swtpm
	swtpm-tools
	tpm2-tools
	libssl-dev
	chromium
	chromium-driver
	gcc-aarch64-linux-gnu
	libc6-dev-arm64-cross
	qemu-user
	lintian
	debootstrap
	systemd
	iproute2
	curl
)
# npm fetches libonnxruntime (hack/fetch-onnxruntime.sh). Only when there is
# no npm at all: a Node.js from elsewhere (e.g. NodeSource's nodejs, which
# bundles npm) conflicts with Debian's npm package.
if ! command -v npm >/dev/null 2>&1; then
	APT_PACKAGES+=(npm)
fi

# Go tools, installed into .cache/tools/bin (ignored by git): binary@module@version.
GO_TOOLS=(
	"staticcheck honnef.co/go/tools/cmd/staticcheck honnef.co/go/tools v0.8.2"
	"govulncheck golang.org/x/vuln/cmd/govulncheck golang.org/x/vuln v1.9.0"
)
TOOLS_BIN="$ROOT/.cache/tools/bin"
STAMP="$ROOT/.cache/deps.stamp"

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

# --- Go -----------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 ||
	die "go not found (looked on PATH and in /usr/local/go/bin); install Go 1.${MIN_GO_MINOR} or newer into /usr/local/go"
# GOTOOLCHAIN=local and cd / so that go reports itself instead of fetching
# the toolchain go.mod asks for.
go_version="$(cd / && GOTOOLCHAIN=local go env GOVERSION)"
if [[ ! "$go_version" =~ ^go1\.([0-9]+) ]] || ((BASH_REMATCH[1] < MIN_GO_MINOR)); then
	die "$(command -v go) is $go_version; this project needs go1.${MIN_GO_MINOR} or newer (install it into /usr/local/go)"
fi
log "using $(command -v go) ($go_version)"

# --- Debian packages ----------------------------------------------------------
if command -v dpkg >/dev/null 2>&1; then
	missing=()
	for p in "${APT_PACKAGES[@]}"; do
		if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed$'; then
			missing+=("$p")
		fi
	done
	if ((${#missing[@]} > 0)); then
		if ((EUID != 0)); then
			die "missing Debian packages: ${missing[*]}; run as root: apt-get update && apt-get install -y ${missing[*]}"
		fi
		log "installing Debian packages: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q
		apt-get install -y -q --no-install-recommends "${missing[@]}"
	else
		log "Debian packages present: ${APT_PACKAGES[*]}"
	fi
else
	log "warning: no dpkg (not Debian?); make sure these are installed: ${APT_PACKAGES[*]}"
fi

# --- Go tools -----------------------------------------------------------------
mkdir -p "$TOOLS_BIN"
for entry in "${GO_TOOLS[@]}"; do
	read -r bin pkg module version <<<"$entry"
	# go version -m reads the module version the binary was built from, so
	# bumping a version above reinstalls the tool.
	if [ -x "$TOOLS_BIN/$bin" ] &&
		go version -m "$TOOLS_BIN/$bin" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+${module}[[:space:]]+${version}([[:space:]]|$)"; then
		log "$bin $version present"
		continue
	fi
	log "installing $bin $version"
	(cd "$TOOLS_BIN" && GOBIN="$TOOLS_BIN" go install "$pkg@$version")
done

# --- libonnxruntime -----------------------------------------------------------
# The ONNX Runtime bridge (cgo/onnxruntime) and its tests load it at run time
# from .cache/onnxruntime/<arch>/; the script is idempotent and sha256-checked.
bash "$ROOT/hack/fetch-onnxruntime.sh"

touch "$STAMP"
log "done"
