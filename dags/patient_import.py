"""
# patient_import

Imports Genesis patient exports into the Cash Practice patient store, one practice at a time.

For each practice with waiting exports (or the one named in the run's conf), oldest export first:

1. **extract_exports** — picks the exports, archives the originals, registers each import.
2. **validate_exports** — reads and normalises each file; the Great Expectations suites in
   `expectations/` decide which rows and files are rejected; builds Data Docs.
3. **transform_exports** — writes the upload-ready Cash Practice CSV and the rejected rows.
4. **check_approval** — decides, without writing, whether an import is over one of its practice's
   `approval` thresholds (README "Approval").
5. **approve_imports** — waits for a person (Airflow's human-in-the-loop: *Required Actions*) only
   when an import is over a threshold; skipped otherwise. Reject, or no answer in time, rejects the
   import (`not_approved`, `approval_timed_out`) and no patient changes.
6. **load_patients** — one transaction per import, under the practice's lock.
7. **report_imports** — finalises each import and writes its JSON report, whatever happened
   upstream; fails the run when an import was rejected or failed.

Trigger with conf `{"practice_id": "demo_clinic", "export_file": "/abs/path.csv",
"exported_on": "YYYY-MM-DD", "dry_run": false}` to import one file; without `export_file` a run
imports what waits in the inboxes (and archived exports never imported). `export_file` must be under
a root of `PATIENT_IMPORT_EXPORT_ROOTS` (or the practice's own archive); anything else fails the run
with `export_file_not_allowed` before a file is touched. See the README's Security section.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task, task_group

_ALERTS_CONN_ID = "patient_import_alerts"
_SCHEDULE = os.environ.get("PATIENT_IMPORT_SCHEDULE", "@daily")
_TIMEZONE = os.environ.get("PATIENT_IMPORT_TIMEZONE", "UTC")
_RETRIES = int(os.environ.get("PATIENT_IMPORT_RETRIES", "3"))
_RETRY_DELAY = timedelta(seconds=int(os.environ.get("PATIENT_IMPORT_RETRY_DELAY_SECONDS", "30")))


def _registered_practice_ids() -> list[str]:
    """The registry's practice ids, offered by the trigger form's Practice field.

    A deliberate read at parse time: a form can offer only what its DAG carried when it was
    parsed, and the registry is one small local YAML file (no database, no network; PyYAML is
    already loaded by Airflow). A registry that cannot be read offers nothing; the run's conf is
    checked against the registry by `plan_imports` all the same.
    """
    import yaml

    from include.patient_import.settings import practices_file  # stdlib only: cheap at parse

    try:
        with open(practices_file(), encoding="utf-8") as handle:
            entries = (yaml.safe_load(handle) or {}).get("practices") or []
        return sorted({str(e["id"]) for e in entries if isinstance(e, dict) and e.get("id")})
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return []


def _engine(prepare: bool = False):
    from include.patient_import.records import open_store
    from include.patient_import.store import airflow_store_url

    return open_store(airflow_store_url(), prepare=prepare)


def _run_info(practice_id: str | None = None, attempt: int = 1):
    """The run's identity; inside the practice group it also labels the map index with the practice."""
    from include.patient_import.extract import RunInfo

    ctx = get_current_context()
    if practice_id is not None:
        ctx["practice_id"] = practice_id  # rendered by map_index_template
    run = ctx["dag_run"]
    run_type = str(run.run_type).split(".")[-1].lower()
    end = ctx.get("data_interval_end")
    if run_type == "manual" or end is None:
        # A manual run imports everything waiting up to the moment it runs.
        now = pendulum.now("UTC")
        end = max(end, now) if end else now
    return RunInfo(dag_id=run.dag_id, run_id=run.run_id, run_type=run_type, map_index=ctx["ti"].map_index,
                   attempt=attempt, interval_start=ctx.get("data_interval_start"), interval_end=end,
                   triggered_by=getattr(run, "triggering_user_name", None))


def _alert(subject: str, lines: list[str]) -> None:
    """E-mail the data team through the `patient_import_alerts` SMTP connection; off when it is not defined.

    The connection's extra holds the recipients (`{"to": "team@clinic.example", "from_email": ...}`).
    Messages carry practice ids, import ids and report paths only.
    """
    import html
    import logging

    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(_ALERTS_CONN_ID)
    except AirflowNotFoundException:
        return
    recipients = conn.extra_dejson.get("to")
    if not recipients:
        logging.getLogger(__name__).warning("connection %s has no 'to' in its extra: no alert sent", _ALERTS_CONN_ID)
        return
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    body = "<br>".join(html.escape(line) for line in lines)
    SmtpNotifier(to=recipients, subject=subject, html_content=body, smtp_conn_id=_ALERTS_CONN_ID).notify(
        get_current_context())


