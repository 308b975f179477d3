#!/usr/bin/env bash
# Builds the Debian packages (`make deb`; packaging/README.md):
# dist/tg-agent_<version>_<arch>.deb and dist/tg-controlplane_<version>_<arch>.deb
# for each architecture in DEB_ARCHES (default: amd64 arm64).
#
#   VERSION=1.2.3 bash hack/deb-build.sh          # what `make deb` runs
#   DEB_ARCHES=amd64 OUT=dist/x bash hack/deb-build.sh
#
# The agent is built with cgo (the ONNX Runtime bridge dlopens
# libonnxruntime) and -tags notpmsim (no TPM simulator, so no libcrypto);
# arm64 with Debian's cross compiler (aarch64-linux-gnu-gcc); the control
# plane and tgctl likewise, with cgo only for libc's resolver. Every binary is checked with `file`; the
# arm64 ones also run under qemu-user (`version`). Man pages and shell
# completion come from running the host-architecture binaries (they are
# the same for every architecture). Then lintian checks every package
# (errors fail the build; warnings are listed in packaging/README.md).
#
# Needs: go, nfpm (NFPM, default .cache/tools/bin/nfpm), gcc and
# gcc-aarch64-linux-gnu, qemu-user, file, lintian, and libonnxruntime in
# .cache/onnxruntime/<arch>/ (hack/fetch-onnxruntime.sh), all installed by
# hack/install-deps.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.cache/tools/bin:/usr/local/go/bin:$PATH"

MOD=github.com/tensorguard/tensorguardflow
VERSION="${VERSION:?set VERSION (make deb sets it from git describe)}"
DEB_ARCHES="${DEB_ARCHES:-amd64 arm64}"
OUT="${OUT:-dist}"
NFPM="${NFPM:-$ROOT/.cache/tools/bin/nfpm}"
LINTIAN="${LINTIAN:-1}"
export STAGE="$OUT/stage"
HOST_ARCH="$(go env GOARCH)"

log() { printf 'deb-build: %s\n' "$*"; }
die() { printf 'deb-build: error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found; run: sudo bash hack/install-deps.sh ($2)"; }

need "$NFPM" "or: make .cache/tools/bin/nfpm"
need file file
for arch in $DEB_ARCHES; do
	case "$arch" in
	amd64) [ "$HOST_ARCH" = amd64 ] || need x86_64-linux-gnu-gcc gcc-x86-64-linux-gnu ;;
	arm64) if [ "$HOST_ARCH" != arm64 ]; then need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu; need qemu-aarch64 qemu-user; fi ;;
	*) die "DEB_ARCHES: $arch is not amd64 or arm64" ;;
	esac
	[ -f ".cache/onnxruntime/$arch/libonnxruntime.so.1" ] || bash hack/fetch-onnxruntime.sh "$arch"
done

rm -rf "$STAGE"
rm -f "$OUT"/tg-agent_*.deb "$OUT"/tg-controlplane_*.deb
mkdir -p "$STAGE/share/man" "$STAGE/share/completion"

# -trimpath and an empty build id keep the binaries free of this machine's
# paths; -s -w strips them (Debian ships debug info separately, which we
# do not build). PIE for ASLR, and full RELRO (bind now) as dpkg's
# hardening flags do for C.
GOFLAGS_BUILD=(-trimpath -buildmode=pie -buildvcs=false)
LDFLAGS="-s -w -buildid= -linkmode=external -extldflags=-Wl,-z,relro,-z,now -X $MOD/agent.Version=$VERSION -X main.version=$VERSION -X $MOD/controlplane/internal/tgctl.Version=$VERSION"

build() { # arch
	local arch="$1" dir="$STAGE/$1" cc
	mkdir -p "$dir"
	case "$arch" in
	"$HOST_ARCH") cc=gcc ;;
	arm64) cc=aarch64-linux-gnu-gcc ;;
	amd64) cc=x86_64-linux-gnu-gcc ;;
	esac
	log "$arch: go build tg-agent (cgo, CC=$cc, -tags notpmsim)"
	CGO_ENABLED=1 CC="$cc" GOOS=linux GOARCH="$arch" \
		go build "${GOFLAGS_BUILD[@]}" -tags notpmsim -ldflags "$LDFLAGS" -o "$dir/tg-agent" ./agent/cmd/tg-agent
	# cgo here only for the C library's resolver and user database (what
	# a Debian system configures in nsswitch.conf), and a dynamically
	# linked PIE as Debian expects.
	log "$arch: go build tg-controlplane tgctl (cgo, CC=$cc)"
	CGO_ENABLED=1 CC="$cc" GOOS=linux GOARCH="$arch" \
		go build "${GOFLAGS_BUILD[@]}" -ldflags "$LDFLAGS" -o "$dir/" ./controlplane/cmd/tg-controlplane ./controlplane/cmd/tgctl
}

