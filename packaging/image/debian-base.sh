#!/usr/bin/env bash
# A Debian root file system as a tar for `docker import`, made here with debootstrap from the
# Debian mirror apt already uses, for machines that cannot pull images from a registry.
#
#   packaging/image/debian-base.sh CACHE_DIR PACKAGE...     prints the tarball's path
#
# The tarball is cached in CACHE_DIR, named after a hash of the suite, the architecture, the
# packages and this script's code: a rerun with the same inputs prints the cached one at once.
# Delete it to pick up newer Debian packages (security updates). Needs root and debootstrap.
# SUITE (bookworm), MIRROR and SECURITY_MIRROR (from apt's sources) can be set.
set -euo pipefail

SUITE=${SUITE:-bookworm}

die() { echo "debian-base: $*" >&2; exit 1; }

# The mirror apt uses for a suite (apt-get indextargets reads the configured sources).
apt_site() {
	local site
	# shellcheck disable=SC2016  # $(SITE) is apt's field, not the shell's
	site=$(apt-get indextargets --format '$(SITE)' "Codename: $1" 'Identifier: Packages' 2>/dev/null | head -n1)
	echo "${site:-$2}"
}

# Mounts made while building (debootstrap's /proc, /sys) live in a private mount namespace:
# they vanish with it, also when a step fails.
in_private_mounts() { unshare --mount --propagation private -- "$@"; }

# The suite's updates and security fixes on top of what debootstrap installed (debootstrap
# reads the suite alone), and no documentation, as in Debian's slim images.
upgrade_and_trim() {
	local root=$1 mirror=$2 security=$3
	cat >"$root/etc/apt/sources.list" <<-SOURCES
		deb $mirror $SUITE main
		deb $mirror $SUITE-updates main
		deb $security $SUITE-security main
	SOURCES
	cat >"$root/etc/dpkg/dpkg.cfg.d/excludes" <<-EXCLUDES
		path-exclude /usr/share/doc/*
		path-include /usr/share/doc/*/copyright
		path-exclude /usr/share/man/*
		path-exclude /usr/share/info/*
		path-exclude /usr/share/locale/*
	EXCLUDES
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"  # start no service
	chmod 755 "$root/usr/sbin/policy-rc.d"
	# shellcheck disable=SC2016  # $1 is the inner shell's
	in_private_mounts sh -ec 'mount -t proc proc "$1/proc"
		chroot "$1" apt-get update -qq
		DEBIAN_FRONTEND=noninteractive chroot "$1" apt-get upgrade -y -qq
		chroot "$1" apt-get clean' sh "$root"
	rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/hostname" "$root/etc/resolv.conf"
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log \
		"$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/tmp/*
	find "$root/usr/share/doc" -type f ! -name copyright -delete
}

build() {
	local out=$1 mirror security packages
	shift
	mirror=${MIRROR:-$(apt_site "$SUITE" http://deb.debian.org/debian)}
	security=${SECURITY_MIRROR:-$(apt_site "$SUITE-security" http://deb.debian.org/debian-security)}
	packages=$(IFS=,; echo "$*")
	ROOTFS=$(mktemp -d "$out.rootfs.XXXXXX")
	trap 'rm -rf "$ROOTFS"' EXIT
	local root=$ROOTFS
	chmod 755 "$root"  # mktemp made it 0700: it becomes the image's /
	echo "debian-base: debootstrap $SUITE from $mirror with $packages (takes a minute or two)" >&2
	in_private_mounts debootstrap --variant=minbase --include="$packages" "$SUITE" "$root" "$mirror" \
		>"$out.debootstrap.log" 2>&1 || die "debootstrap failed, see $out.debootstrap.log"
	upgrade_and_trim "$root" "$mirror" "$security" >>"$out.debootstrap.log" 2>&1 \
		|| die "upgrading $root failed, see $out.debootstrap.log"
	tar --numeric-owner --xattrs -C "$root" --exclude='./dev/*' --exclude='./proc/*' \
		--exclude='./sys/*' -cf "$out.partial" .
	mv "$out.partial" "$out"
}

main() {
	[[ $# -ge 2 ]] || die "usage: $0 CACHE_DIR PACKAGE..."
	local cache=$1 key out
	shift
	[[ $(id -u) = 0 ]] || die "needs root (debootstrap), running as uid $(id -u)"
	command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
	mkdir -p "$cache"
	# The script's code without its comments: editing a comment keeps the cache.
	key=$( { echo "$SUITE $(dpkg --print-architecture)"; printf '%s\n' "$@" | sort
		grep -v '^[[:space:]]*#' "$0"; } | sha256sum | cut -c1-12)
	out="$cache/debian-$SUITE-$key.tar"
	# One build per tarball at a time; a second caller waits and then finds it made.
	exec 9>"$out.lock"
	flock 9
	[[ -s $out ]] || build "$out" "$@"
	echo "$out"
}

main "$@"
