"""A loopback SMTP server for the alert tests (the `smtp` fixture in conftest.py)."""

from __future__ import annotations

import socket
import threading
from email import message_from_bytes, policy


class SmtpSink:
    """A minimal SMTP server on loopback that keeps every message it receives."""

    def __init__(self):
        self.messages: list = []
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                conn.sendall(b"220 sink\r\n")
                data = None
                for line in reader:
                    if data is not None:
                        if line in (b".\r\n", b".\n"):
                            self.messages.append(message_from_bytes(b"".join(data), policy=policy.default))
                            data = None
                            conn.sendall(b"250 queued\r\n")
                        else:
                            data.append(line[1:] if line.startswith(b"..") else line)
                        continue
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        conn.sendall(b"250 sink\r\n")
                    elif verb == b"DATA":
                        data = []
                        conn.sendall(b"354 go on\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        break
                    else:
                        conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self._server.close()
