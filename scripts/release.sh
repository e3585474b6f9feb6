#!/usr/bin/env bash
# Make a release: scripts/release.sh VERSION
#
#   1. set VERSION in the one version source (scripts/release_version.py: ananke_hub's
#      __version__, and pyproject.toml while it still has a static version) and turn
#      CHANGELOG.md's "## Next" into "## VERSION (date)" under a new empty "## Next"
#   2. build the wheel into dist/VERSION/
#   3. build the images localhost/ananke-base:VERSION and localhost/ananke-nbgrader:VERSION
#      (scripts/build-images.sh; needs root)
#   4. save them as dist/VERSION/ananke-base-VERSION.tar.gz and
#      ananke-nbgrader-VERSION.tar.gz with dist/VERSION/SHA256SUMS (scripts/save-images.sh)
#
# It commits and tags nothing and publishes nothing: it prints those commands at the
# end (docs/developer/release.md). Run it on a clean checkout of main.
#
# Options:
#   --allow-dirty   do not refuse uncommitted changes (for trying the procedure)
#   --no-images     stop after the wheel (no root needed)
#   --date DATE     the changelog's date (default today, YYYY-MM-DD)
#   Other options after `--` go to scripts/build-images.sh (e.g. -- --kernels venv).
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "release: $*" >&2; exit 2; }

VERSION=""
DIRTY=0
IMAGES=1
DATE=$(date -u +%F)
BUILD_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --allow-dirty) DIRTY=1; shift ;;
        --no-images) IMAGES=0; shift ;;
        --date) DATE=$2; shift 2 ;;
        --) shift; BUILD_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$VERSION" ] || die "one VERSION only"; VERSION=$1; shift ;;
    esac
done
[ -n "$VERSION" ] || die "usage: scripts/release.sh VERSION (e.g. 0.2.0); --help for more"
PYTHON=python3
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
if [ "$DIRTY" = 0 ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    die "the working tree has uncommitted changes: commit or stash them (or --allow-dirty)"
fi
if [ "$IMAGES" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "the images are built with rootful podman: run as root, or --no-images"
fi

OUT=dist/$VERSION
"$PYTHON" scripts/release_version.py "$VERSION" --date "$DATE"
rm -rf "$OUT"
mkdir -p "$OUT"
echo "release: building the wheel into $OUT"
# SOURCE_DATE_EPOCH: the same sources give the same wheel (reproducible).
SOURCE_DATE_EPOCH=315532800 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$PYTHON" -m pip wheel --quiet --no-deps -w "$OUT" .
( cd "$OUT" && sha256sum ananke-*.whl > SHA256SUMS )
if [ "$IMAGES" = 1 ]; then
    scripts/build-images.sh --tag "$VERSION" ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"}
    scripts/save-images.sh "$VERSION" "$OUT"
fi
echo
echo "release: $VERSION is in $OUT:"
ls -l "$OUT"
cat <<NEXT

Next (docs/developer/release.md):
  git commit -am "Release $VERSION" && git tag -a v$VERSION -m "Ananke $VERSION"
  publish $OUT/* (wheel, image archives, SHA256SUMS) and the docs
NEXT
