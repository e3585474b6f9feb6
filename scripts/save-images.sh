#!/usr/bin/env bash
# Save the built images as the compressed archives users download:
#
#   scripts/save-images.sh TAG OUTDIR [IMAGE...]
#
# writes OUTDIR/ananke-base-TAG.tar.gz and OUTDIR/ananke-nbgrader-TAG.tar.gz (or only the
# IMAGEs named, e.g. ananke-base)
# (`podman save` of localhost/ananke-base:TAG and localhost/ananke-nbgrader:TAG, each
# complete on its own: the nbgrader archive carries the base layers too) and adds their
# sha256 to OUTDIR/SHA256SUMS. A user loads one with `gzip -dc FILE | podman load` (rootless
# or rootful; Podman 4.3 cannot `podman load -i` a gzip-compressed archive) after `sha256sum -c --ignore-missing SHA256SUMS`. Used by scripts/release.sh
# and by the VM test (tests/vm/), which installs from exactly these files.
set -euo pipefail
die() { echo "save-images: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: scripts/save-images.sh TAG OUTDIR [IMAGE...]"
TAG=$1
OUT=$2
shift 2
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(ananke-base ananke-nbgrader)
for image in "${IMAGES[@]}"; do
    case $image in
        ananke-base|ananke-nbgrader) ;;
        *) die "unknown image $image: ananke-base or ananke-nbgrader" ;;
    esac
done
command -v podman >/dev/null || die "podman is missing (apt-get install podman)"
mkdir -p "$OUT"
for image in "${IMAGES[@]}"; do
    ref="localhost/$image:$TAG"
    podman image exists "$ref" || die "$ref is missing: build it (scripts/build-images.sh --tag $TAG)"
    file="$image-$TAG.tar.gz"
    echo "save-images: $ref -> $OUT/$file"
    # docker-archive: what `podman load` and `docker load` both read. gzip -6: -9 takes
    # twice as long for about 1% less.
    podman save --format docker-archive -o /dev/stdout "$ref" | gzip -6 > "$OUT/$file.part"
    mv -f "$OUT/$file.part" "$OUT/$file"
    ( cd "$OUT" && { grep -v "  $file\$" SHA256SUMS 2>/dev/null || true; sha256sum "$file"; } \
        > SHA256SUMS.new && mv -f SHA256SUMS.new SHA256SUMS )
done
( cd "$OUT" && sha256sum -c --quiet SHA256SUMS )
echo "save-images: $(cd "$OUT" && cat SHA256SUMS)"
