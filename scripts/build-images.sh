#!/usr/bin/env bash
# Build Ananke's Podman images from this working tree:
#
#   localhost/ananke-debian:bookworm   Debian with systemd and Python, made here with
#                                      mmdebstrap (no image registry needed); reused if present
#   localhost/ananke-base:<tag>        systemd as PID 1, JupyterHub + Kore + our spawner
#   localhost/ananke-nbgrader:<tag>    ananke-base plus the teaching kernels
#
# Run as root (rootful Podman; mmdebstrap). Idempotent: an existing Debian image is
# reused and Podman's layer cache skips every unchanged step (the wheel is built
# reproducibly, so an unchanged tree rebuilds nothing). See docs/developer/containers.md.
#
# Options:
#   --tag TAG             tag of ananke-base and ananke-nbgrader (default: latest)
#   --base-image IMAGE    build ananke-base (and the kernels stage of ananke-nbgrader)
#                         FROM this image instead of the local Debian, e.g.
#                         docker.io/library/debian:bookworm (missing packages are then
#                         installed with apt during the build)
#   --debian-image NAME   name of the local Debian image (default localhost/ananke-debian:bookworm)
#   --rootfs DIR          import this Debian root directory as the local Debian image
#                         instead of running mmdebstrap (the tests pass their cached one)
#   --refresh-debian      make the local Debian image again even if it exists
#   --ca FILE             a root CA certificate (PEM, *.crt) to trust in the images, also
#                         while pip runs; repeatable. Default: every *.crt in
#                         /usr/local/share/ca-certificates (the host's own extra CAs)
#   --no-host-ca          do not add the host's CAs (only those given with --ca)
#   --kernels MODE        auto | venv | conda (default auto, see the nbgrader Containerfile)
#   --timezone ZONE       the images' time zone (default Etc/UTC)
#   --only base|nbgrader  build one image only (nbgrader needs an existing ananke-base:<tag>)
#   --no-cache            rebuild every layer
#
# Environment: MIRROR (default http://deb.debian.org/debian) and SECURITY_MIRROR
# (default http://deb.debian.org/debian-security) for mmdebstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TAG=latest
BASE_IMAGE=""
DEBIAN_IMAGE=localhost/ananke-debian:bookworm
ROOTFS=""
REFRESH_DEBIAN=0
CA_FILES=()
HOST_CA=1
KERNELS=auto
TIMEZONE=Etc/UTC
ONLY=all
CACHE_ARGS=()
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Debian packages of the local base: systemd as PID 1, libnss-systemd (dynamic users'
# names resolve), Python with venv, the CA store, time zones and bubblewrap (the
# autograding sandbox). Keep in step with images/ananke-base/Containerfile.
PACKAGES=systemd,systemd-sysv,dbus,libnss-systemd,python3,python3-venv,ca-certificates,tzdata,bubblewrap
# Podman flags every build step needs on hosts with hybrid cgroups and without
# CAP_SYS_RESOURCE (docs/developer/containers.md): runc, explicit rlimits.
PODMAN_BUILD=(podman build --runtime runc --ulimit nofile=16384:16384 --ulimit nproc=16384:16384)

die() { echo "build-images: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG=$2; shift 2 ;;
        --base-image) BASE_IMAGE=$2; shift 2 ;;
        --debian-image) DEBIAN_IMAGE=$2; shift 2 ;;
        --rootfs) ROOTFS=$2; shift 2 ;;
        --refresh-debian) REFRESH_DEBIAN=1; shift ;;
        --ca) CA_FILES+=("$2"); shift 2 ;;
        --no-host-ca) HOST_CA=0; shift ;;
        --kernels) KERNELS=$2; shift 2 ;;
        --timezone) TIMEZONE=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --no-cache) CACHE_ARGS=(--no-cache); shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
case "$KERNELS" in auto|venv|conda) ;; *) die "--kernels must be auto, venv or conda" ;; esac
case "$ONLY" in all|base|nbgrader) ;; *) die "--only must be base or nbgrader" ;; esac
[ "$(id -u)" = 0 ] || die "run as root: the images are built with rootful Podman"
command -v podman >/dev/null || die "podman is missing (apt-get install podman runc)"
command -v runc >/dev/null || die "runc is missing (apt-get install runc)"

if [ "$HOST_CA" = 1 ] && [ -d /usr/local/share/ca-certificates ]; then
    while IFS= read -r -d '' crt; do CA_FILES+=("$crt"); done \
        < <(find /usr/local/share/ca-certificates -name '*.crt' -type f -print0 | sort -z)
fi
for crt in ${CA_FILES[@]+"${CA_FILES[@]}"}; do
    [ -f "$crt" ] || die "CA file $crt does not exist"
    grep -q 'BEGIN CERTIFICATE' "$crt" || die "$crt is not a PEM certificate"
done

PYTHON=python3
[ -x "$ROOT/.venv/bin/python" ] && PYTHON="$ROOT/.venv/bin/python"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/ananke-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SECONDS=0
step() { echo "== [$(printf '%4d' "$SECONDS") s] $*"; }

# -- the local Debian image ----------------------------------------------------------------
make_debian_image() {
    local tarball=$WORK/debian.tar
    if [ -n "$ROOTFS" ]; then
        [ -x "$ROOTFS/lib/systemd/systemd" ] || die "$ROOTFS has no systemd (lib/systemd/systemd)"
        step "importing $ROOTFS as $DEBIAN_IMAGE"
        tar -C "$ROOTFS" -cf "$tarball" .
    else
        command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
        step "making $DEBIAN_IMAGE with mmdebstrap (about a minute)"
        # Documentation and locales are not needed in a server image.
        mmdebstrap --variant=minbase --include="$PACKAGES" \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --aptopt='Acquire::Retries "3"' \
            bookworm "$tarball" \
            "deb $MIRROR bookworm main" \
            "deb $MIRROR bookworm-updates main" \
            "deb $SECURITY_MIRROR bookworm-security main"
    fi
    podman import --change 'CMD ["/sbin/init"]' "$tarball" "$DEBIAN_IMAGE" >/dev/null
    rm -f "$tarball"
}

