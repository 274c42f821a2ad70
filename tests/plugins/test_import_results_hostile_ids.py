"""Import Results never answers 500 because of an id a hostile conf once wrote to the store (SPEC §7).

Before practice ids were checked at every entry, `make import PRACTICE=../../elsewhere/x` recorded an
import whose id holds `/`; afterwards every list page answered 500 for everyone.
"""

from __future__ import annotations

import pytest

from tests.plugins.conftest import T0, _record

pytestmark = pytest.mark.integration

HOSTILE = "../../elsewhere/x"


@pytest.fixture(scope="module")
def hostile_import(store):
    from include.patient_import.records import open_store

    engine = open_store(f"sqlite:///{store['database']}")
    _record(engine, f"{HOSTILE}_20261125_abc", HOSTILE, "rejected", T0)
    _record(engine, "demo_clinic\n_20261125_nl", "demo_clinic\nFORGED", "rejected", T0)
    engine.dispose()


@pytest.mark.parametrize("route", ["/import-results/", "/import-results/?status=rejected",
                                   "/import-results/api/imports", "/import-results/api/imports?status=rejected"])
def test_list_pages_answer_with_a_hostile_id_in_the_store(client, viewer, hostile_import, route):
    response = client.get(route, headers=viewer)

    assert response.status_code == 200, response.text[:500]
    assert "elsewhere" in response.text


@pytest.mark.parametrize("practice", [HOSTILE, "a/b", "..", "demo_clinic\n", "dеmo_clinic", "x" * 65])
def test_practice_filter_with_a_bad_id_is_refused_not_a_500(client, viewer, hostile_import, practice):
    for route in ("/import-results/", "/import-results/api/imports"):
        response = client.get(route, headers=viewer, params={"practice": practice})
        assert response.status_code == 422, (route, response.status_code)
