"""Approval (SPEC §8): whether an import waits for a person before its load, and the answer.

After transform, `assess_imports` decides each of a practice's imports' would-be outcomes against
the store without writing (`patients.decide_against_store`, the decision the load itself applies),
compares them with the practice's `approval` thresholds (`rules.approval_reasons`) and records the
decision in `imports.approval`. The DAG's approval step waits only when an import's decision says
so; `record_answers` records what the person (or the timeout) answered where it is given, with its
audit entry, and the load rejects an import that waited and was not approved
(`rules.approval_rejection`: `not_approved`, `approval_timed_out`), changing no patient.

Everything here is counts, codes, shares and field names: no patient value reaches the decision,
the approver's text, a log or an XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone

import pandas as pd
from sqlalchemy.engine import Engine

from include.patient_import import audit, records
from include.patient_import import problems as p
from include.patient_import.patients import count_patients, decided_rows
from include.patient_import.practices import Practice, load_practices
from include.patient_import.problems import Counts
from include.patient_import.rules import CHANGED_FIELDS, OUTCOME, Answer, approval_reasons, field_counts
from include.patient_import.staging import Job, has_validated_rows, load_validation, validated_row_blocks

log = logging.getLogger(__name__)

_NOBODY = pd.Index([], dtype="object")


def _possible_duplicates(validation) -> int:
    """The import's `possible_duplicate_patient` warnings, listed or only counted (0 when the
    duplicate check has not run)."""
    return sum(item["total"] for item in validation.problems.counts() if item["code"] == p.POSSIBLE_DUPLICATE_PATIENT)


def _not_waiting(import_id: str, practice_id: str, why: str) -> dict:
    return {"import_id": import_id, "practice_id": practice_id, "waits": False, "why_not": why,
            "reasons": [], "counts": None}


def assess(engine: Engine, job: Job, practice: Practice | None,
           earlier: pd.Index = _NOBODY) -> tuple[dict, pd.Index]:
    """One import's approval decision (see `assess_imports`), from its staged validation, and the
    account numbers it would insert. `earlier`: those the practice's imports decided before it in
    the same run would insert (not stored yet; they take capacity first)."""
    if practice is None or practice.approval is None:
        return _not_waiting(job.import_id, job.practice_id, "the practice sets no approval thresholds"), _NOBODY
    if job.dry_run:
        return _not_waiting(job.import_id, job.practice_id, "a dry run changes no patient"), _NOBODY
    validation = load_validation(job.import_id, rows=False)  # the rows a block at a time, below
    if validation.rejection is not None or not has_validated_rows(job.import_id):
        return (_not_waiting(job.import_id, job.practice_id, "the import is rejected; nothing would be loaded"),
                _NOBODY)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every block's read and the counts: approval takes no lock, and
            # under READ COMMITTED an import of the practice committing between two blocks would
            # have the first counted against the store before it and the rest against the store
            # after. (SQLite's transaction already reads one state of the database.)
            conn.execution_options(isolation_level="REPEATABLE READ")
        # Decided a block at a time against each block's stored patients, as the load decides;
        # only what the counts read is kept of each block.
        decided = decided_rows(conn, practice, validated_row_blocks(job.import_id), job.export_date,
                               [OUTCOME, "account_number", CHANGED_FIELDS])
        stored = count_patients(conn, practice.id)
        previous = records.last_completed_columns(conn, practice.id, before=job.import_id)
    counts = Counts.of(decided[OUTCOME])
    inserted = pd.Index(decided.loc[decided[OUTCOME] == p.INSERTED, "account_number"].unique(), dtype="object")
    reasons = approval_reasons(
        practice.approval, counts=counts, stored=stored, capacity=practice.capacity, columns=validation.columns,
        previous_columns=previous[1] if previous else None, previous_import=previous[0] if previous else None,
        possible_duplicates=_possible_duplicates(validation), earlier_inserts=len(earlier.difference(inserted)))
    return {
        "import_id": job.import_id, "practice_id": job.practice_id, "waits": bool(reasons),
        "reasons": reasons, "counts": counts.as_dict(), "stored": stored, "capacity": practice.capacity,
        # The per-field counts of the would-be updates (`changes.fields`, {"address1": 37, ...}).
        "fields": field_counts(decided),
        "timeout_hours": practice.approval.timeout_hours,
    }, inserted


def _settled(engine: Engine, import_id: str) -> dict | None:
    """The recorded decision of an import that is loaded or answered: it stands as it is (a
    cleared `check_approval` must neither re-decide against a store the load changed nor erase the
    answer). None when the decision may still be made (again)."""
    with engine.connect() as conn:
        record = records.get_import(conn, import_id)
    recorded = records.decision_of(record)
    loaded = record is not None and record["loaded_at"] is not None
    if recorded is not None and (loaded or recorded.get("answer")):
        return recorded
    if record is not None and loaded:
        return _not_waiting(import_id, record["practice_id"], "the import is already loaded")
    return None


def assess_imports(engine: Engine, import_ids: Sequence[str]) -> list[dict]:
    """The approval step after transform (SPEC §8) for a practice's imports of one run, in export
    order: would each import, loaded after the ones before it, go over one of its practice's
    `approval` thresholds? Decides every row's outcome against the store without writing and
    records the decision in `imports.approval`. Counts are against the store as it is now, before
    any of the imports is loaded; the capacity reason also counts the new patients of the imports
    before it (`rules.approval_reasons`' `earlier_inserts`). An import already loaded or answered
    keeps its recorded decision: safe to run again.

    Returns per import {"import_id", "practice_id", "waits": bool, "reasons": [{"code", "message",
    figures}], "counts": would-be {read, inserted, updated, unchanged, skipped, rejected} or None,
    "stored", "capacity", "fields" (per field, how many would-be updated patients it changes),
    "timeout_hours"}; a decision that does not wait has "why_not" instead of the figures; a
    recorded one also has "answer", "by" and "answered_at". Counts, codes and field names only.
    """
    practices = load_practices()
    decisions = []
    earlier = _NOBODY
    for import_id in import_ids:
        settled = _settled(engine, import_id)
        if settled is not None:
            log.info("import %s: approval already %s; the decision stands", import_id,
                     settled.get("answer") or "settled (loaded)")
            decisions.append(settled)
            continue
        job = Job.load(import_id)
        decision, inserted = assess(engine, job, practices.get(job.practice_id), earlier)
        earlier = earlier.union(inserted)
        records.set_approval(engine, import_id, {**decision, "answer": None, "by": None, "answered_at": None})
        if decision["waits"]:
            log.info("import %s waits for approval: %s", import_id,
                     ", ".join(r["code"] for r in decision["reasons"]))
        else:
            log.info("import %s does not wait for approval: %s", import_id,
                     decision["why_not"] if "why_not" in decision else "under every threshold")
        decisions.append(decision)
    return decisions


def assess_import(engine: Engine, import_id: str) -> dict:
    """`assess_imports` for one import: the approval stage of an in-process run (`pipeline.py`)."""
    [decision] = assess_imports(engine, [import_id])
    return decision


def record_answers(engine: Engine, import_ids: Sequence[str], answer: Answer | str, by: str | None = None,
                   responded_at: datetime | None = None) -> list[dict | None]:
    """Record the answer to the imports that wait (`rules.Answer`; `by`: the approver's user name;
    `responded_at`: when it was given, e.g. the HITL response time; None: now), each with its audit
    entry (`approved` / `not_approved`), all in one transaction. The first answer stands: an import
    already answered, or that does not wait, is left as it is.

    Returns the recorded approval of each import (None where none was decided). Raises ValueError
    for an answer that is not a `rules.Answer`.
    """
    try:
        answer = Answer(answer)
    except ValueError:
        raise ValueError(f"unknown approval answer {answer!r}; known: {[a.value for a in Answer]}") from None
    at = (responded_at or datetime.now(timezone.utc)).isoformat()
    recorded: list[dict | None] = []
    with engine.begin() as conn:
        for import_id in import_ids:
            approval = records.approval_of(conn, import_id)
            if approval and approval.get("waits") and not approval.get("answer"):
                approval.update(answer=answer.value, by=by, answered_at=at)
                records.set_approval(conn, import_id, approval)
                audit.record(conn, import_id, audit.APPROVED if answer is Answer.APPROVED else audit.NOT_APPROVED,
                             by, f"{answer.value}: " + ", ".join(r["code"] for r in approval["reasons"]))
                log.info("import %s: approval %s%s", import_id, answer.value, f" by {by}" if by else "")
            recorded.append(approval)
    return recorded


def awaiting(decisions: list[dict]) -> list[dict]:
    """The decisions (`assess_imports`) that wait for an answer not given yet."""
    return [d for d in decisions or [] if d.get("waits") and not d.get("answer")]


# What every approver's text says first: a practice's backlog is decided before any of it loads.
STORE_NOW = ("Counts are against the patient store as it is now, before any of the practice's imports of this "
             "run is loaded: an import after another of the same practice may count as new the patients the "
             "earlier one would insert. Only the capacity reason (`capacity_nearly_full`) adds the new patients of "
             "the imports before it.")


def approver_text(decisions: list[dict], results_url: str | None = None, attempt: int = 1) -> str:
    """What the approver reads (Markdown) for a practice's waiting imports: per import its
    would-be counts, the reasons it waits, the per-field counts when known and a link to its
    Import Results page (`results_url`: the plugin's base URL, e.g. `http://host/import-results`).
    Counts, codes and field names only: no patient value.

    `attempt` > 1 (the approval step's try number) opens with a note that the question is asked
    again: Airflow clears an earlier try's answer when a retry asks (README "Approval")."""
    lines = [STORE_NOW]
    if attempt > 1:
        # Airflow 3.3 can fail the try that received an answer given within seconds of the pause
        # (README "Approval"); the retry asks again and Airflow has cleared the earlier answer.
        lines.insert(0, f"**Asked again (try {attempt}):** an earlier try of this approval ended before an "
                        "answer reached the import; if you answered it, please answer again.")
    for d in awaiting(decisions):
        lines.append(f"### Import `{d['import_id']}`")
        if results_url:
            lines.append(f"[Import Results page]({results_url.rstrip('/')}/imports/{d['import_id']})")
        c = d["counts"]
        lines.append(f"Dry run against the store now: **{c['inserted']} inserted, {c['updated']} updated**, "
                     f"{c['unchanged']} unchanged, {c['skipped']} skipped, {c['rejected']} rejected "
                     f"(of {c['read']} read); {d['stored']} patients stored, capacity {d['capacity']}.")
        lines.append("Waiting because:")
        lines += [f"- `{r['code']}`: {r['message']}" for r in d["reasons"]]
        if d.get("fields"):  # per-field counts of the would-be updates (`changes.fields`)
            lines.append("Updated fields: " + ", ".join(f"{name} {n}" for name, n in sorted(d["fields"].items())))
        lines.append(f"No answer within {d['timeout_hours']:g} hours rejects it (`approval_timed_out`); "
                     "Reject rejects it (`not_approved`). Either way no patient changes.")
        lines.append("")
    return "\n\n".join(lines).strip()
