"""Bulk API 2.0 ingest jobs: one CSV upload per job, processed in chunks, results as CSV.

Speed is the point here (a benchmark pushes a million rows through): the upload is parsed
once with the C ``csv`` reader, each row costs a few dict operations, the store lock is taken
per chunk of rows, and per-row outcomes are kept compactly (a status byte, the id, sparse
error texts). Result CSVs are built only when asked for, by re-parsing the kept upload, so an
unread result costs nothing.
"""

from __future__ import annotations

import csv
import io
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tieout.sandbox.salesforce.faults import Fault
from tieout.sandbox.salesforce.schema import (
    FAST_PATH_ERRORS,
    ColumnConverter,
    Converter,
    FieldError,
    FieldSpec,
    format_datetime,
)
from tieout.sandbox.salesforce.store import ObjectStore, RecordError, Store

__all__ = [
    "COLUMN_DELIMITERS",
    "LINE_ENDINGS",
    "OPERATIONS",
    "IngestJob",
    "JobState",
    "ResultKind",
    "process_job",
    "result_csv",
]

COLUMN_DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
OPERATIONS = ("insert", "upsert", "update", "delete")
CHUNK_ROWS = 10_000  # rows applied per store-lock hold; also the progress-report granularity

_UNPROCESSED, _CREATED, _UPDATED, _FAILED = 0, 1, 2, 3


class JobState(StrEnum):
    OPEN = "Open"
    UPLOAD_COMPLETE = "UploadComplete"
    IN_PROGRESS = "InProgress"
    JOB_COMPLETE = "JobComplete"
    FAILED = "Failed"
    ABORTED = "Aborted"


FINAL_STATES = frozenset({JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED})


class ResultKind(StrEnum):
    SUCCESSFUL = "successfulResults"
    FAILED = "failedResults"
    UNPROCESSED = "unprocessedrecords"


class IngestJob:
    """One ingest job's settings, uploaded data, state and per-row outcomes."""

    def __init__(
        self,
        *,
        job_id: str,
        sobject: str,
        operation: str,
        external_id_field: str | None,
        column_delimiter: str,
        line_ending: str,
        api_version: str,
        created_by: str,
        created: datetime,
    ) -> None:
        self.lock = threading.Lock()
        self.id = job_id
        self.sobject = sobject
        self.operation = operation
        self.external_id_field = external_id_field
        self.column_delimiter = column_delimiter
        self.line_ending = line_ending
        self.api_version = api_version
        self.created_by = created_by
        self.created = created
        self.modified = created
        self.state = JobState.OPEN
        self.error_message: str | None = None
        self.data: str | None = None
        self.uploads = 0
        self.processed = 0
        self.failed = 0
        self.status = bytearray()
        self.ids: list[str | None] = []
        self.errors: dict[int, str] = {}
        self.processing_ms = 0
        self.fake_in_progress_polls = 0
        self.abort_requested = False
        self.partial_failure: Fault | None = None
        self.unprocessed: Fault | None = None
        self._results: dict[ResultKind, tuple[bytes, int]] = {}

    def info(self, *, poll: bool = False) -> dict[str, Any]:
        """The job-info JSON. ``poll`` lets a configured number of polls still see
        ``InProgress`` after the job finished, so clients' wait loops get exercised."""
        with self.lock:
            state = self.state
            if poll and state in FINAL_STATES and self.fake_in_progress_polls > 0:
                self.fake_in_progress_polls -= 1
                state = JobState.IN_PROGRESS
            info: dict[str, Any] = {
                "id": self.id,
                "operation": self.operation,
                "object": self.sobject,
                "createdById": self.created_by,
                "createdDate": format_datetime(self.created),
                "systemModstamp": format_datetime(self.modified),
                "state": str(state),
                "concurrencyMode": "Parallel",
                "contentType": "CSV",
                "apiVersion": float(self.api_version),
                "jobType": "V2Ingest",
                "lineEnding": self.line_ending,
                "columnDelimiter": self.column_delimiter,
                "numberRecordsProcessed": self.processed,
                "numberRecordsFailed": self.failed,
                "retries": 0,
                "totalProcessingTime": self.processing_ms,
                "apiActiveProcessingTime": self.processing_ms,
                "apexProcessingTime": 0,
            }
            if self.external_id_field:
                info["externalIdFieldName"] = self.external_id_field
            if self.error_message and state in (JobState.FAILED, JobState.ABORTED):
                info["errorMessage"] = self.error_message
            return info

    def drop_data(self) -> None:
        """Free the upload and cached results (job deleted)."""
        with self.lock:
            self.data = None
            self.ids = []
            self.status = bytearray()
            self._results.clear()