def _bad_input(exc: Exception):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(str(exc))


@task
def plan_imports(params: dict | None = None) -> list[dict]:
    """The practices this run imports for: the one in the conf, or every one with waiting exports.

    Each carries this task's try number: a run cleared as a whole (or reprocessed by a backfill)
    plans again and so imports again, while a task cleared on its own continues its imports.
    """
    from include.patient_import.planning import practices_to_import, stale_practices
    from include.patient_import.problems import ConfigurationError

    try:
        engine = _engine(prepare=True)
        stale = stale_practices(engine)
        if stale:
            _alert(f"patient_import: {len(stale)} practices without a recent export", stale)
        attempt = get_current_context()["ti"].try_number
        return [{"practice_id": p, "attempt": attempt}
                for p in practices_to_import(engine, _run_info(), params or {})]
    except (ConfigurationError, ValueError) as exc:
        _alert("patient_import: the run could not be planned", [str(exc)])
        raise _bad_input(exc) from None


@task(map_index_template="{{ practice_id }}")
def extract_exports(practice_id: str, attempt: int, params: dict | None = None) -> list[str]:
    from include.patient_import.extract import extract_exports as extract
    from include.patient_import.planning import export_request
    from include.patient_import.problems import ConfigurationError

    try:
        engine = _engine()
        request = export_request(params or {}, store=engine)
        return extract(engine, practice_id, _run_info(practice_id, attempt), **request)
    except (ConfigurationError, ValueError) as exc:
        _alert(f"patient_import: the exports of {practice_id} could not be extracted", [str(exc)])
        raise _bad_input(exc) from None


@task(map_index_template="{{ practice_id }}")
def validate_exports(practice_id: str, import_ids: list[str]) -> list[dict]:
    from include.patient_import.validate import validate_import

    _run_info(practice_id)
    engine = _engine()
    return [validate_import(engine, i) for i in import_ids]


@task(map_index_template="{{ practice_id }}")
def transform_exports(practice_id: str, import_ids: list[str]) -> list[dict]:
    from include.patient_import.transform import transform_import

    _run_info(practice_id)
    engine = _engine()
    return [transform_import(engine, i) for i in import_ids]


@task(map_index_template="{{ practice_id }}")
def check_approval(practice_id: str, import_ids: list[str]) -> list[dict]:
    """Each import's approval decision (counts, reason codes; no patient value): `approval.assess_imports`."""
    from include.patient_import.approval import assess_imports

    _run_info(practice_id)
    return assess_imports(_engine(), import_ids)


class ApproveImports(HITLOperator):
    """Waits for a person to approve or reject the practice's imports that `check_approval` found
    over a threshold (SPEC §8), in Airflow's *Required Actions*; skipped when none is.

    The answer is recorded for the waiting imports where it is given (`approval.record_answers`:
    the approval and its audit entry in one transaction); the load reads it from the store and
    rejects what was not approved. No answer within the practice's `timeout_hours` is `timed_out`
    (not a task failure: the load still runs). Returns {"answer", "by": the user's name or None}.
    A retry asks again, saying so: Airflow clears the earlier try's answer (README "Approval").
    """

    template_fields = (*HITLOperator.template_fields, "practice_id", "decisions")
    APPROVE, REJECT = "Approve", "Reject"

    def __init__(self, *, practice_id, decisions, **kwargs) -> None:
        super().__init__(subject="Approve imports", options=[self.APPROVE, self.REJECT], multiple=False, **kwargs)
        self.practice_id = practice_id
        self.decisions = decisions

    def execute(self, context):
        from airflow.providers.common.compat.sdk import AirflowSkipException, conf

        from include.patient_import.approval import approver_text, awaiting

        waiting = awaiting(self.decisions)
        if not waiting:
            raise AirflowSkipException(f"no import of {self.practice_id} is over an approval threshold")
        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        attempt = context["ti"].try_number
        self.subject = f"Approve {len(waiting)} import(s) of {self.practice_id}?" + (
            " (asked again)" if attempt > 1 else "")
        self.body = approver_text(waiting, results_url=f"{base}/import-results", attempt=attempt)
        self.response_timeout = timedelta(hours=max(d["timeout_hours"] for d in waiting))
        return super().execute(context)

    def execute_complete(self, context, event):
        from include.patient_import.approval import awaiting, record_answers
        from include.patient_import.rules import Answer

        if event.get("error_type") == "timeout":
            self.log.info("no answer within the approval timeout: the imports are rejected")
            answer, by, at = Answer.TIMED_OUT, None, None
        else:
            result = super().execute_complete(context, event)
            answer = Answer.APPROVED if result["chosen_options"] == [self.APPROVE] else Answer.REJECTED
            by, at = (result.get("responded_by_user") or {}).get("name"), result.get("responded_at")
            self.log.info("imports %s by %s", answer.value, by or "?")
        waiting = [d["import_id"] for d in awaiting(self.decisions)]
        if waiting:
            record_answers(_engine(), waiting, answer, by, at)
        return {"answer": answer.value, "by": by}


