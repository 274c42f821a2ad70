"""Alerts to the data team (issue #3): a rejected import and a stale practice send an e-mail through
the `patient_import_alerts` SMTP connection; without it, nothing is sent. The staleness check also
shows in the report."""

from __future__ import annotations

import pytest

from tests.integration.smtp_sink import SmtpSink
from tests.integration.test_patient_import_dag import patient, write_export

pytestmark = pytest.mark.integration


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
