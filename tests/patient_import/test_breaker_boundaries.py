"""Adversarial review of issue 11 (SPEC §7): conf values and paths the first tests did not try."""

from __future__ import annotations

import pytest

from include.patient_import import boundaries, planning
from include.patient_import import problems as p
from tests.corpus import PRACTICE_ID
from tests.patient_import.test_trust_boundaries import _export, engine, exports, home  # noqa: F401 - fixtures

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


@pytest.mark.parametrize("value", ["{root}/a://b.csv", "{root}//x://y", "1s3://bucket/x.csv", "+s3://b/x",
                                   " s3://b/x", "://x", "s 3://bucket/x"])
def test_text_before_a_double_slash_that_is_no_url_scheme_is_refused_as_not_allowed(engine, exports, value):
    # `/exports/a://b.csv` was handed to the object-store client as a URL of scheme `/exports/a`,
    # which crashed the task with whatever error the client raised instead of refusing it.
    with pytest.raises(p.InputRefused) as refused:
        boundaries.check_export_file(value.format(root=exports), PRACTICE_ID)
    assert refused.value.code == p.EXPORT_FILE_NOT_ALLOWED


def test_object_url_without_a_bucket_is_refused_as_not_allowed(engine, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", "s3://conn@bucket/exports")
    with pytest.raises(p.InputRefused) as refused:
        boundaries.check_export_file("s3:///exports/x.csv", PRACTICE_ID)
    assert refused.value.code == p.EXPORT_FILE_NOT_ALLOWED


def test_a_root_entry_that_is_no_url_is_ignored_not_a_crash(engine, exports, monkeypatch):
    export = _export(exports / "x.csv")
    monkeypatch.setenv("PATIENT_IMPORT_EXPORT_ROOTS", f"/a://b:{exports}")
    assert boundaries.check_export_file(str(export), PRACTICE_ID) == export.resolve()


@pytest.mark.parametrize("practice_id", [0, False, [], {}, 0.0])
def test_a_wrong_typed_empty_practice_id_is_refused_not_read_as_every_practice(engine, practice_id):
    with pytest.raises(p.InputRefused) as refused:
        planning.check_conf({"practice_id": practice_id})
    assert refused.value.code == p.UNKNOWN_PRACTICE


@pytest.mark.parametrize("exported_on", [0, False, [], {}])
def test_a_wrong_typed_empty_exported_on_is_refused_not_ignored(engine, exported_on):
    with pytest.raises(p.ConfigurationError, match="exported_on"):
        planning.check_conf({"practice_id": PRACTICE_ID, "exported_on": exported_on})


@pytest.mark.parametrize("export_file", [0, False, [], {}])
def test_a_wrong_typed_empty_export_file_is_refused_not_read_as_the_inbox(engine, export_file):
    with pytest.raises(p.InputRefused) as refused:
        planning.check_conf({"practice_id": PRACTICE_ID, "export_file": export_file})
    assert refused.value.code == p.EXPORT_FILE_NOT_ALLOWED


@pytest.mark.parametrize("conf", [{}, {"practice_id": None, "export_file": None, "exported_on": None},
                                  {"practice_id": "", "export_file": "", "exported_on": ""}])
def test_null_or_empty_conf_values_still_mean_not_given(engine, conf):
    assert planning.check_conf(conf) == {"practice_id": "", "export_file": None, "exported_on": None,
                                         "dry_run": False}
