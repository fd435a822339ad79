-- Reads by trace id (explain, /awooop/traces, the console's trace page) find the trace's streams by
-- their first event, then read those streams by the stream key: every row of a stream carries its
-- stream's trace id (journal/StreamWriter.ts, StreamBase), so one index entry per stream is enough
-- where step_journal_trace_idx had one per event. Measured: −6% of Postgres's instructions for a
-- request's five events (BENCHMARKS.md, session 7). The archive keeps its index on every event: a
-- stream's first event may be archived while its last one stays live, and archiving is off the
-- request path.
CREATE INDEX IF NOT EXISTS step_journal_trace_start_idx ON step_journal (trace_id) WHERE stream_position = 0 AND trace_id IS NOT NULL;
DROP INDEX IF EXISTS step_journal_trace_idx;
