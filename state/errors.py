"""The store's exceptions, in one tree:

    StoreError
    ├── JobNotFound        no job with that id (or prefix)
    ├── AmbiguousJobId     a prefix matches several jobs
    ├── StaleJob           compare-and-set lost: someone else changed the job first
    │   └── Fenced         …because another daemon has taken the job over (shared table)
    ├── DuplicateIntake    that file (path, size, mtime) is already a job's source
    └── DatabaseRefused    the database is missing, corrupt, too new, or not ours
IllegalTransition (state.lifecycle) is raised for an event the life cycle forbids.
"""

from __future__ import annotations


class StoreError(Exception):
    pass


class JobNotFound(StoreError):
    pass


class AmbiguousJobId(StoreError):
    def __init__(self, prefix: str, matches: list[str]) -> None:
        self.prefix, self.matches = prefix, matches
        shown = ", ".join(matches[:5]) + (" …" if len(matches) > 5 else "")
        super().__init__(f"job id prefix '{prefix}' is ambiguous: it matches {shown}")


class StaleJob(StoreError):
    def __init__(self, job_id: str, expected: int | None, found: int | None) -> None:
        self.job_id, self.expected, self.found = job_id, expected, found
        super().__init__(
            f"job {job_id} changed concurrently (expected version {expected}, found {found})"
        )


class Fenced(StaleJob):
    """A write by a daemon that no longer holds the job (its lease ran out and another
    daemon took the job over): it matched no row, and nothing was written."""

    def __init__(self, job_id: str, owner: str) -> None:
        StoreError.__init__(self, f"job {job_id} is no longer held by daemon {owner[:8]}")
        self.job_id, self.expected, self.found = job_id, None, None


class DuplicateIntake(StoreError):
    def __init__(self, intake_key: str) -> None:
        self.intake_key = intake_key
        super().__init__(f"{intake_key.split('|')[0]} is already the source of a job")


class DatabaseRefused(StoreError):
    """The database cannot be used; `reason` is one of missing, corrupt, too_new, not_ours."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