# ananke-base is built FROM it, and the kernels of ananke-nbgrader in a stage of their own.
if [ -z "$BASE_IMAGE" ]; then
    if [ "$REFRESH_DEBIAN" = 1 ] || ! podman image exists "$DEBIAN_IMAGE"; then
        make_debian_image
    else
        step "reusing $DEBIAN_IMAGE (--refresh-debian makes it again)"
    fi
    BASE_IMAGE=$DEBIAN_IMAGE
fi

# Image ids before this build: an image that a new build replaced is removed at the end
# (its tag moved on), so repeated builds do not pile up untagged images.
image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
OLD_IDS=("$(image_id "localhost/ananke-nbgrader:$TAG")" "$(image_id "localhost/ananke-base:$TAG")")

# The root CAs into a build context's ca/ directory.
copy_cas() {
    local dir=$1 i=0
    mkdir -p "$dir"
    for crt in ${CA_FILES[@]+"${CA_FILES[@]}"}; do
        i=$((i + 1))
        cp "$crt" "$dir/$(printf '%02d' "$i")-$(basename "$crt")"
    done
    # COPY needs the directory to have an entry; update-ca-certificates reads *.crt only.
    echo "Root CAs added at build time (*.crt)." > "$dir/README"
}

# -- ananke-base ---------------------------------------------------------------------------
if [ "$ONLY" != nbgrader ]; then
    step "building the wheel"
    CTX=$WORK/base
    mkdir -p "$CTX/dist" "$CTX/ca" "$WORK/src"
    # A copy of the sources: the tree may hold a stale build/ directory that setuptools
    # would pack. SOURCE_DATE_EPOCH makes the wheel byte-identical for the same sources,
    # so Podman's cache keeps the layers that install it.
    tar -C "$ROOT" -c --exclude=__pycache__ --exclude='*.egg-info' --exclude=node_modules \
        pyproject.toml README.md ananke_hub kore $( [ -f LICENSE ] && echo LICENSE ) \
        | tar -C "$WORK/src" -x
    SOURCE_DATE_EPOCH=315532800 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$PYTHON" -m pip wheel --quiet --no-deps -w "$CTX/dist" "$WORK/src"
    WHEEL=$(find "$CTX/dist" -name 'ananke-*.whl' | head -n 1)
    [ -n "$WHEEL" ] || die "pip wheel made no ananke wheel"
    # The wheel's dependencies (Requires-Dist without extras), for their own layer.
    "$PYTHON" - "$WHEEL" > "$CTX/requirements.txt" <<'EOF'
import sys, zipfile
from email.parser import HeaderParser
with zipfile.ZipFile(sys.argv[1]) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    meta = HeaderParser().parsestr(zf.read(name).decode())
reqs = sorted(r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r)
print("\n".join(reqs))
EOF
    copy_cas "$CTX/ca"
    cp -r images/ananke-base/Containerfile images/ananke-base/assets "$CTX/"
    step "building localhost/ananke-base:$TAG FROM $BASE_IMAGE (${#CA_FILES[@]} extra CA(s))"
    "${PODMAN_BUILD[@]}" ${CACHE_ARGS[@]+"${CACHE_ARGS[@]}"} \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TIMEZONE="$TIMEZONE" \
        -t "localhost/ananke-base:$TAG" -f "$CTX/Containerfile" "$CTX"
fi

# -- ananke-nbgrader -----------------------------------------------------------------------
if [ "$ONLY" != base ]; then
    podman image exists "localhost/ananke-base:$TAG" \
        || die "localhost/ananke-base:$TAG is missing: build it first (without --only)"
    CTX=$WORK/nbgrader
    mkdir -p "$CTX"
    copy_cas "$CTX/ca"
    cp -r images/ananke-nbgrader/Containerfile images/ananke-nbgrader/assets "$CTX/"
    NBGRADER_ARGS=(--build-arg SYSTEM_IMAGE="$BASE_IMAGE" --build-arg KERNELS="$KERNELS"
                   --build-arg BASE_IMAGE="localhost/ananke-base:$TAG" -f "$CTX/Containerfile")
    step "building the kernels (localhost/ananke-kernels:$TAG, kernels: $KERNELS)"
    # The kernels stage gets a tag of its own, so that `podman image prune` keeps it: it
    # is the slow part, and does not change with Ananke's code.
    "${PODMAN_BUILD[@]}" ${CACHE_ARGS[@]+"${CACHE_ARGS[@]}"} "${NBGRADER_ARGS[@]}" \
        --target kernels -t "localhost/ananke-kernels:$TAG" "$CTX"
    step "building localhost/ananke-nbgrader:$TAG"
    "${PODMAN_BUILD[@]}" "${NBGRADER_ARGS[@]}" -t "localhost/ananke-nbgrader:$TAG" "$CTX"
fi

for old in "${OLD_IDS[@]}"; do
    if [ -n "$old" ] && [ "$(podman image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
        # Untagged now; still in use (a container runs it) means podman keeps it.
        podman rmi "$old" >/dev/null 2>&1 && step "removed the replaced image ${old:0:12}" || true
    fi
done
step "done"
