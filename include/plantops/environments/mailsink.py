"""A local SMTP sink: every mail the plant sends lands as a file, for the demo, `make up` and the tests.

An aiosmtpd server on 127.0.0.1 accepts any mail (no TLS, no login) and writes each one to
``<folder>/<NNNN>.eml``: the message as received (RFC 822), with the envelope recipients on top in
an ``X-Envelope-To`` header, since Bcc recipients appear nowhere else. Files are written under a
dot-name and renamed, so a reader never sees half a mail.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import re
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_NAME = re.compile(r"^(\d{4,})\.eml$")


class _Folder:
    """The aiosmtpd handler: one numbered file per message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    def _next_number(self) -> int:
        # Numbers go on after what the folder holds, so a restarted sink never overwrites a mail.
        numbers = [int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.match(p.name))]
        return max(numbers, default=0) + 1

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        header = f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode()
        with self._lock:
            number = self._next_number()
            final = self.folder / f"{number:04d}.eml"
            temp = self.folder / f".{final.name}.tmp"
            temp.write_bytes(header + content)
            os.replace(temp, final)
        log.info("mail sink: %s from %s to %s", final.name, envelope.mail_from, envelope.rcpt_tos)
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """aiosmtpd's Controller, bound before its readiness check, so port 0 yields the real free port
    (aiosmtpd 1.4 would otherwise try to connect to port 0)."""

    async def _bind(self) -> Any:
        server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=self.port,
                                               ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _create_server(self) -> Any:
        return self._bind()


def start(folder: Path, port: int = 0) -> tuple[Controller, int]:
    """Start the sink on 127.0.0.1:``port`` (0: any free port) in a background thread.

    Returns the controller (for :func:`stop`) and the port it listens on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # aiosmtpd logs every SMTP command at INFO; one line per mail (above) is what a demo wants.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = _Controller(_Folder(folder), hostname=HOST, port=port)
    controller.start()
    log.info("mail sink on %s:%s writing to %s", HOST, controller.port, folder)
    return controller, controller.port


def stop(controller: Controller) -> None:
    controller.stop()


def messages(folder: Path) -> list[EmailMessage]:
    """The mails received so far, parsed, in the order they arrived (by file name)."""
    paths = sorted((p for p in Path(folder).glob("*.eml") if _NAME.match(p.name)), key=lambda p: int(p.stem))
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]


def main(argv: list[str] | None = None) -> int:
    """``python -m plantops.environments.mailsink <folder> <port>``: run the sink until killed
    (`make up` starts it beside Airflow)."""
    import sys
    import time

    folder, port = (sys.argv[1:] if argv is None else argv)[:2]
    logging.basicConfig(level=logging.INFO)
    controller, _ = start(Path(folder), int(port))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        stop(controller)


if __name__ == "__main__":
    raise SystemExit(main())
