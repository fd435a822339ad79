-- The step journal: one row per routing step. Append-only; every projection is a fold over it.
CREATE TABLE IF NOT EXISTS step_journal (
  global_position bigserial PRIMARY KEY,
  stream_id       text        NOT NULL,            -- "run-<uuid>" or "host-<name>" or "lane-<name>"
  stream_position integer     NOT NULL,            -- 0-based position within the stream
  trace_id        text,
  project_id      text,
  lane            text,
  type            text        NOT NULL,
  data            jsonb       NOT NULL,
  occurred_at     timestamptz NOT NULL,
  recorded_at     timestamptz NOT NULL DEFAULT now(),
  -- The writing transaction: readers following the log in commit order read only below
  -- pg_snapshot_xmin(pg_current_snapshot()), so a late-committing transaction is never skipped.
  transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
  CONSTRAINT step_journal_stream_unique UNIQUE (stream_id, stream_position)
);

CREATE INDEX IF NOT EXISTS step_journal_trace_idx ON step_journal (trace_id, global_position);
CREATE INDEX IF NOT EXISTS step_journal_tx_idx ON step_journal (transaction_id, global_position);
