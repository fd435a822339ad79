-- The journal writer's INSERT as a function (src/journal/Journal.ts), for Postgres's CPU per event
-- (BENCHMARKS.md):
--   - PL/pgSQL keeps each statement's plan for the session, where the same INSERT sent as an
--     unnamed statement (what @effect/sql-pg sends) is parsed, analysed and planned per batch;
--   - the writer's batches never repeat a (stream_id, stream_position), so it inserts without
--     ON CONFLICT (a speculative insertion per row) and only when that fails with a unique
--     violation sends the batch again with `idempotent` (then a re-delivered event is a no-op, as
--     before); a spill replay, which may re-deliver, sends it that way at once.
-- Together: −13% of Postgres's CPU per inserted event (BENCHMARKS.md, "Hot path").
CREATE OR REPLACE FUNCTION step_journal_append(batch jsonb, idempotent boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF idempotent THEN
    INSERT INTO step_journal (stream_id, stream_position, trace_id, project_id, lane, type, data, occurred_at)
    SELECT s, p, t, j, l, y, d, o FROM jsonb_to_recordset(batch)
      AS r(s text, p int, t text, j text, l text, y text, d jsonb, o timestamptz)
    ON CONFLICT (stream_id, stream_position) DO NOTHING;
  ELSE
    INSERT INTO step_journal (stream_id, stream_position, trace_id, project_id, lane, type, data, occurred_at)
    SELECT s, p, t, j, l, y, d, o FROM jsonb_to_recordset(batch)
      AS r(s text, p int, t text, j text, l text, y text, d jsonb, o timestamptz);
  END IF;
END
$$;
