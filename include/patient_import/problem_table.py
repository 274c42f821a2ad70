"""An import's problems as columns, with warnings capped (SPEC §4, §7 "Memory is bounded").

A file of 250,000 rows with nine invalid optional values each carries 2.25 million warnings: as
one Python object each they need gigabytes. Here they are a DataFrame (`listed`) in report order
(row, then field, then code; file problems first) and, for the warnings beyond the first
`LISTED_PER_CODE_AND_FIELD` of one code and field, only their number (`omitted`). Errors and
skips are never capped. The store and the JSON report hold what `listed` holds, and the totals
of every code and field (`counts()`, the report's `problem_counts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from include.patient_import import problems as p
from include.patient_import.schema import ACCOUNT_NUMBER_PATTERN

COLUMNS = p.PROBLEM_COLUMNS
# Per (code, field) of severity `warning`: the first ones by row are listed, the rest counted.
LISTED_PER_CODE_AND_FIELD = 1_000
_GROUP = ["code", "field", "severity"]
_COUNT_COLUMNS = [*_GROUP, "count"]


def identifying(accounts: pd.Series) -> pd.Series:
    """The account numbers that identify a row (schema.ACCOUNT_NUMBER_PATTERN, as `Problem` keeps
    them); None for the rest, which are whatever the cell held (a note, a whole row split on the
    wrong delimiter, SPEC §4)."""
    valid = accounts.str.fullmatch(ACCOUNT_NUMBER_PATTERN, na=False).astype(bool)
    return accounts.where(valid, None)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype="Int64" if name == "row" else "object") for name in COLUMNS})


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({name: frame[name] if name in frame else None for name in COLUMNS}, index=frame.index)
    for name in COLUMNS[1:]:
        out[name] = out[name].astype("object").where(out[name].notna(), None)
    out["row"] = out["row"].astype("Int64")
    return out


def _in_report_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Problem.sort_key, on columns: file problems first, then by row, field, code (stable)."""
    keys = pd.DataFrame({"has_row": frame["row"].notna(), "row": frame["row"].fillna(0).astype("int64"),
                         "field": frame["field"].fillna(""), "code": frame["code"]}, index=frame.index)
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def _add_counts(*frames: pd.DataFrame) -> pd.DataFrame:
    parts = [f for f in frames if len(f)]
    if not parts:
        return pd.DataFrame({name: pd.Series([], dtype="int64" if name == "count" else "object")
                             for name in _COUNT_COLUMNS})
    both = pd.concat(parts, ignore_index=True)
    return (both.groupby(_GROUP, dropna=False, sort=True)["count"].sum().astype("int64").reset_index()
            [_COUNT_COLUMNS])