# check ARCH: the ELF machine is the package's, and each binary runs and
# prints the version it was built with (arm64 under qemu-user, with the
# cross toolchain's libc as its root).
check() {
	local arch="$1" want run=() b out
	case "$arch" in amd64) want="x86-64" ;; arm64) want="ARM aarch64" ;; esac
	if [ "$arch" != "$HOST_ARCH" ]; then
		case "$arch" in
		arm64) run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
		amd64) run=(qemu-x86_64 -L /usr/x86_64-linux-gnu) ;;
		esac
	fi
	for b in tg-agent tg-controlplane tgctl; do
		out="$(file -b "$STAGE/$arch/$b")"
		[[ "$out" == *"ELF 64-bit LSB pie executable, $want"* ]] || die "$arch/$b is not a $want PIE: $out"
		out="$("${run[@]}" "$STAGE/$arch/$b" version)"
		[[ "$out" == "$b $VERSION"* ]] || die "$arch/$b version printed \"$out\", want \"$b $VERSION…\""
		log "$arch: $b: ${want}; ${run[*]:+${run[*]} }$b version: $out"
	done
}

# libc_depends ARCH BINARY...: the libc requirement, from the newest
# GLIBC_x.y symbol version the binaries use (nfpm does not run
# dpkg-shlibdeps). The binaries link nothing else (checked).
libc_depends() {
	local arch="$1" v b
	shift
	for b in "$@"; do
		if readelf -d "$STAGE/$arch/$b" | grep NEEDED | grep -v '\[libc\.so\.6\]'; then
			die "$arch/$b links more than libc.so.6: add those libraries to the recipe's depends"
		fi
	done
	v="$(for b in "$@"; do readelf --dyn-syms -W "$STAGE/$arch/$b"; done | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
	[ -n "$v" ] || die "$arch/$*: no GLIBC symbol versions found"
	echo "libc6 (>= $v)"
}

docs() { # from the host-architecture binaries
	local b sh bin="$STAGE/$HOST_ARCH"
	for b in tg-agent tg-controlplane tgctl; do
		"$bin/$b" man | gzip -9n >"$STAGE/share/man/$b.1.gz"
		for sh in bash zsh fish; do
			"$bin/$b" completion "$sh" >"$STAGE/share/completion/$b.$sh"
		done
	done
	# One changelog entry per build, dated by the commit (reproducible).
	local date
	date="$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
	cat >"$STAGE/share/changelog.yaml" <<-YAML
	- semver: "$VERSION"
	  date: $date
	  packager: TensorGuardFlow <maintainers@tensorguardflow.invalid>
	  deb:
	    urgency: medium
	    distributions: [stable]
	  changes:
	    - note: Built from the TensorGuardFlow sources at version $VERSION.
	YAML
}

# The host's binaries first: docs need them.
arches="$HOST_ARCH"
for arch in $DEB_ARCHES; do [ "$arch" = "$HOST_ARCH" ] || arches="$arches $arch"; done
for arch in $arches; do
	build "$arch"
	check "$arch"
	[ "$arch" != "$HOST_ARCH" ] || docs
done

debs=()
for arch in $DEB_ARCHES; do
	export ARCH="$arch" VERSION LIBC_DEPENDS
	for pkg in tg-agent tg-controlplane; do
		case "$pkg" in
		tg-agent) LIBC_DEPENDS="$(libc_depends "$arch" tg-agent)" ;;
		tg-controlplane) LIBC_DEPENDS="$(libc_depends "$arch" tg-controlplane tgctl)" ;;
		esac
		log "$arch: $pkg depends on $LIBC_DEPENDS"
		# nfpm expands variables in most fields but not in changelog:
		# the recipe gets the stage's path here.
		sed "s|\${STAGE}|$STAGE|g" "packaging/$pkg.nfpm.yaml" >"$STAGE/$pkg.nfpm.yaml"
		"$NFPM" package --config "$STAGE/$pkg.nfpm.yaml" --packager deb --target "$OUT/" | sed 's/^/deb-build: nfpm: /'
	done
	debs+=("$OUT/tg-agent_"*"_$arch.deb" "$OUT/tg-controlplane_"*"_$arch.deb")
done
ls -l "${debs[@]}"

if [ "$LINTIAN" = 1 ]; then
	need lintian lintian
	log "lintian ${debs[*]}"
	# Errors fail; warnings are printed (and justified in packaging/README.md).
	lintian --fail-on error --info "${debs[@]}" || die "lintian found errors"
fi