class _JobError(Exception):
    """The whole job fails (bad header, no data): state Failed with this errorMessage."""


_SKIP: Any = object()  # an empty CSV cell: Bulk leaves the field unchanged


@dataclass(frozen=True)
class _Column:
    index: int
    name: str
    convert: Converter
    fast: ColumnConverter | None


@dataclass(frozen=True)
class _Plan:
    columns: list[_Column]
    relationships: list[tuple[int, FieldSpec, str]]
    key_index: int | None
    key_field: str | None
    key_convert: Converter | None
    key_column: int | None  # position of the key among ``columns`` when it is also written
    width: int


def _reader(job: IngestJob, data: str) -> Iterator[list[str]]:
    return csv.reader(
        io.StringIO(data, newline=""), delimiter=COLUMN_DELIMITERS[job.column_delimiter]
    )


def _plan(job: IngestJob, target: ObjectStore, header: list[str]) -> _Plan:
    meta = target.meta
    columns: list[_Column] = []
    relationships: list[tuple[int, FieldSpec, str]] = []
    key_field = "Id" if job.operation in ("update", "delete") else job.external_id_field
    key_index: int | None = None
    key_column: int | None = None
    seen: set[str] = set()
    for index, raw_name in enumerate(header):
        name = raw_name.strip()
        if name.lower() in seen:
            raise _JobError(f"InvalidBatch : Duplicate field name: {name}")
        seen.add(name.lower())
        if "." in name:
            rel_name, _, parent_field = name.partition(".")
            rel = meta.relationships.get(rel_name.lower())
            if rel is None or rel.reference_to is None:
                raise _JobError(f"InvalidBatch : Field name not found : {name}")
            parent = target.store.objects[rel.reference_to].meta
            parent_spec = parent.by_lower.get(parent_field.lower())
            if parent_spec is None or not (parent_spec.external_id or parent_spec.name == "Id"):
                raise _JobError(f"InvalidBatch : Field name not found : {name}")
            relationships.append((index, rel, parent_spec.name))
            continue
        spec = meta.by_lower.get(name.lower())
        if spec is None:
            raise _JobError(f"InvalidBatch : Field name not found : {name}")
        if spec.name == key_field:
            key_index = index
            if key_field == "Id":
                continue  # the key, not a value to write
            key_column = len(columns)
        if job.operation == "delete":
            continue  # only Id matters for a delete
        columns.append(
            _Column(index, spec.name, meta.converters[spec.name], meta.column_converters[spec.name])
        )
    if key_field is not None and key_index is None:
        raise _JobError(f"InvalidBatch : Field name not found : {key_field}")
    return _Plan(
        columns=columns,
        relationships=[] if job.operation == "delete" else relationships,
        key_index=key_index,
        key_field=key_field,
        key_convert=meta.converters[key_field] if key_field else None,
        key_column=key_column,
        width=len(header),
    )


def process_job(job: IngestJob, store: Store) -> dict[str, int]:
    """Run a closed job to completion; returns row counts for the sandbox's counters.

    Rows are read from the upload a chunk at a time (all at once only when a fault must
    know the total up front), so peak memory stays near one chunk plus the stored records.
    """
    started = time.perf_counter()
    counts = {"created": 0, "updated": 0, "failed": 0, "deleted": 0, "unprocessed": 0}
    with job.lock:
        if job.state is JobState.ABORTED:
            return counts
        job.state = JobState.IN_PROGRESS
        data = job.data or ""
    target = store.objects[job.sobject]
    reader = _reader(job, data)
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise _JobError("InvalidBatch : Records not found") from None
        except csv.Error as exc:
            raise _JobError(f"InvalidBatch : {exc}") from None
        plan = _plan(job, target, header)
    except _JobError as exc:
        with job.lock:
            job.state = JobState.FAILED
            job.error_message = str(exc)
            job.processing_ms = int((time.perf_counter() - started) * 1000)
            job.modified = store.now()
        counts["unprocessed"] = sum(1 for _ in _reader(job, data)) - 1 if data else 0
        return counts

    rows: Iterator[list[str]] = (row for row in reader if row)  # skip blank lines
    limit: int | None = None
    if job.unprocessed is not None:
        all_rows = list(rows)
        limit = int(len(all_rows) * job.unprocessed.processed_fraction)
        counts["unprocessed"] = len(all_rows) - limit
        rows = iter(all_rows)
    offset = 0
    stopped = False
    try:
        while limit is None or offset < limit:
            size = CHUNK_ROWS if limit is None else min(CHUNK_ROWS, limit - offset)
            chunk = list(itertools.islice(rows, size))
            if not chunk:
                break
            if job.abort_requested:
                stopped = True
                counts["unprocessed"] += len(chunk) + sum(1 for _ in rows)
                break
            with job.lock:
                job.status.extend(bytes(len(chunk)))
                job.ids.extend([None] * len(chunk))
            with store.lock:
                chunk_counts = _apply(job, target, plan, chunk, offset, store.now())
            for key, value in chunk_counts.items():
                counts[key] += value
            with job.lock:
                job.processed += len(chunk)
                job.failed += chunk_counts["failed"]
            offset += len(chunk)
    except csv.Error as exc:
        with job.lock:
            job.error_message = f"InvalidBatch : {exc}"
        stopped = True
    with job.lock:
        job.processing_ms = int((time.perf_counter() - started) * 1000)
        job.modified = store.now()
        if job.abort_requested:
            job.state = JobState.ABORTED
            job.error_message = "Job aborted by user"
        elif stopped or limit is not None:
            job.state = JobState.FAILED
            job.error_message = (
                job.error_message or "InternalServerError : Max retry attempts exceeded"
            )
        else:
            job.state = JobState.JOB_COMPLETE
    return counts


