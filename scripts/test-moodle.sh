#!/usr/bin/env bash
# A Moodle for testing Ananke on this machine (images/test-moodle). NEVER expose it to
# the internet: fixed passwords, Moodle's HTTP security lists opened, no TLS.
#
#   scripts/test-moodle.sh build MOODLE-TARBALL [SYSTEM-IMAGE]
#                          build localhost/test-moodle from the Moodle source you
#                          downloaded (.tgz), on a Debian bookworm image (default:
#                          localhost/ananke-debian:bookworm from scripts/build-images.sh
#                          if present, else docker.io/library/debian:bookworm)
#   scripts/test-moodle.sh run [options]          create and start the container
#       --moodle-url URL   the address of Moodle for browsers and the hub
#                          (default http://127.0.0.1:9090)
#       --hub-url URL      register this hub at the first start (e.g. http://127.0.0.1:8000);
#                          the 30_lms.py values are printed and kept in the data volume
#       --publish ADDR:PORT  run on Podman's own network and publish Moodle's port 80
#                          there (for a Moodle on another address than the hub, e.g.
#                          the extra loopback address of docs/developer/testing.md);
#                          default: the host's network, Apache listening on the
#                          address and port of --moodle-url, so that 127.0.0.1 is the
#                          same for the browser, the hub and Moodle
#   scripts/test-moodle.sh logs      the first start's progress (install, registration)
#   scripts/test-moodle.sh shell     a root shell in the container
#   scripts/test-moodle.sh remove    stop and remove the container (the data stays in
#                                    the volumes test-moodle-db and test-moodle-data)
#   scripts/test-moodle.sh purge     remove the container and its volumes
#
# Environment: PODMAN_RUNTIME (e.g. runc) picks Podman's OCI runtime for `run`.
# Works with rootful and rootless Podman. See docs/developer/testing.md ("A real Moodle").
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=localhost/test-moodle:latest
NAME=test-moodle
die() { echo "test-moodle: $*" >&2; exit 1; }
command -v podman >/dev/null || die "podman is missing (apt-get install podman runc)"

build() {
    local tarball=${1:-}
    [ -n "$tarball" ] || die "build needs the Moodle source tarball: scripts/test-moodle.sh build moodle-latest-501.tgz (download it from https://download.moodle.org)"
    [ -f "$tarball" ] || die "$tarball does not exist"
    # moodle/public/version.php from Moodle 5.1 on, moodle/version.php before.
    local listing
    listing=$(tar -tzf "$tarball" 2>/dev/null) || die "$tarball is not a gzip'ed tar archive"
    grep -qx -e 'moodle/version.php' -e 'moodle/public/version.php' <<<"$listing" \
        || die "$tarball is not a Moodle source tarball (no moodle/version.php or moodle/public/version.php in it)"
    local system=${2:-}
    if [ -z "$system" ]; then
        system=docker.io/library/debian:bookworm
        # The Debian image scripts/build-images.sh makes, if there is one: no registry needed.
        podman image exists localhost/ananke-debian:bookworm && system=localhost/ananke-debian:bookworm
    fi
    local context
    context=$(mktemp -d "${TMPDIR:-/var/tmp}/test-moodle.XXXXXX")
    trap 'rm -rf "$context"' RETURN
    cp -r images/test-moodle/. "$context/"
    cp "$tarball" "$context/moodle.tgz"
    podman build --build-arg SYSTEM_IMAGE="$system" -t "$IMAGE" -f "$context/Containerfile" "$context"
}

run() {
    local moodle_url=http://127.0.0.1:9090 hub_url="" publish=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --moodle-url) moodle_url=$2; shift 2 ;;
            --hub-url) hub_url=$2; shift 2 ;;
            --publish) publish=$2; shift 2 ;;
            *) die "unknown option $1 (see the top of this script)" ;;
        esac
    done
    [[ $moodle_url =~ ^http://([^/:]+)(:([0-9]+))?$ ]] \
        || die "--moodle-url must be http://HOST[:PORT] without a path, not $moodle_url"
    local host=${BASH_REMATCH[1]} port=${BASH_REMATCH[3]:-80}
    if [ -n "$hub_url" ]; then
        [[ $hub_url =~ ^https?://[^/]+$ ]] || die "--hub-url must be http(s)://HOST[:PORT] without a path"
    fi
    local network=(--network host) listen="$host:$port"
    if [ -n "$publish" ]; then
        network=(-p "$publish:80")
        listen=80
    fi
    podman image exists "$IMAGE" || die "no $IMAGE yet: run scripts/test-moodle.sh build MOODLE-TARBALL first"
    podman container exists "$NAME" && die "a container $NAME exists: scripts/test-moodle.sh remove first (the data stays)"
    # The first-start unit reads its settings from this file (systemd as PID 1 does not
    # pass podman's -e variables to services); kept for the next `run`.
    local conf=${XDG_CONFIG_HOME:-$HOME/.config}/test-moodle
    mkdir -p "$conf"
    printf 'MOODLE_URL=%s\nANANKE_HUB_URL=%s\nMOODLE_LISTEN=%s\n' \
        "$moodle_url" "$hub_url" "$listen" >"$conf/test-moodle.env"
    local podman=(podman)
    [ -n "${PODMAN_RUNTIME:-}" ] && podman+=(--runtime "$PODMAN_RUNTIME")
    # Explicit rlimits: Apache and PostgreSQL under systemd want more than some hosts'
    # defaults for containers.
    "${podman[@]}" run -d --name "$NAME" --systemd=always --cap-add SYS_ADMIN \
        --ulimit nofile=16384:16384 --ulimit nproc=16384:16384 \
        "${network[@]}" \
        -v "$conf/test-moodle.env:/etc/test-moodle.env:ro" \
        -v test-moodle-db:/var/lib/postgresql -v test-moodle-data:/var/lib/moodledata \
        "$IMAGE" >/dev/null
    echo "test-moodle: starting at $moodle_url; the first start installs Moodle (minutes)."
    echo "Follow it with: scripts/test-moodle.sh logs"
}

case "${1:-}" in
    build) shift; build "$@" ;;
    run) shift; run "$@" ;;
    logs) podman exec "$NAME" journalctl -u test-moodle-init.service -f ;;
    shell) podman exec -it "$NAME" /bin/bash ;;
    remove) podman rm -f "$NAME" >/dev/null && echo "test-moodle: removed (volumes kept)" ;;
    purge) podman rm -f "$NAME" >/dev/null 2>&1 || true
           podman volume rm -f test-moodle-db test-moodle-data >/dev/null
           echo "test-moodle: container and volumes removed" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
