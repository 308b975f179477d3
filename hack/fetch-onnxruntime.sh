#!/usr/bin/env bash
# Fetches libonnxruntime 1.24.1 for the ONNX Runtime bridge (cgo/onnxruntime)
# into .cache/onnxruntime/<GOARCH>/libonnxruntime.so.1 (ignored by git, never
# committed), where the bridge and its tests find it.
#
# The library comes from the npm package onnxruntime-node@1.24.1, which ships
# Microsoft's Linux builds for x64 and arm64: `npm pack` downloads the package
# tarball (nothing is installed, no package script runs), the library is
# extracted from package/bin/napi-v6/linux/<arch>/ and its sha256 is checked
# against the value pinned below before it is moved into place.
#
# Idempotent: a library already in place with the right sha256 is kept and
# nothing is downloaded. Prints where each library is.
#
#   bash hack/fetch-onnxruntime.sh              # this machine's architecture
#   bash hack/fetch-onnxruntime.sh arm64        # e.g. for an arm64 .deb
#   bash hack/fetch-onnxruntime.sh amd64 arm64  # both
#
# Needs npm (and tar, sha256sum). hack/install-deps.sh installs npm when it is
# missing and runs this script.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORT_VERSION=1.24.1
NPM_PACKAGE="onnxruntime-node@${ORT_VERSION}"
LIB=libonnxruntime.so.1

# GOARCH -> the folder name onnxruntime-node uses, and the pinned sha256
# (DESIGN.md §4).
declare -A NPM_ARCH=([amd64]=x64 [arm64]=arm64)
declare -A SHA256=(
	[amd64]=53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4
	[arm64]=7954e8bdedb497f830c6a679e818d98399b7f4d81ade1126c3e0be74d28111ab
)

log() { printf 'fetch-onnxruntime: %s\n' "$*"; }
die() { printf 'fetch-onnxruntime: error: %s\n' "$*" >&2; exit 1; }

host_arch() {
	case "$(uname -m)" in
	x86_64 | amd64) echo amd64 ;;
	aarch64 | arm64) echo arm64 ;;
	*) die "no libonnxruntime for machine type $(uname -m); onnxruntime-node ships linux x64 and arm64" ;;
	esac
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

arches=("$@")
((${#arches[@]} > 0)) || arches=("$(host_arch)")
for a in "${arches[@]}"; do
	[ -n "${NPM_ARCH[$a]:-}" ] || die "unknown architecture '$a' (want amd64 or arm64)"
done

# Which ones are missing or wrong?
need=()
for a in "${arches[@]}"; do
	dest="$ROOT/.cache/onnxruntime/$a/$LIB"
	if [ -f "$dest" ] && [ "$(sha_of "$dest")" = "${SHA256[$a]}" ]; then
		log "$a: present: $dest (ONNX Runtime $ORT_VERSION, sha256 ok)"
	else
		[ ! -e "$dest" ] || log "$a: $dest has the wrong sha256; fetching it again"
		need+=("$a")
	fi
done
((${#need[@]} > 0)) || exit 0

command -v npm >/dev/null 2>&1 ||
	die "npm not found; install it (as root: apt-get install npm, or bash hack/install-deps.sh) and run this again"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log "npm pack $NPM_PACKAGE"
# Run in the temporary folder so the tarball lands there whatever npm's
# version (--pack-destination is newer than Debian 12's npm).
(cd "$tmp" && npm pack --silent --ignore-scripts "$NPM_PACKAGE" >/dev/null) ||
	die "npm pack $NPM_PACKAGE failed (is the npm registry reachable?)"
tarball="$tmp/onnxruntime-node-${ORT_VERSION}.tgz"
[ -f "$tarball" ] || die "npm pack did not produce $(basename "$tarball")"

for a in "${need[@]}"; do
	member="package/bin/napi-v6/linux/${NPM_ARCH[$a]}/$LIB"
	tar -xzf "$tarball" -C "$tmp" "$member" || die "$member is not in $NPM_PACKAGE"
	got="$(sha_of "$tmp/$member")"
	[ "$got" = "${SHA256[$a]}" ] ||
		die "$a: sha256 of $member is $got, want ${SHA256[$a]}; not installing it"
	dest="$ROOT/.cache/onnxruntime/$a/$LIB"
	mkdir -p "$(dirname "$dest")"
	# Copy next to the destination, then rename: a reader never sees half a
	# library, and an interrupted run leaves no file with the final name.
	install -m 0644 "$tmp/$member" "$dest.tmp"
	mv -f "$dest.tmp" "$dest"
	log "$a: installed $dest (ONNX Runtime $ORT_VERSION, sha256 ok)"
done