@task(trigger_rule="none_failed", map_index_template="{{ practice_id }}")
def load_patients(practice_id: str, import_ids: list[str]) -> list[dict]:
    """Runs when approve_imports succeeded or was skipped (nothing waited); the load reads the
    recorded answer from the store and rejects what waited and was not approved."""
    from include.patient_import.load import load_patients as load
    from include.patient_import.summary import log_stage_totals

    _run_info(practice_id)
    engine = _engine()
    loaded = [load(engine, i) for i in import_ids]
    log_stage_totals("load_patients", practice_id, loaded)
    return loaded


@task(trigger_rule="all_done", map_index_template="{{ practice_id }}")
def report_imports(practice_id: str, import_ids: list[str]) -> list[dict]:
    from include.patient_import.planning import unsuccessful
    from include.patient_import.report import report_import
    from include.patient_import.summary import log_stage_totals

    _run_info(practice_id)
    if import_ids is None:
        # Extract failed (or never ran): no import happened, and this leaf task must not look green.
        message = f"the exports of {practice_id} were not extracted; see the extract_exports log"
        _alert(f"patient_import: nothing of {practice_id} was imported", [message])
        raise _bad_input(message)
    engine = _engine()
    summaries = [report_import(engine, i) for i in import_ids]
    log_stage_totals("report_imports", practice_id, summaries)
    failed = unsuccessful(summaries)
    if failed:
        _alert(f"patient_import: an import of {practice_id} was rejected or failed", [failed])
        raise _bad_input(failed)
    return summaries


@task_group
def import_practice(practice_id: str, attempt: int) -> None:
    import_ids = extract_exports(practice_id, attempt)
    validated = validate_exports(practice_id, import_ids)
    transformed = transform_exports(practice_id, import_ids)
    decisions = check_approval(practice_id, import_ids)
    # `task.practice_id` is rendered before execute: the waiting task is labelled with its practice
    # (a label from the context renders only when a task finishes, and this one parks first).
    approved = ApproveImports(task_id="approve_imports", practice_id=practice_id, decisions=decisions,
                              map_index_template="{{ task.practice_id }}")
    loaded = load_patients(practice_id, import_ids)
    reported = report_imports(practice_id, import_ids)
    validated >> transformed >> decisions >> approved >> loaded >> reported


@dag(
    schedule=CronDataIntervalTimetable(_SCHEDULE, timezone=_TIMEZONE),
    start_date=pendulum.datetime(2026, 1, 1, tz=_TIMEZONE),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["patient_import", "genesis", "cash_practice"],
    default_args={"retries": _RETRIES, "retry_delay": _RETRY_DELAY, "retry_exponential_backoff": True,
                  "max_retry_delay": timedelta(minutes=10)},
    params={
        # Optional (null allowed) so that the trigger form does not block an empty practice.
        "practice_id": Param(None, type=["null", "string"], title="Practice", examples=_registered_practice_ids(),
                             description="Practice id from the registry; "
                                         "empty imports every practice's waiting exports."),
        "export_file": Param(None, type=["null", "string"], title="Export file",
                             description="Absolute path (or storage URL) of one export to import "
                                         "(copied, never moved or changed). "
                                         "Empty: import what waits in the inboxes."),
        "exported_on": Param(None, type=["null", "string"], format="date", title="Export date",
                             description="YYYY-MM-DD. Empty: a date in the file name, else the day the file landed."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Validate and report every outcome without changing any patient or file area."),
    },
)
def patient_import() -> None:
    import_practice.expand_kwargs(plan_imports())


patient_import()
