"""Column aliases per practice and "did you mean" suggestions for unknown columns (SPEC §8)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from include.patient_import import problems as p
from include.patient_import.practices import Practice, load_practices
from include.patient_import.problems import ConfigurationError, ExportRejected
from include.patient_import.reader import read_export
from include.patient_import.schema import DEFAULT_HEADERS, HeaderMap
from include.patient_import.staging import Job
from include.patient_import.store import create_store_engine, migrate
from include.patient_import.validate import validate_export

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
# Distinctive patient values: none may appear in a message.
VALUES = ("77341", "Quixotemarker", "Zebulonmarker", "617-555-0199")


def registry(tmp_path: Path, aliases: str) -> Path:
    path = tmp_path / "practices.yml"
    path.write_text("practices:\n  - id: clinic_a\n    name: A\n" + aliases, encoding="utf-8")
    return path


def export(tmp_path: Path, header: str, row: str = ",".join(VALUES[:3])) -> Path:
    path = tmp_path / "export.csv"
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")
    return path


def unknown_messages(parsed) -> dict[str, str]:
    return {x.field: x.message for x in parsed.problems if x.code == p.UNKNOWN_COLUMN}


# ---------------------------------------------------------------- the registry

def test_a_practice_alias_maps_its_header_to_the_field_whatever_its_case_and_punctuation(tmp_path):
    practice = load_practices(registry(tmp_path, '    column_aliases: {"Pt Acct": account_number}\n'))["clinic_a"]

    assert practice.column_aliases == (("Pt Acct", "account_number"),)
    assert practice.header_map.field("PT-ACCT.") == "account_number"
    assert practice.header_map.field("Account #") == "account_number"  # the schema's headers still hold


def test_a_practice_without_aliases_maps_only_the_schema_headers(tmp_path):
    practice = load_practices(registry(tmp_path, ""))["clinic_a"]

    assert practice.column_aliases == ()
    assert practice.header_map.field("Pt Acct") is None


def test_an_alias_to_an_unknown_field_stops_the_registry_naming_practice_and_key(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        load_practices(registry(tmp_path, '    column_aliases: {"Pt Acct": acct_no}\n'))

    assert "clinic_a" in str(info.value) and "Pt Acct" in str(info.value) and "acct_no" in str(info.value)


@pytest.mark.parametrize("aliases", [
    "    column_aliases: [account_number]\n",  # not a mapping
    '    column_aliases: {"--": account_number}\n',  # no letter or digit to match on
    "    column_aliases: {12: account_number}\n",  # not a header text
    '    column_aliases: {"Import Problem": last_name}\n',  # a column the pipeline writes itself
    '    column_aliases: {"Pt Acct": account_number, "pt-acct": last_name}\n',  # one header, two fields
])
def test_a_malformed_column_aliases_entry_stops_the_registry_naming_the_practice(tmp_path, aliases):
    with pytest.raises(ConfigurationError) as info:
        load_practices(registry(tmp_path, aliases))

    assert "practice clinic_a" in str(info.value) and "column_aliases" in str(info.value)


def test_the_registry_loads_without_pandas_numpy_or_pyarrow():
    code = ("import sys; import include.patient_import.practices; "
            "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'rapidfuzz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- the reader

def test_the_reader_maps_a_practice_alias_to_its_field(tmp_path):
    headers = HeaderMap.of([("Pt Acct", "account_number"), ("Surname Pt", "last_name")])

    parsed = read_export(export(tmp_path, "Pt Acct,Surname Pt,First Name"), header_map=headers)

    assert parsed.columns == ["account_number", "last_name", "first_name"]
    assert parsed.problems == []


def test_without_the_practice_aliases_the_same_header_is_an_unknown_column(tmp_path):
    parsed = read_export(export(tmp_path, "Pt Acct,Last Name,First Name"))

    assert parsed.columns == ["__extra_1", "last_name", "first_name"]
    assert list(unknown_messages(parsed)) == ["Pt Acct"]


def test_a_practice_alias_wins_over_the_schema_meaning_of_the_same_header(tmp_path):
    headers = HeaderMap.of([("Phone", "cell_phone")])

    parsed = read_export(export(tmp_path, "Account #,Last Name,First Name,Phone", ",".join(VALUES)),
                         header_map=headers)

    assert parsed.columns == ["account_number", "last_name", "first_name", "cell_phone"]


def test_an_alias_and_a_schema_header_of_the_same_field_are_duplicate_columns(tmp_path):
    headers = HeaderMap.of([("Pt Acct", "account_number")])

    with pytest.raises(ExportRejected) as info:
        read_export(export(tmp_path, "Pt Acct,Account #,Last Name,First Name", "1," + ",".join(VALUES[:3])),
                    header_map=headers)

    assert info.value.code == p.DUPLICATE_COLUMNS


def test_validate_reads_the_export_with_the_practices_aliases(tmp_path, monkeypatch):
    monkeypatch.setenv("PATIENT_IMPORT_HOME", str(tmp_path))
    monkeypatch.delenv("PATIENT_IMPORT_STORAGE", raising=False)
    engine = create_store_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    source = export(tmp_path, "Pt Acct,Last Name,First Name")
    job = Job(import_id="imp1", practice_id="c", source=str(source), export_name="export.csv", sha256="0" * 64,
              size=source.stat().st_size, exported_on="2026-11-20", dry_run=False)
    practice = Practice(id="c", name="C", column_aliases=(("Pt Acct", "account_number"),))

    result = validate_export(engine, job, practice, today=date(2026, 11, 27))

    assert result.rejection is None
    assert result.rows_frame()["account_number"].tolist() == ["77341"]
    without = validate_export(engine, job, Practice(id="c", name="C"), today=date(2026, 11, 27))
    assert without.rejection.code == p.MISSING_REQUIRED_COLUMNS


# ---------------------------------------------------------------- did you mean

@pytest.mark.parametrize(("header", "suggested"), [
    ("Home Phon", "Home Phone"), ("Middel Initial", "Middle Initial"), ("Adress", "Address"), ("Emial", "E-mail"),
    ("Birth Dt", "Birthdate"), ("Cty", "City"), ("Gendr", "Gender"), ("Last Vist", "Last Visit"),
    ("Pateint Status", "Patient Status"), ("Cel Phone", "Cell Phone"),
])
def test_an_unknown_column_close_to_a_field_header_suggests_it(tmp_path, header, suggested):
    parsed = read_export(export(tmp_path, f"Account #,Last Name,First Name,{header}", ",".join(VALUES)))

    message = unknown_messages(parsed)[header]
    assert f'did you mean "{suggested}"?' in message
    assert not any(value in message for value in VALUES)


@pytest.mark.parametrize("header", [
    "Notes", "Balance", "Insurance", "Provider", "Referring Doctor", "Work Phone", "SSN", "Employer",
    "Guarantor", "Age", "Race", "Language", "Last Payment", "Date Added", "Account Balance", "Next Appt",
    "Chart Notes", "Marital Status", "First Visit", "Middle Name", "Patient ID", "Fax", "County",
    "Mailing Address", "Work Email", "Alt Phone", "Referral Source",
])
def test_an_unrelated_unknown_column_gets_no_suggestion(tmp_path, header):
    parsed = read_export(export(tmp_path, f"Account #,Last Name,First Name,{header}", ",".join(VALUES)))

    message = unknown_messages(parsed)[header]
    assert "did you mean" not in message
    assert message == f"column {header!r} is not a patient field and is ignored"


def test_a_suggestion_can_be_one_of_the_practices_aliases(tmp_path):
    headers = HeaderMap.of([("Pt Acct", "account_number")])

    parsed = read_export(export(tmp_path, "Pt Acct,Last Name,First Name,Pt Cel", ",".join(VALUES)),
                         header_map=HeaderMap.of([("Pt Acct", "account_number"), ("Pt Cell", "cell_phone")]))
    assert 'did you mean "Pt Cell"?' in unknown_messages(parsed)["Pt Cel"]
    assert headers.suggestion("Pt Acc") == "Pt Acct"
    assert DEFAULT_HEADERS.suggestion("Pt Acc") is None


def test_a_misspelt_required_header_is_suggested_when_no_column_fills_its_field(tmp_path):
    parsed = read_export(export(tmp_path, "Account #,Last Name,Fist Name"))

    assert 'did you mean "First Name"?' in unknown_messages(parsed)["Fist Name"]


def test_no_suggestion_names_a_field_another_column_already_fills(tmp_path):
    parsed = read_export(export(tmp_path, "Account #,Last Name,First Name,Home Phone,Home Phon",
                                ",".join(VALUES) + ",6175550100"))

    assert "did you mean" not in unknown_messages(parsed)["Home Phon"]


def test_the_encoding_is_judged_on_the_practices_aliased_name_columns():
    from include.patient_import.encoding import _header_named_positions

    cells = ["Acct #", "Pt Last", "Pt First", "City"]
    headers = HeaderMap.of([("Pt Last", "last_name"), ("Pt First", "first_name")])

    assert _header_named_positions(cells) == {3}
    assert _header_named_positions(cells, headers) == {1, 2, 3}


def test_a_mac_roman_export_with_aliased_name_columns_reads_its_names(tmp_path):
    text = "Acct #,Pt Last,Pt First,City\r" + "".join(f"{n},Lefèvre,Renée,Boston\r" for n in range(1, 4))
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode("mac_roman"))

    parsed = read_export(path, header_map=HeaderMap.of([("Pt Last", "last_name"), ("Pt First", "first_name")]))

    assert parsed.encoding == "mac_roman"
    assert parsed.frame["last_name"].tolist() == ["Lefèvre"] * 3
