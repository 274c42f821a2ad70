"""The throughput benchmark (issue #6): the pipeline against the SQL floor and the peers a user
would pick instead (naive pandas, dlt), on SQLite and PostgreSQL. `make bench`; see
docs/performance.md."""
