"""Approval (SPEC §8): whether an import waits for a person before its load, and the answer.

After transform, `assess_import` decides each import's would-be outcomes against the store
without writing (`patients.decide_against_store`, the decision the load itself applies), compares
them with the practice's `approval` thresholds (`rules.approval_reasons`) and records the decision
in `imports.approval`. The DAG's approval step waits only when an import's decision says so;
`record_answer` records what the person (or the timeout) answered, and the load rejects an import
that waited and was not approved (`rules.approval_rejection`: `not_approved`,
`approval_timed_out`), changing no patient.

Everything here is counts, codes, shares and field names: no patient value reaches the decision,
the approver's text, a log or an XCom.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy.engine import Engine

from include.patient_import import audit, records
from include.patient_import import problems as p
from include.patient_import.patients import count_patients, decide_against_store
from include.patient_import.practices import Practice, load_practices
from include.patient_import.problems import Counts
from include.patient_import.rules import OUTCOME, approval_reasons, field_counts
from include.patient_import.staging import Job, load_validation

log = logging.getLogger(__name__)

APPROVED, REJECTED, TIMED_OUT = "approved", "rejected", "timed_out"
ANSWERS = (APPROVED, REJECTED, TIMED_OUT)


def _possible_duplicates(validation) -> int:
    """The import's `possible_duplicate_patient` warnings, listed or only counted (0 when the
    duplicate check has not run)."""
    return sum(item["total"] for item in validation.problems.counts() if item["code"] == p.POSSIBLE_DUPLICATE_PATIENT)


def _not_waiting(import_id: str, practice_id: str, why: str) -> dict:
    return {"import_id": import_id, "practice_id": practice_id, "waits": False, "why_not": why,
            "reasons": [], "counts": None}


def assess(engine: Engine, job: Job, practice: Practice | None) -> dict:
    """One import's approval decision (see `assess_import`), from its staged validation."""
    if practice is None or practice.approval is None:
        return _not_waiting(job.import_id, job.practice_id, "the practice sets no approval thresholds")
    if job.dry_run:
        return _not_waiting(job.import_id, job.practice_id, "a dry run changes no patient")
    validation = load_validation(job.import_id)
    if validation.rejection is not None or validation.frame is None:
        return _not_waiting(job.import_id, job.practice_id, "the import is rejected; nothing would be loaded")
    with engine.connect() as conn:
        decided = decide_against_store(conn, practice, validation.frame, job.export_date)
        stored = count_patients(conn, practice.id)
        previous = records.last_completed_columns(conn, practice.id, before=job.import_id)
    counts = Counts.of(decided[OUTCOME])
    reasons = approval_reasons(
        practice.approval, counts=counts, stored=stored, capacity=practice.capacity, columns=validation.columns,
        previous_columns=previous[1] if previous else None, previous_import=previous[0] if previous else None,
        possible_duplicates=_possible_duplicates(validation))
    return {
        "import_id": job.import_id, "practice_id": job.practice_id, "waits": bool(reasons),
        "reasons": reasons, "counts": counts.as_dict(), "stored": stored, "capacity": practice.capacity,
        # The per-field counts of the would-be updates (`changes.fields`, {"address1": 37, ...}).
        "fields": field_counts(decided),
        "timeout_hours": practice.approval.timeout_hours,
    }


def assess_import(engine: Engine, import_id: str) -> dict:
    """The approval step after transform (SPEC §8): would this import, loaded now, go over one of
    its practice's `approval` thresholds? Decides every row's outcome against the store without
    writing and records the decision in `imports.approval`.

    Returns {"import_id", "practice_id", "waits": bool, "reasons": [{"code", "message", figures}],
    "counts": would-be {read, inserted, updated, unchanged, skipped, rejected} or None, "stored",
    "capacity", "fields" (per field, how many would-be updated patients it changes),
    "timeout_hours"}; a decision that does not wait has "why_not" instead of the figures.
    Counts, codes and field names only.
    """
    job = Job.load(import_id)
    decision = assess(engine, job, load_practices().get(job.practice_id))
    records.set_approval(engine, import_id, {**decision, "answer": None, "by": None, "answered_at": None})
    if decision["waits"]:
        log.info("import %s waits for approval: %s", import_id, ", ".join(r["code"] for r in decision["reasons"]))
    else:
        log.info("import %s does not wait for approval: %s", import_id, decision["why_not"] if "why_not" in decision
                 else "under every threshold")
    return decision


def record_answer(engine: Engine, import_id: str, answer: str, by: str | None = None) -> dict | None:
    """Record the answer to an import that waits (`approved`, `rejected` or `timed_out`; `by`: the
    approver's user name). The first answer stands: a repeated call changes nothing. Returns the
    recorded approval (None when the import has none). Raises ValueError for another answer."""
    if answer not in ANSWERS:
        raise ValueError(f"unknown approval answer {answer!r}; known: {ANSWERS}")
    with engine.connect() as conn:
        approval = records.approval_of(conn, import_id)
    if not approval or not approval.get("waits") or approval.get("answer"):
        return approval
    approval.update(answer=answer, by=by, answered_at=datetime.now(timezone.utc).isoformat())
    records.set_approval(engine, import_id, approval)
    audit.record(engine, import_id, audit.APPROVED if answer == "approved" else audit.NOT_APPROVED, by,
                 f"{answer}: " + ", ".join(r["code"] for r in approval["reasons"]))
    log.info("import %s: approval %s%s", import_id, answer, f" by {by}" if by else "")
    return approval


def approver_text(decisions: list[dict], results_url: str | None = None, attempt: int = 1) -> str:
    """What the approver reads (Markdown) for a practice's waiting imports: per import its
    would-be counts, the reasons it waits, the per-field counts when known and a link to its
    Import Results page (`results_url`: the plugin's base URL, e.g. `http://host/import-results`).
    Counts, codes and field names only: no patient value.

    `attempt` > 1 (the approval step's try number) opens with a note that the question is asked
    again: Airflow clears an earlier try's answer when a retry asks (README "Approval")."""
    lines = []
    if attempt > 1:
        # Airflow 3.3 can fail the try that received an answer given within seconds of the pause
        # (README "Approval"); the retry asks again and Airflow has cleared the earlier answer.
        lines.append(f"**Asked again (try {attempt}):** an earlier try of this approval ended before an "
                     "answer reached the import; if you answered it, please answer again.")
    for d in decisions:
        if not d.get("waits"):
            continue
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
