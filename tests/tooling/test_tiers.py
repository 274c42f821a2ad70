"""Tests by tier (tests/conftest.py): a test using a server is in that server's tier, never `unit`;
a test with no tier is `unit`; a module marked `unit` whose tests use a server is refused."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from tests import conftest

pytestmark = pytest.mark.unit


@dataclass
class FakeItem:
    nodeid: str
    fixturenames: tuple[str, ...] = ()
    marks: list[str] = field(default_factory=list)

    def iter_markers(self):
        return iter([SimpleNamespace(name=name) for name in self.marks])

    def add_marker(self, marker):
        self.marks.append(marker if isinstance(marker, str) else marker.name)


def tiers(*items: FakeItem) -> list[set[str]]:
    conftest.pytest_collection_modifyitems(None, list(items))
    return [set(item.marks) for item in items]


@pytest.mark.parametrize(("fixture", "tier"), [("postgres_server", "postgres"), ("object_store", "object_store"),
                                               ("docker_compose", "compose")])
def test_a_test_using_a_server_is_in_its_tier_and_not_unit(fixture, tier):
    [marks] = tiers(FakeItem("t", ("tmp_path", fixture)))

    assert tier in marks and "unit" not in marks


def test_a_test_without_a_tier_is_a_unit_test():
    assert tiers(FakeItem("t", ("tmp_path",)), FakeItem("d", (), ["integration"])) == [{"unit"}, {"integration"}]


@pytest.mark.parametrize(("fixture", "marks"), [("postgres_server", ["unit"]), ("tmp_path", ["unit", "redis"])])
def test_a_unit_test_that_uses_a_server_is_refused(fixture, marks):
    with pytest.raises(pytest.UsageError, match="tests/x.py::t"):
        tiers(FakeItem("tests/x.py::t", (fixture,), list(marks)))


# ---------------------------------------------------------------- workers (`make test`, pytest-xdist)


def test_the_modules_on_the_session_stack_are_one_scheduling_scope_and_others_their_module():
    shared = {conftest.scope_of(f"{module}::t") for module in conftest.SHARED_STACK_MODULES}

    assert len(shared) == 1
    assert conftest.scope_of("tests/e2e/test_celery_topology.py::t[x]") == "tests/e2e/test_celery_topology.py"
    assert not shared & {conftest.scope_of("tests/patient_import/test_rules.py::t")}


def test_a_test_on_the_session_stack_outside_the_shared_modules_is_refused():
    conftest.pytest_itemcollected(FakeItem(next(iter(conftest.SHARED_STACK_MODULES)) + "::t", ("airflow",)))

    with pytest.raises(pytest.UsageError, match="SHARED_STACK_MODULES"):
        conftest.pytest_itemcollected(FakeItem("tests/e2e/test_new.py::t", ("tmp_path", "airflow")))


def test_workers_start_with_the_shared_stack_then_the_other_servers_then_the_dag_runs():
    ids = ["tests/patient_import/test_rules.py::t", "tests/integration/test_alerts.py::t",
           "tests/e2e/test_celery_topology.py::t", "tests/faults/test_faults.py::t",
           next(iter(conftest.SHARED_STACK_MODULES)) + "::t"]

    assert sorted(ids, key=conftest.start_rank) == [ids[4], ids[2], ids[1], ids[3], ids[0]]
