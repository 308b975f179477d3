#!/usr/bin/env bash
# Install test of the Debian packages (`make deb-test`; packaging/README.md):
# builds tg-agent and tg-controlplane twice for this machine's architecture
# (an old and a newer VERSION), then, in a fresh Debian 12 root
# (debootstrap --variant=minbase, entered with chroot; no systemd runs):
#
#   1. install the old build: files, users and groups, conffiles and their
#      modes, enabled unit symlinks, the binaries run, the shipped control
#      plane config is refused only for what the operator must decide;
#   2. write a marker into each state directory and edit each conffile;
#      upgrade to the newer build: the markers and the edits survive;
#   3. remove: configuration, state and users stay, the units are masked;
#   4. purge: state, configuration, users, groups and unit state are gone.
#
# Run as root (debootstrap, chroot). The mirror comes from DEBOOTSTRAP_MIRROR
# or else from this host's apt sources; the bootstrapped root is cached as a
# tarball in .cache/deb-test/ (ignored), so reruns only unpack it.
#
#   sudo bash hack/deb-test.sh
#   KEEP_ROOT=1 sudo bash hack/deb-test.sh     # leave the root for a look
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.cache/tools/bin:/usr/local/go/bin:$PATH"

SUITE=bookworm
# What a real host has besides minbase: adduser (a dependency), systemd
# (its directories and deb-systemd-helper), tpm-udev (the tss group).
INCLUDE=adduser,systemd,tpm-udev
ARCH="$(go env GOARCH)"
OLD_VERSION=0.0.1
NEW_VERSION=0.0.2
CACHE="$ROOT/.cache/deb-test"
TARBALL="$CACHE/$SUITE-minbase-$ARCH-$(printf %s "$INCLUDE" | sha256sum | cut -c1-8).tar.gz"

start=$SECONDS
phase_start=$SECONDS
log() { printf 'deb-test: %s\n' "$*"; }
die() { printf 'deb-test: FAIL: %s\n' "$*" >&2; exit 1; }
phase() { log "--- $1 (previous phase $((SECONDS - phase_start))s)"; phase_start=$SECONDS; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot need it): sudo bash hack/deb-test.sh"
for t in debootstrap chroot; do
	command -v "$t" >/dev/null || die "$t not found; run: sudo bash hack/install-deps.sh"
done

# mirror prints the Debian mirror to bootstrap from: $DEBOOTSTRAP_MIRROR,
# else the first "deb" source of this host that serves $SUITE (deb822
# .sources files, then one-line sources.list), else the first Debian
# source that is not the security archive. Never a name written here.
mirror() {
	if [ -n "${DEBOOTSTRAP_MIRROR:-}" ]; then
		echo "$DEBOOTSTRAP_MIRROR"
		return
	fi
	local files=() f
	for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && files+=("$f"); done
	if ((${#files[@]})); then
		awk -v suite="$SUITE" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && uris != "") {
					split(uris, u, " ")
					if ((" " suites " ") ~ (" " suite " ")) { if (exact == "") exact = u[1] }
					else if (suites !~ /security/ && uris !~ /security/) { if (other == "") other = u[1] }
				}
				types = uris = suites = ""
			}
			/^[ \t]*$/ { flush(); next }
			/^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0 }
			/^URIs:/   { sub(/^URIs:[ \t]*/, ""); uris = $0 }
			/^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
			END { flush(); if (exact != "") print exact; else if (other != "") print other }
		' "${files[@]}" | head -1 && return
	fi
	if [ -f /etc/apt/sources.list ]; then
		# deb [options] URI suite components…
		awk -v suite="$SUITE" '
			$1 == "deb" {
				i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i+1) == suite && exact == "") exact = $i
				else if ($i !~ /security/ && other == "") other = $i
			}
			END { if (exact != "") print exact; else if (other != "") print other }
		' /etc/apt/sources.list
	fi
}