def _convert_column(
    column: _Column, raws: Sequence[str], errors: dict[int, RecordError]
) -> tuple[Sequence[Any], bool]:
    """Stored values for one column of a chunk, and whether any cell is empty, null or bad
    (each bad cell becomes its row's error)."""
    if column.fast is not None and "" not in raws and "#N/A" not in raws:
        try:
            return column.fast(raws), False
        except FAST_PATH_ERRORS:
            pass  # some value is invalid or out of range: go value by value
    convert = column.convert
    out: list[Any] = []
    append = out.append
    for i, raw in enumerate(raws):
        if not raw:
            append(_SKIP)
        elif raw == "#N/A":
            append(None)
        else:
            try:
                append(convert(raw))
            except FieldError as exc:
                append(_SKIP)
                message = exc.message
                if exc.parse:
                    message = (
                        f"Failed to deserialize field at col {column.index + 1}. Due to, {message}"
                    )
                errors.setdefault(i, RecordError(exc.status_code, message, exc.fields))
    return out, True


def _apply(
    job: IngestJob,
    target: ObjectStore,
    plan: _Plan,
    chunk: list[list[str]],
    offset: int,
    now: datetime,
) -> dict[str, int]:
    """Apply one chunk of rows; the caller holds the store lock.

    Values are converted column by column (see ``column_converter_for``); only matching and
    writing is per row. Kept flat and local-variable heavy because it runs per row.
    """
    created = updated = failed = deleted = 0
    errors: dict[int, RecordError] = {}
    width = plan.width
    if len(set(map(len, chunk))) != 1 or len(chunk[0]) != width:
        for i, row in enumerate(chunk):
            if len(row) != width:
                errors[i] = RecordError(
                    "INVALID_FIELD", f"Row has {len(row)} columns but the header has {width}"
                )
                chunk[i] = [""] * width
    cells = list(zip(*chunk, strict=True))
    names = tuple(column.name for column in plan.columns)
    value_columns: list[Sequence[Any]] = []
    irregular = False  # some cell is empty (skip), "#N/A" (null) or bad
    for column in plan.columns:
        converted, odd = _convert_column(column, cells[column.index], errors)
        value_columns.append(converted)
        irregular = irregular or odd
    rel_columns: list[tuple[str, list[Any]]] = []
    for index, rel, parent_field in plan.relationships:
        resolved: list[Any] = []
        for i, raw in enumerate(cells[index]):
            if not raw:
                resolved.append(_SKIP)
                continue
            try:
                resolved.append(target.parent_id(rel, parent_field, raw))
            except RecordError as exc:
                resolved.append(_SKIP)
                errors.setdefault(i, exc)
        rel_columns.append((rel.name, resolved))

    key_field = plan.key_field
    keys: Sequence[Any] = ()
    if key_field is not None and plan.key_index is not None:
        if plan.key_column is not None:
            keys = value_columns[plan.key_column]
        else:  # the Id column: normalize value by value
            assert plan.key_convert is not None
            keys, _ = _convert_column(
                _Column(plan.key_index, key_field, plan.key_convert, None),
                cells[plan.key_index],
                errors,
            )

    status, ids, error_texts = job.status, job.ids, job.errors
    operation = job.operation
    rules = target.store.validation_rules.get(target.meta.name)
    rule_field = target.primary_key_field()
    rule_is_key = rule_field == key_field
    every = job.partial_failure.every if job.partial_failure else 0
    lock_code = job.partial_failure.error_code if job.partial_failure else ""
    match, insert, update = target.match, target.insert, target.update
    check = target.checker(names)
    rows = zip(*value_columns, strict=True) if value_columns else (() for _ in chunk)
    for i, row_values in enumerate(rows):
        position = offset + i
        try:
            if errors and i in errors:
                raise errors[i]
            values = dict(zip(names, row_values, strict=True))
            if irregular:
                values = {k: v for k, v in values.items() if v is not _SKIP}
            for name, resolved in rel_columns:
                if resolved[i] is not _SKIP:
                    values[name] = resolved[i]
            existing: str | None = None
            if keys:
                key = keys[i]
                if key is None or key is _SKIP:
                    raise RecordError(
                        "MISSING_ARGUMENT", f"{key_field} not specified", [key_field or ""]
                    )
                existing = match(key_field or "", key)  # by Id: raises unless it exists
                rule_key = key if rule_is_key else values.get(rule_field)
            else:
                rule_key = values.get(rule_field)
            if rules and rule_key in rules:
                raise rules[rule_key].error()
            if every and position % every == every - 1:
                raise RecordError(
                    lock_code,
                    "unable to obtain exclusive access to this record or 1 records: "
                    f"{existing or ''}",
                )
            if operation == "delete":
                assert existing is not None
                target.delete(existing)
                status[position] = _UPDATED
                ids[position] = existing
                deleted += 1
                continue
            if operation == "insert":
                existing = None
            check(values, existing)
            if existing is None:
                ids[position] = insert(values, now, nulls=irregular)
                status[position] = _CREATED
                created += 1
            else:
                update(existing, values, now, nulls=irregular)
                ids[position] = existing
                status[position] = _UPDATED
                updated += 1
        except RecordError as exc:
            status[position] = _FAILED
            error_texts[position] = exc.bulk_text()
            failed += 1
    return {"created": created, "updated": updated, "failed": failed, "deleted": deleted}


