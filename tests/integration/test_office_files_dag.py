"""What offices really save (issue 12), a representative few through the real DAG (`dag.test()`)."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def drop(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "drop" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, content, stored", [
    ("dos437.csv", b"Account #,Last Name,First Name\r\n1131,Pe\xa4a,Jos\x82\r\n1132,Plain,Ann\r\n",
     {"1131": ("Peña", "José"), "1132": ("Plain", "Ann")}),
    ("ansi_valid_utf8.csv", b"Account #,Last Name,First Name\r\n2121,GARCIA,REN\xc9\xa0\r\n2122,PLAIN,ANN\r\n",
     {"2121": ("GARCIA", "RENÉ"), "2122": ("PLAIN", "ANN")}),
    ("macroman.csv", "Account #,Last Name,First Name\r3131,Müller,Zoë\r3132,Côté,Hélène\r".encode("mac_roman"),
     {"3131": ("Müller", "Zoë"), "3132": ("Côté", "Hélène")}),
])
def test_every_excel_encoding_stores_the_names_as_written(runner, tmp_path, name, content, stored):
    export = drop(tmp_path, name, content)

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export), exported_on="2026-11-20")

    report = runner.report(summary)
    assert state == "success" and report["status"] == "completed"
    patients = runner.patients("demo_clinic")
    assert {a: (patients[a]["last_name"], patients[a]["first_name"]) for a in stored} == stored
    upload = Path(report["files"]["upload"]).read_bytes()
    assert upload.startswith(codecs.BOM_UTF8)
    for last, first in stored.values():
        assert last.encode() in upload and first.encode() in upload


def test_double_decoded_names_are_stored_repaired_and_warned_by_row_and_field(runner, tmp_path):
    content = (b"Account #,Last Name,First Name,Import Problem\r\n"
               b"2901,M\xc3\xbcller,Jos\xe9,First Name is required\r\n2902,Plain,Ann,\r\n")
    export = drop(tmp_path, "fixed_in_excel.csv", content)

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export), exported_on="2026-11-20")

    report = runner.report(summary)
    assert state == "success" and report["status"] == "completed"
    stored = runner.patients("demo_clinic")["2901"]
    assert (stored["last_name"], stored["first_name"]) == ("Müller", "José")
    [warning] = [x for x in report["problems"] if x["code"] == "text_repaired"]
    assert (warning["row"], warning["account_number"], warning["field"]) == (2, "2901", "last_name")


def test_garbled_file_is_rejected_saying_which_encoding_to_save_as(runner, tmp_path):
    export = drop(tmp_path, "garbled.csv", b"Account #,Last Name,First Name\r\n1,Ab\xa4\xe2cd,Ef\x82\xb3\xd1gh\r\n")

    state, [summary] = runner.run(practice_id="demo_clinic", export_file=str(export), exported_on="2026-11-20")

    report = runner.report(summary)
    assert report["status"] == "rejected"
    [problem] = [x for x in report["problems"] if x["row"] is None and x["severity"] == "error"]
    assert problem["code"] == "unreadable_file" and "CSV UTF-8" in problem["message"]
    assert runner.patients("demo_clinic") == {}
