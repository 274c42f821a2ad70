"""
# patient_import_undo

Takes one completed import of `patient_import` back (SPEC §8, "Undo").

One task, **undo_import**, in one transaction under the practice's lock: the patients the import
inserted are removed, the patients it updated get their values from before it back. A patient that
a later import changed again is left as it is and listed (`changed_since`, account numbers only, in
the undo's report beside the import's); undo that later import first, then this one again.
Undoing twice changes nothing the second time. The import's status becomes `undone`, with who
triggered this run and when; its Import Results page shows it.

Trigger with conf `{"import_id": "<the import's id>"}`, from Import Results' **Undo this import**
button, this form, or `make undo IMPORT=<id>` (the same, without Airflow).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

# Stdlib only underneath (settings, storage): cheap at parse time.
from include.patient_import.files import IMPORT_ID_LENGTH, IMPORT_ID_PATTERN

_TIMEZONE = os.environ.get("PATIENT_IMPORT_TIMEZONE", "UTC")
_RETRIES = int(os.environ.get("PATIENT_IMPORT_RETRIES", "3"))
_RETRY_DELAY = timedelta(seconds=int(os.environ.get("PATIENT_IMPORT_RETRY_DELAY_SECONDS", "30")))


@task(multiple_outputs=False)  # one summary dict, one XCom
def undo_import(params: dict | None = None) -> dict:
    """Undo the import the conf names; returns counts and the undo report's path, no patient value."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.patient_import.store import airflow_store_url, create_store_engine, migrate
    from include.patient_import.undo import NotUndoable
    from include.patient_import.undo import undo_import as undo

    by = getattr(get_current_context()["dag_run"], "triggering_user_name", None)
    engine = create_store_engine(airflow_store_url())
    try:
        migrate(engine)
        return undo(engine, str((params or {}).get("import_id") or ""), by=by).summary()
    except NotUndoable as exc:
        raise AirflowFailException(str(exc)) from None  # bad input: retrying would not help
    finally:
        engine.dispose()


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz=_TIMEZONE),
    catchup=False,
    doc_md=__doc__,
    tags=["patient_import", "undo"],
    default_args={"retries": _RETRIES, "retry_delay": _RETRY_DELAY, "retry_exponential_backoff": True,
                  "max_retry_delay": timedelta(minutes=10)},
    params={
        "import_id": Param(type="string", pattern=IMPORT_ID_PATTERN, minLength=1, maxLength=IMPORT_ID_LENGTH,
                           title="Import",
                           description="The id of the import to undo, as Import Results and its report give it "
                                       "(e.g. demo_clinic_20261120_0123456789ab)."),
    },
)
def patient_import_undo() -> None:
    undo_import()


patient_import_undo()