# --- packages: an old and a newer build -------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tg-deb-test.XXXXXX")"
R="$WORK/root"
cleanup() {
	if [ "${KEEP_ROOT:-0}" = 1 ]; then
		log "kept the root in $R"
		return
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

phase "build $OLD_VERSION and $NEW_VERSION ($ARCH)"
for v in "$OLD_VERSION" "$NEW_VERSION"; do
	VERSION="$v" DEB_ARCHES="$ARCH" OUT="$WORK/$v" LINTIAN=0 bash hack/deb-build.sh | grep -E 'created package|version:' || die "deb-build.sh $v failed"
done

# --- a fresh Debian root -------------------------------------------------------
phase "debootstrap root"
if [ ! -f "$TARBALL" ]; then
	m="$(mirror)"
	[ -n "$m" ] || die "no Debian mirror: set DEBOOTSTRAP_MIRROR or add a deb source to /etc/apt/sources.list(.d)"
	log "bootstrapping $SUITE (minbase + $INCLUDE) from $m into the cache"
	mkdir -p "$CACHE"
	boot="$WORK/boot"
	debootstrap --variant=minbase --include="$INCLUDE" --arch="$ARCH" "$SUITE" "$boot" "$m" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	rm -rf "$boot/var/cache/apt/archives/"*.deb
	tar -C "$boot" -czf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
	rm -rf "$boot"
fi
mkdir -p "$R"
tar -C "$R" -xzf "$TARBALL"
# As in any chroot: no service may start (deb-systemd-invoke asks this).
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 0755 "$R/usr/sbin/policy-rc.d"
[ ! -d "$R/run/systemd/system" ] || die "the root claims a running systemd"

in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
install_debs() { # DIR
	local debs=() d
	rm -rf "$R/tmp/debs"
	mkdir -p "$R/tmp/debs"
	for d in "$1"/tg-agent_*.deb "$1"/tg-controlplane_*.deb; do
		cp "$d" "$R/tmp/debs/"
		debs+=("/tmp/debs/${d##*/}")
	done
	in_root apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold \
		"${debs[@]}" >"$WORK/apt.log" 2>&1 ||
		{ tail -30 "$WORK/apt.log" >&2; die "apt-get install $1 failed (log above)"; }
}
check() { # DESCRIPTION COMMAND...
	local what="$1"
	shift
	"$@" >/dev/null || die "$what"
}
not() { ! "$@"; }
exists() { [ -e "$R$1" ] || [ -L "$R$1" ]; }
absent() { ! exists "$1"; }
# Names as the root's own user database has them.
mode_owner() { in_root stat -c '%a %U:%G' "$1"; }
user_field() { in_root getent passwd "$1" | cut -d: -f"$2"; }
in_group() { in_root id -nG "$1" | tr ' ' '\n' | grep -qx "$2"; }
# shellcheck disable=SC2016 # dpkg-query expands ${Version}
versions() { in_root dpkg-query -W -f '${Version}' "$1"; }
known() { in_root dpkg-query -W "$1" >/dev/null 2>&1; }

UNITS=(tg-agent tg-controlplane)
FILES=(
	/usr/bin/tg-agent /usr/bin/tg-controlplane /usr/bin/tgctl
	/lib/systemd/system/tg-agent.service /lib/systemd/system/tg-controlplane.service
	/usr/lib/tensorguard/libonnxruntime.so.1 /usr/share/tg-agent/jetson-gpu.conf
	/usr/share/man/man1/tg-agent.1.gz /usr/share/man/man1/tg-controlplane.1.gz /usr/share/man/man1/tgctl.1.gz
	/usr/share/bash-completion/completions/tg-agent /usr/share/bash-completion/completions/tgctl
	/usr/share/zsh/vendor-completions/_tg-controlplane /usr/share/fish/vendor_completions.d/tgctl.fish
	/usr/share/doc/tg-agent/copyright /usr/share/doc/tg-controlplane/changelog.Debian.gz
)

# --- 1. install -------------------------------------------------------------
phase "install $OLD_VERSION"
install_debs "$WORK/$OLD_VERSION"
for f in "${FILES[@]}"; do check "$f missing after install" exists "$f"; done
for b in tg-agent tg-controlplane tgctl; do
	out="$(in_root "$b" version)"
	check "$b version printed \"$out\"" [ "${out#"$b $OLD_VERSION"}" != "$out" ]
done
for u in tg-agent tg-controlplane; do
	check "user $u missing" in_root getent passwd "$u"
	uid="$(user_field "$u" 3)"
	check "$u has uid $uid, not a system uid" [ "$uid" -lt 1000 ]
	check "$u has shell $(user_field "$u" 7)" [ "$(user_field "$u" 7)" = /usr/sbin/nologin ]
	check "$u's primary group is not $u" [ "$(in_root id -gn "$u")" = "$u" ]
	check "$u.service not enabled (no multi-user.target.wants symlink)" \
		[ "$(readlink "$R/etc/systemd/system/multi-user.target.wants/$u.service")" = "/lib/systemd/system/$u.service" ]
done
check "tg-agent is not in tss" in_group tg-agent tss
check "tg-agent is not in tg-infer" in_group tg-agent tg-infer
check "tg-agent is in video off a Jetson" not in_group tg-agent video
check "agent.yaml is not a conffile" in_root sh -c "dpkg-query -W -f '\${Conffiles}' tg-agent | grep -q ' /etc/tensorguard/agent.yaml '"
for f in controlplane.yaml controlplane.env; do
	check "$f is not a conffile" in_root sh -c "dpkg-query -W -f '\${Conffiles}' tg-controlplane | grep -q ' /etc/tensorguard/$f '"
done
check "agent.yaml is $(mode_owner /etc/tensorguard/agent.yaml)" [ "$(mode_owner /etc/tensorguard/agent.yaml)" = "640 root:tg-agent" ]
check "controlplane.yaml is $(mode_owner /etc/tensorguard/controlplane.yaml)" \
	[ "$(mode_owner /etc/tensorguard/controlplane.yaml)" = "640 root:tg-controlplane" ]
check "controlplane.env is $(mode_owner /etc/tensorguard/controlplane.env)" \
	[ "$(mode_owner /etc/tensorguard/controlplane.env)" = "600 root:root" ]
# The shipped control-plane config, with secrets, is refused (exit 2) only
# for the EK roots the operator must choose.
set +e
out="$(in_root TG_KEY_MASTER="$(printf 'ab%.0s' $(seq 32))" TG_SECRET_KEY="$(printf 's%.0s' $(seq 32))" \
	tg-controlplane serve --config /etc/tensorguard/controlplane.yaml 2>&1)"
rc=$?
set -e
check "tg-controlplane serve with the shipped config: exit $rc, \"$out\"" [ "$rc" = 2 ]
check "tg-controlplane serve with the shipped config: \"$out\" does not name ek_roots" grep -q 'enrollment.ek_roots' <<<"$out"
log "installed: files, users, groups, conffiles, enabled units ok; shipped control-plane config refused for: ${out#tg-controlplane: }"

# --- 2. upgrade keeps state and local configuration --------------------------
phase "upgrade to $NEW_VERSION"
for u in agent controlplane; do
	# As systemd's StateDirectory= would, with the root's user database.
	in_root install -d -m 0700 -o "tg-$u" -g "tg-$u" "/var/lib/tensorguard/$u"
	echo "state of $u" >"$R/var/lib/tensorguard/$u/marker"
	in_root chown "tg-$u:tg-$u" "/var/lib/tensorguard/$u/marker"
done
echo "# local edit" >>"$R/etc/tensorguard/agent.yaml"
echo "# local edit" >>"$R/etc/tensorguard/controlplane.yaml"
echo "TG_SECRET_KEY_LOCAL=1" >>"$R/etc/tensorguard/controlplane.env"
install_debs "$WORK/$NEW_VERSION"
for p in tg-agent tg-controlplane; do
	check "$p is at $(versions "$p") after the upgrade" [ "$(versions "$p")" = "$NEW_VERSION-1" ]
done
out="$(in_root tg-agent version)"
check "tg-agent version after the upgrade: $out" [ "${out#"tg-agent $NEW_VERSION"}" != "$out" ]
for u in agent controlplane; do
	check "state of tg-$u lost in the upgrade" grep -qx "state of $u" "$R/var/lib/tensorguard/$u/marker"
	check "ownership of tg-$u's state changed" [ "$(in_root stat -c %U "/var/lib/tensorguard/$u/marker")" = "tg-$u" ]
done
check "agent.yaml lost its local edit" grep -qx '# local edit' "$R/etc/tensorguard/agent.yaml"
check "controlplane.yaml lost its local edit" grep -qx '# local edit' "$R/etc/tensorguard/controlplane.yaml"
check "controlplane.env lost its local edit" grep -qx 'TG_SECRET_KEY_LOCAL=1' "$R/etc/tensorguard/controlplane.env"
check "controlplane.env is $(mode_owner /etc/tensorguard/controlplane.env) after the upgrade" \
	[ "$(mode_owner /etc/tensorguard/controlplane.env)" = "600 root:root" ]
for u in "${UNITS[@]}"; do
	check "$u.service no longer enabled after the upgrade" [ -L "$R/etc/systemd/system/multi-user.target.wants/$u.service" ]
done
log "upgraded: versions, state markers, local conffile edits, enabled units ok"

# --- 3. remove keeps configuration, state and users --------------------------
phase "remove"
in_root apt-get remove -y -q tg-agent tg-controlplane >"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log" >&2; die "apt-get remove failed"; }
check "/usr/bin/tg-agent still there after remove" absent /usr/bin/tg-agent
for u in agent controlplane; do
	check "tg-$u's state removed by remove" exists "/var/lib/tensorguard/$u/marker"
	check "user tg-$u removed by remove" in_root getent passwd "tg-$u"
