#!/usr/bin/env bash
# `make image` / `make image-lab`: build the product or the lab image with no registry and no
# network inside the build (docs/image.md).
#
#   packaging/image/build.sh product|lab TAG
#
# 1. a Debian base: debootstrap's root file system (packaging/image/debian-base.sh, cached
#    under build/image/) imported with `docker import` unless the engine already has it;
# 2. packaging/wheelhouse/: every wheel the image installs (the dependencies and the build
#    backend), downloaded on this host for the base's Python (3.11) and glibc (2.36);
# 3. `docker build --build-arg BASE=<that base>`: pip installs from the wheelhouse alone.
# The engine is docker's default (DOCKER_HOST to pick another); PYTHON runs pip download.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${IMAGE_CACHE:-build/image}
WHEELHOUSE=packaging/wheelhouse
PYTHON=${PYTHON:-python3}
# bookworm's python3 and glibc: the wheels must fit them (and python:3.11-slim-bookworm)
PYTHON_VERSION=3.11
GLIBC_MINOR=36

die() { echo "image: $*" >&2; exit 1; }

ensure_debootstrap() {
	command -v debootstrap >/dev/null && return
	echo "image: installing Debian package debootstrap" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
}

# The Debian packages a Dockerfile wants in its base: its `ARG DEBIAN_PACKAGES="..."` line.
debian_packages() {
	local packages
	packages=$(sed -n 's/^ARG DEBIAN_PACKAGES="\(.*\)"$/\1/p' "$1")
	[[ -n $packages ]] || die "$1 has no ARG DEBIAN_PACKAGES=\"...\" line"
	echo "$packages"
}

# Imports the cached base tarball unless the engine has it; prints the image's name.
base_image() {
	local tar name
	# shellcheck disable=SC2046  # one argument per package
	tar=$(packaging/image/debian-base.sh "$CACHE" $(debian_packages "$1"))
	name="anycast-announcer-base:$(basename "$tar" .tar)"
	if ! docker image inspect "$name" >/dev/null 2>&1; then
		echo "image: docker import $tar $name" >&2
		docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' "$tar" "$name" >/dev/null
	fi
	echo "$name"
}

requirements() {
	"$PYTHON" -c 'import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(project["build-system"]["requires"] + project["project"]["dependencies"]))'
}

# Binary wheels only, for CPython 3.11 on manylinux up to glibc 2.36 (pure ones fit anyway).
fill_wheelhouse() {
	local arch stamp want
	arch=$(uname -m)
	stamp="$CACHE/wheelhouse.stamp"
	want=$(requirements; echo "cp${PYTHON_VERSION/./} glibc 2.$GLIBC_MINOR $arch")
	if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && compgen -G "$WHEELHOUSE/*.whl" >/dev/null; then
		return
	fi
	local platforms=(--platform "manylinux1_$arch" --platform "manylinux2010_$arch" --platform "manylinux2014_$arch")
	for minor in $(seq 5 "$GLIBC_MINOR"); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
	rm -f "$WHEELHOUSE"/*.whl "$stamp"
	echo "image: pip download into $WHEELHOUSE" >&2
	requirements >"$CACHE/requirements.txt"
	"$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: \
		--python-version "$PYTHON_VERSION" --implementation cp --abi "cp${PYTHON_VERSION/./}" \
		"${platforms[@]}" -d "$WHEELHOUSE" -r "$CACHE/requirements.txt"
	echo "$want" >"$stamp"
}

main() {
	[[ $# -eq 2 ]] || die "usage: $0 product|lab TAG"
	local dockerfile base
	case $1 in
		product) dockerfile=Dockerfile ;;
		lab) dockerfile=labs/Dockerfile ;;
		*) die "unknown image '$1': product or lab" ;;
	esac
	[[ ${SUITE:-bookworm} == bookworm ]] || die "SUITE=$SUITE: the wheels fit bookworm's Python 3.11 and glibc 2.36 only"
	command -v docker >/dev/null || die "docker is not installed (apt-get install docker.io)"
	docker version >/dev/null || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset})"
	ensure_debootstrap
	mkdir -p "$CACHE"
	# One build per checkout at a time: the wheelhouse is refilled in place.
	exec 8>"$CACHE/build.lock"
	flock 8
	base=$(base_image "$dockerfile")
	fill_wheelhouse
	docker build --build-arg "BASE=$base" -t "$2" -f "$dockerfile" .
	echo "image: $2 built on $base, $(docker image inspect -f '{{.Size}}' "$2" | numfmt --to=si)B"
}

main "$@"
