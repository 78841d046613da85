"""A stand-in for busybox's ``nc HOST PORT`` in the simulated pods (the host may have no netcat): stdin to
the socket, the socket to stdout, until the server closes the connection."""

from __future__ import annotations

import os
import socket
import sys
import threading


def main() -> None:
    host, port = sys.argv[-2], int(sys.argv[-1])
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(None)

    def send() -> None:
        while data := sys.stdin.buffer.read1(65536):
            sock.sendall(data)

    threading.Thread(target=send, daemon=True).start()
    while data := sock.recv(65536):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    os._exit(0)  # the server closed: done, whatever the stdin thread is blocked on


if __name__ == "__main__":
    main()