class ProblemTable:
    """The problems of one import: `listed` (a DataFrame of `COLUMNS` in report order) and
    `omitted` (code, field, severity, count: warnings beyond the cap, not listed).

    Built with `ProblemTable.of(...)` from Problems or a frame (capped there), combined with `+`.
    Iterating yields `Problem` objects, one at a time.
    """

    def __init__(self, listed: pd.DataFrame | None = None, omitted: pd.DataFrame | None = None) -> None:
        self.listed = _empty() if listed is None else listed
        self.omitted = _add_counts() if omitted is None else omitted

    @classmethod
    def of(cls, problems: "ProblemTable | pd.DataFrame | Iterable[p.Problem]") -> "ProblemTable":
        """A table from Problems or a frame of (some of) `COLUMNS`; warnings over the cap are counted."""
        if isinstance(problems, ProblemTable):
            return problems
        if not isinstance(problems, pd.DataFrame):
            items = list(problems)
            problems = pd.DataFrame([[getattr(x, name) for name in COLUMNS] for x in items], columns=list(COLUMNS),
                                    dtype="object") if items else _empty()
        return cls._capped(_typed(problems))

    @classmethod
    def of_rows(cls, rows, *, code, message, account_numbers=None, field: str | np.ndarray | None = None,
                severity: str | None = None) -> "ProblemTable":
        """Problems of many rows at once: `rows` and `account_numbers` are arrays, `code`,
        `message` and `field` an array or one value for all; the severity follows from the code
        (SPEC §4)."""
        rows = np.asarray(rows, dtype="int64")
        count = len(rows)
        codes = pd.Series(code if not isinstance(code, str) else [code] * count, dtype="object")
        if severity is None:
            severity = codes.map({c: str(p.severity_of(c)) for c in set(codes)})
        frame = pd.DataFrame({
            "row": rows,
            "account_number": None if account_numbers is None else pd.Series(account_numbers, dtype="object"),
            "field": field, "code": codes, "severity": severity,
            "message": message if isinstance(message, str) else pd.Series(message, dtype="object")})
        if account_numbers is not None:
            # Only a valid account number identifies a row (as Problem keeps it, SPEC §4).
            frame["account_number"] = identifying(frame["account_number"])
        return cls._capped(_typed(frame))

    @classmethod
    def _capped(cls, frame: pd.DataFrame) -> "ProblemTable":
        frame = _in_report_order(frame)
        warning = frame["severity"].eq(str(p.Severity.WARNING))
        if int(warning.sum()) <= LISTED_PER_CODE_AND_FIELD:
            return cls(frame)
        rank = frame[warning].groupby(["code", "field"], dropna=False, sort=False).cumcount()
        over = pd.Series(False, index=frame.index)
        over[rank.index] = rank.to_numpy() >= LISTED_PER_CODE_AND_FIELD
        omitted = frame.loc[over, _GROUP].assign(count=1)
        return cls(frame[~over].reset_index(drop=True), _add_counts(omitted))

    def __add__(self, other) -> "ProblemTable":
        other = ProblemTable.of(other)
        if not len(other.listed) and not len(other.omitted):
            return self
        combined = ProblemTable._capped(pd.concat([self.listed, other.listed], ignore_index=True))
        return ProblemTable(combined.listed, _add_counts(self.omitted, other.omitted, combined.omitted))

    def where(self, keep) -> "ProblemTable":
        """The listed problems where `keep` (booleans, one per listed problem) holds."""
        return ProblemTable(self.listed[np.asarray(keep, dtype=bool)].reset_index(drop=True), self.omitted)

    def with_codes(self, codes: Iterable[str]) -> "ProblemTable":
        codes = list(codes)
        return ProblemTable(self.listed[self.listed["code"].isin(codes)].reset_index(drop=True),
                            self.omitted[self.omitted["code"].isin(codes)].reset_index(drop=True))

    def without(self, code: str) -> "ProblemTable":
        return ProblemTable(self.listed[self.listed["code"] != code].reset_index(drop=True),
                            self.omitted[self.omitted["code"] != code].reset_index(drop=True))

    def counts(self) -> list[dict]:
        """The report's `problem_counts`: per code and field, how many were found (`total`) and how
        many are listed (`listed`; fewer only for warnings over the cap), ordered by code, field."""
        listed = self.listed[_GROUP].assign(count=1)
        totals = _add_counts(listed, self.omitted).rename(columns={"count": "total"})
        shown = _add_counts(listed).rename(columns={"count": "listed"})
        merged = totals.merge(shown, on=_GROUP, how="left")
        merged["listed"] = merged["listed"].fillna(0).astype("int64")
        merged = (merged.assign(_field=merged["field"].astype("object").fillna(""))
                  .sort_values(["code", "_field"], kind="stable"))
        return [{"code": code, "field": None if pd.isna(field) else field, "severity": severity,
                 "listed": int(listed_), "total": int(total)}
                for code, field, severity, total, listed_ in
                merged[["code", "field", "severity", "total", "listed"]].itertuples(index=False, name=None)]

    def severity_summary(self) -> str:
        """'4 errors, 48 warnings, 2 info': what a log line says of the problems (counts only)."""
        totals = {str(s): 0 for s in p.Severity}
        for item in self.counts():
            totals[item["severity"]] = totals.get(item["severity"], 0) + int(item["total"])
        return f"{totals['error']} errors, {totals['warning']} warnings, {totals['info']} info"

    def __iter__(self) -> Iterator[p.Problem]:
        for row, account, field, code, severity, message in self.listed.itertuples(index=False, name=None):
            yield p.Problem(code=code, message=message, row=None if pd.isna(row) else int(row),
                            account_number=account, field=field, severity=severity)

    def __len__(self) -> int:
        return len(self.listed)

    def __eq__(self, other) -> bool:
        if isinstance(other, ProblemTable):
            return list(self) == list(other) and self.counts() == other.counts()
        if isinstance(other, (list, tuple)):
            return list(self) == list(other) and not len(self.omitted)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # unhashable on purpose: mutable frames inside

    def __repr__(self) -> str:
        return f"ProblemTable({len(self.listed)} listed, {int(self.omitted['count'].sum())} omitted)"

    # ---- staging: the listed problems as Parquet, the omitted counts beside them

    def omitted_columns(self) -> dict[str, list]:
        return {name: [None if pd.isna(v) else (int(v) if name == "count" else v) for v in self.omitted[name]]
                for name in _COUNT_COLUMNS}

    @classmethod
    def from_omitted_columns(cls, listed: pd.DataFrame, omitted: dict[str, list] | None) -> "ProblemTable":
        counts = pd.DataFrame(omitted or {}, columns=_COUNT_COLUMNS)
        if not len(listed):
            listed = _empty()
        counts["count"] = counts["count"].astype("int64")
        return cls(_typed(listed), _add_counts(counts.astype({"code": "object", "field": "object",
                                                              "severity": "object"})))