def result_csv(job: IngestJob, kind: ResultKind) -> tuple[bytes, int]:
    """The CSV for one result kind and its row count (built once per finished job)."""
    with job.lock:
        cached = job._results.get(kind)
        if cached is not None:
            return cached
        final = job.state in FINAL_STATES
        data = job.data
        status = bytes(job.status)
        ids = list(job.ids) if kind is not ResultKind.UNPROCESSED else []
        errors = dict(job.errors) if kind is ResultKind.FAILED else {}
    delimiter = COLUMN_DELIMITERS[job.column_delimiter]
    line_end = LINE_ENDINGS[job.line_ending]
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=line_end, quoting=csv.QUOTE_ALL)
    plain = csv.writer(out, delimiter=delimiter, lineterminator=line_end)
    header: list[str] = []
    rows: Iterator[list[str]] = iter(())
    if data:
        reader = _reader(job, data)
        try:
            header = next(reader)
        except (StopIteration, csv.Error):
            header = []
        else:
            rows = (row for row in reader if row)
    selected: list[tuple[str, ...]]
    if kind is ResultKind.SUCCESSFUL:
        out.write(f'"sf__Id"{delimiter}"sf__Created"{delimiter}')
        plain.writerow(header)
        selected = [
            (ids[i] or "", "true" if st == _CREATED else "false", *row)
            for i, (st, row) in enumerate(zip(status, rows, strict=False))
            if st in (_CREATED, _UPDATED)
        ]
    elif kind is ResultKind.FAILED:
        out.write(f'"sf__Id"{delimiter}"sf__Error"{delimiter}')
        plain.writerow(header)
        selected = [
            (ids[i] or "", errors.get(i, ""), *row)
            for i, (st, row) in enumerate(zip(status, rows, strict=False))
            if st == _FAILED
        ]
    else:
        plain.writerow(header)
        selected = [
            tuple(row) for st, row in zip(_pad(status), rows, strict=False) if st == _UNPROCESSED
        ]
    writer.writerows(selected)
    result = (out.getvalue().encode("utf-8"), len(selected))
    if final:
        with job.lock:
            if job.data is not None:
                job._results[kind] = result
    return result


def _pad(status: bytes) -> Iterator[int]:
    """Row statuses, then 'unprocessed' for every row past them (never reached, or no plan)."""
    yield from status
    while True:
        yield _UNPROCESSED