done
check "agent.yaml removed by remove" exists /etc/tensorguard/agent.yaml
for u in "${UNITS[@]}"; do
	check "$u.service not masked after remove" [ "$(readlink "$R/etc/systemd/system/$u.service")" = /dev/null ]
done
log "removed: configuration, state and users kept, units masked"

# --- 4. purge removes what the packages made --------------------------------
phase "purge"
in_root apt-get purge -y -q tg-agent tg-controlplane >"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log" >&2; die "apt-get purge failed"; }
for p in /var/lib/tensorguard /var/cache/tensorguard /etc/tensorguard /usr/lib/tensorguard /usr/share/tg-agent; do
	check "$p left after purge" absent "$p"
done
for u in "${UNITS[@]}"; do
	check "user $u left after purge" not in_root getent passwd "$u"
	check "group $u left after purge" not in_root getent group "$u"
	for l in "/etc/systemd/system/$u.service" "/etc/systemd/system/multi-user.target.wants/$u.service" \
		"/var/lib/systemd/deb-systemd-helper-enabled/$u.service.dsh-also" "/var/lib/systemd/deb-systemd-helper-masked/$u.service"; do
		check "$l left after purge" absent "$l"
	done
	check "dpkg still knows $u" not known "$u"
done
check "group tg-infer left after purge" not in_root getent group tg-infer
check "group tss removed by purge (not ours)" in_root getent group tss
log "purged: state, configuration, users, groups and unit state gone"

phase "done"
log "PASS in $((SECONDS - start))s"
