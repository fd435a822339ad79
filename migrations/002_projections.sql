-- Projections of the step journal (src/projections/): each table is a fold over journal events,
-- kept current by the projector and rebuildable from the journal alone (`npm run journal -- rebuild`).

-- One row per run stream ("run-<uuid>"). `last_position` is the last stream position folded in:
-- an event at or below it is a re-delivery and changes nothing.
CREATE TABLE IF NOT EXISTS run_state (
  stream_id          text PRIMARY KEY,
  run_id             text        NOT NULL,
  trace_id           text,
  project_id         text,
  lane               text,
  status             text        NOT NULL,          -- running | completed | failed (later issues may add more)
  operation          text,
  stream             boolean,
  intent             text,
  requested_model    text,
  assigned_model     text,
  model              text,                          -- the model that answered (the lane's, or a paid provider's)
  attempts           integer     NOT NULL,
  endpoint           text,                          -- the host or provider that answered
  provider_tier      text,                          -- ollama | paid
  provider           text,                          -- ollama | gemini | claude ...
  input_tokens       bigint,                        -- NULL = not reported (never 0 for unknown)
  output_tokens      bigint,
  cost_usd           numeric,                       -- NULL = unknown
  completed_cost_usd numeric,
  settled_cost_usd   numeric     NOT NULL,
  settlements        integer     NOT NULL,
  unknown_settlements integer    NOT NULL,          -- paid calls settled without a known cost
  fallback_reason    text,                          -- why an earlier host (or Ollama as a whole) did not answer
  paid_fallback_reason text,                        -- the reason recorded with PaidFallbackRequested
  error              text,
  error_code         text,
  error_status       integer,
  started_at         timestamptz,
  finished_at        timestamptz,
  duration_ms        bigint,
  route              jsonb       NOT NULL,          -- hosts in the lane's route order, as decided
  misses             jsonb       NOT NULL,          -- hosts skipped or failed before the answer, in order
  last_position      integer     NOT NULL,
  last_event_at      timestamptz
);
-- No secondary indexes: runs are looked up by id; traces and time ranges are read from the journal
-- (indexed by trace and by stream) — every index here would slow the projector's writes.

-- One row per host stream ("host-<name>"): health, breaker, residency, maintenance.
CREATE TABLE IF NOT EXISTS host_state (
  stream_id          text PRIMARY KEY,
  host               text        NOT NULL,
  health             text        NOT NULL,          -- up | down | unknown
  last_error         text,
  breaker            text        NOT NULL,          -- closed | open | half-open
  breaker_opened_at  timestamptz,
  breaker_until      timestamptz,
  breaker_reason     text,
  resident           jsonb,
  maintenance        boolean     NOT NULL,
  maintenance_until  timestamptz,
  maintenance_reason text,
  last_position      integer     NOT NULL,
  last_event_at      timestamptz
);

-- Cost per UTC day (of the run's end) × project × lane × provider × model. Additive: the projector
-- adds each batch's contributions, so a rebuild in one pass equals the sum of incremental batches.
CREATE TABLE IF NOT EXISTS cost_ledger (
  day            date    NOT NULL,
  project_id     text    NOT NULL,
  lane           text    NOT NULL,
  provider       text    NOT NULL,                  -- "none" when no endpoint answered
  model          text    NOT NULL,
  requests       bigint  NOT NULL,
  failed         bigint  NOT NULL,
  input_tokens   bigint  NOT NULL,                  -- sums of the reported counts only
  output_tokens  bigint  NOT NULL,
  unknown_usage  bigint  NOT NULL,                  -- completed runs whose usage was not reported
  cost_usd       numeric(30, 12) NOT NULL,
  unknown_cost   bigint  NOT NULL,                  -- finished runs whose cost is unknown
  PRIMARY KEY (day, project_id, lane, provider, model)
);

-- Counters and histograms, by metric name × lane × endpoint × outcome. `buckets` holds
-- non-cumulative counts per upper bound (the bounds per metric are in src/projections/Metrics.ts),
-- plus one overflow bucket; counters have none.
CREATE TABLE IF NOT EXISTS metrics (
  name      text     NOT NULL,
  lane      text     NOT NULL,
  endpoint  text     NOT NULL,
  outcome   text     NOT NULL,
  count     bigint   NOT NULL,
  sum       bigint   NOT NULL,
  buckets   bigint[] NOT NULL,
  PRIMARY KEY (name, lane, endpoint, outcome)
);

-- Where each projector is in the journal's commit order: (transaction_id, global_position) of the
-- last event applied. Updated in the same transaction as the projections it covers.
CREATE TABLE IF NOT EXISTS projector_checkpoints (
  name            text PRIMARY KEY,
  transaction_id  xid8        NOT NULL,
  global_position bigint      NOT NULL,
  events          bigint      NOT NULL DEFAULT 0,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Explain looks up host events (breaker transitions) by time window.
CREATE INDEX IF NOT EXISTS step_journal_stream_time_idx ON step_journal (stream_id, occurred_at);

-- Retention: `journal archive --before <date>` moves old, already projected events here. Rebuild,
-- verify and explain read the archive too, so projections still equal a rebuild.
CREATE TABLE IF NOT EXISTS step_journal_archive (
  global_position bigint      PRIMARY KEY,
  stream_id       text        NOT NULL,
  stream_position integer     NOT NULL,
  trace_id        text,
  project_id      text,
  lane            text,
  type            text        NOT NULL,
  data            jsonb       NOT NULL,
  occurred_at     timestamptz NOT NULL,
  recorded_at     timestamptz NOT NULL,
  transaction_id  xid8        NOT NULL,
  archived_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS step_journal_archive_trace_idx ON step_journal_archive (trace_id, global_position);
CREATE INDEX IF NOT EXISTS step_journal_archive_tx_idx ON step_journal_archive (transaction_id, global_position);
CREATE INDEX IF NOT EXISTS step_journal_archive_stream_time_idx ON step_journal_archive (stream_id, occurred_at);
