"""Alerts to the data team (issue #3): a rejected import and a stale practice send an e-mail through
the `patient_import_alerts` SMTP connection; without it, nothing is sent. The staleness check also
shows in the report."""

from __future__ import annotations

import socket
import threading
from email import message_from_bytes, policy

import pytest

from tests.integration.test_patient_import_dag import patient, write_export

pytestmark = pytest.mark.integration


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


@pytest.fixture
def smtp(monkeypatch):
    sink = SmtpSink()
    monkeypatch.setenv("AIRFLOW_CONN_PATIENT_IMPORT_ALERTS",
                       f"smtp://127.0.0.1:{sink.port}?to=data-team%40example.org"
                       "&from_email=airflow%40example.org&disable_tls=true&disable_ssl=true")
    yield sink
    sink.close()


def test_a_rejected_import_and_a_stale_practice_alert_the_data_team(runner, tmp_path, smtp):
    pdf = tmp_path / "wrong.csv"
    pdf.write_bytes(b"%PDF-1.7\n1 0 obj <<>> endobj\n")

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(pdf), exported_on="2026-11-20")

    assert state == "failed"
    subjects = [m["subject"] for m in smtp.messages]
    assert any("demo_clinic" in s and "rejected or failed" in s for s in subjects), subjects
    # Every registered practice without a recent export is reported stale (none has one yet).
    stale = next(m for m in smtp.messages if "without a recent export" in m["subject"])
    assert "small_clinic" in stale.get_body().get_content()
    assert runner.report(summary)["staleness"] == {"newest_export": "2026-11-20", "stale_after_days": 14,
                                                   "stale": False}


def test_without_the_alerts_connection_nothing_is_sent_and_the_report_shows_staleness(runner, tmp_path):
    sink = SmtpSink()
    try:
        export = write_export(tmp_path / "ok.csv", [patient("1")])
        state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export))
    finally:
        sink.close()

    assert state == "success" and sink.messages == []
    staleness = runner.report(summary)["staleness"]
    assert staleness["stale"] is False and staleness["stale_after_days"] == 14
