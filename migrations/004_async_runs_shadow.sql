-- Async runs (src/routing/AsyncRuns.ts). The journal holds every run's state (RunStarted with
-- async: true, RunDequeued, AttemptStarted …, RunCompleted / RunFailed); this table holds what the
-- journal must not: the request body (prompts are not journaled unless server.journalPrompts) until
-- the run ends, and the Ollama-shaped result that GET /awooop/runs/:id returns. `finished_at IS NULL`
-- lists the runs a restarted gateway must pick up again.
CREATE TABLE IF NOT EXISTS async_runs (
  run_id      text        PRIMARY KEY,
  lane        text        NOT NULL,
  operation   text        NOT NULL,            -- generate | chat
  request     jsonb,                           -- the request body; cleared when the run ends
  caller      jsonb       NOT NULL,            -- project, trace, intent (CallerContext)
  result      jsonb,                           -- the final Ollama answer, once succeeded
  created_at  timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS async_runs_open_idx ON async_runs (created_at) WHERE finished_at IS NULL;

-- The shadow report (GET /awooop/shadow/report) reads ShadowDecided events by time.
CREATE INDEX IF NOT EXISTS step_journal_shadow_idx ON step_journal (occurred_at) WHERE type = 'ShadowDecided';
