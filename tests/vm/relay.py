"""Relay one connection between stdin/stdout and 127.0.0.1:PORT.

    python relay.py PORT

QEMU's user network runs it once per guest connection to a ``guestfwd`` address
(``guestfwd=tcp:ADDR:PORT-cmd:...``, vm.VM): the guest's connection is this program's
stdin and stdout. The other form, ``guestfwd=...-tcp:HOST:PORT``, is one connection made
when QEMU starts (it fails when nothing listens yet) and shared by every guest
connection, which does not serve HTTP.
"""

import os
import selectors
import socket
import sys


def _end_guest_output() -> None:
    """Tell the guest that nothing more comes. QEMU (slirp) gives the program one socket
    as stdin, stdout and stderr: closing fd 1 alone would not end the stream."""
    try:
        socket.socket(fileno=os.dup(1)).shutdown(socket.SHUT_WR)
    except OSError:
        os.close(1)  # a pipe


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: relay.py PORT", file=sys.stderr)
        return 2
    sock = socket.create_connection(("127.0.0.1", int(argv[0])), timeout=30)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "guest")
    sel.register(sock, selectors.EVENT_READ, "host")
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            if key.data == "guest":
                data = os.read(0, 65536)
                if data:
                    sock.sendall(data)
                else:
                    sel.unregister(0)
                    sock.shutdown(socket.SHUT_WR)
                    open_ends -= 1
            else:
                data = sock.recv(65536)
                if data:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(1, view) :]
                else:
                    sel.unregister(sock)
                    _end_guest_output()
                    open_ends -= 1
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
