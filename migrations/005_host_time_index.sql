-- Explain's time-window lookups (breaker transitions and other host events) read host streams only;
-- run streams are read by stream id and position (the unique key). Indexing every run event by
-- time cost ~18% of Postgres's CPU per journal row (BENCHMARKS.md), so the index covers host
-- streams only, and the queries say so (src/projections/History.ts).
DROP INDEX IF EXISTS step_journal_stream_time_idx;
CREATE INDEX IF NOT EXISTS step_journal_host_time_idx ON step_journal (stream_id, occurred_at) WHERE stream_id LIKE 'host-%';
DROP INDEX IF EXISTS step_journal_archive_stream_time_idx;
CREATE INDEX IF NOT EXISTS step_journal_archive_host_time_idx ON step_journal_archive (stream_id, occurred_at) WHERE stream_id LIKE 'host-%';
