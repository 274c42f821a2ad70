"""A representative few of the hostile corpus (tools/corpus.py) through the real DAG (`dag.test()`).

The package-level tests (tests/patient_import/test_hostile_inputs.py) take every corpus file; here
one file per stage that refuses it: extract (by content), validate (the reader's quoting, with the
row) and the workbook grid check, plus links left in an inbox.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from tools.corpus import LIMITS_ENV, MARKERS, accepted_rows, corpus, csv_text

pytestmark = pytest.mark.integration

BY_NAME = {h.name: h for h in corpus()}


@pytest.fixture
def limits(monkeypatch):
    for name, value in LIMITS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("name", ["pdf_named.csv", "quote_never_closed.csv", "sparse_bomb.xlsx"])
def test_hostile_file_fails_the_run_with_a_clean_rejection(runner, limits, tmp_path, hostile_corpus, name):
    item = BY_NAME[name]
    export = tmp_path / "drop" / item.name
    export.parent.mkdir()
    shutil.copyfile(hostile_corpus[name], export)
    digest = hashlib.sha256(export.read_bytes()).hexdigest()

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export))

    assert state == "failed"
    report = runner.report(summary)
    assert report["status"] == "rejected"
    [problem] = [x for x in report["problems"] if x["row"] is None and x["severity"] == "error"]
    assert problem["code"] in item.codes
    assert not [m for m in MARKERS if m in problem["message"]]
    if item.row:
        assert report["details"]["row"] == item.row
    assert runner.patients("demo_clinic") == {}
    assert hashlib.sha256(Path(report["files"]["quarantine"]).read_bytes()).hexdigest() == digest
    assert hashlib.sha256(export.read_bytes()).hexdigest() == digest


def test_links_in_an_inbox_are_left_alone_while_the_real_export_is_imported(runner, home, tmp_path):
    inbox = home / "inbox" / "demo_clinic"
    inbox.mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "other_practice.csv"
    outside.parent.mkdir()
    outside.write_text(csv_text(accepted_rows(2, 95001)), encoding="utf-8")
    (inbox / "link.csv").symlink_to(outside)
    real = inbox / "Patient List 20261120.csv"
    real.write_text(csv_text(accepted_rows(3, 96001)), encoding="utf-8")
    old = time.time() - 3600
    os.utime(real, (old, old))

    state, [summary] = runner.run(practice_id="demo_clinic")

    assert state == "success"
    assert runner.report(summary)["counts"]["inserted"] == 3
    assert set(runner.patients("demo_clinic")) == {"96001", "96002", "96003"}
    assert (inbox / "link.csv").is_symlink() and outside.is_file()
    assert not real.exists()
