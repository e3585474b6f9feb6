"""Run a command as "root" of a new user namespace whose id map the caller writes.

    python userns_exec.py COMMAND [ARG...]

Used by vm.py's :func:`~vm.load_into_rootless_store` to run ``podman load`` on the test
host with a container admin's id mapping (0 -> the admin's uid, 1..65536 -> its
subordinate range), so that the store it writes is the one the admin's rootless Podman
would have written. Protocol with the caller (which must be root in the initial
namespace: only it may write a map of several ranges without newuidmap):

1. this process unshares a user and a mount namespace and prints ``ready``;
2. the caller writes ``/proc/<pid>/uid_map`` and ``gid_map`` and sends a line;
3. this process becomes uid/gid 0 in the namespace and replaces itself by COMMAND.

The id change must happen before the new program starts: a program started while the
process is still unmapped would get no capabilities in the namespace.
"""

import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: userns_exec.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        print(f"userns_exec: unshare failed: {os.strerror(err)}", file=sys.stderr)
        return 1
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if not sys.stdin.readline():
        print("userns_exec: the caller went away before writing the id map", file=sys.stderr)
        return 1
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)
    os.execvp(argv[0], argv)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
