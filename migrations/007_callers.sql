-- Caller identity (issue 12): the caller's name (never its key) on what it spent and ran.
-- budget_ledger.caller lets a caller's own cap (callers.<name>.budget) be checked under the same row
-- lock as the global one; run_state and cost_ledger carry it so cost can be grouped by caller.
ALTER TABLE budget_ledger ADD COLUMN IF NOT EXISTS caller text;
CREATE INDEX IF NOT EXISTS budget_ledger_caller_idx ON budget_ledger (caller, period_start) WHERE caller IS NOT NULL;

ALTER TABLE run_state ADD COLUMN IF NOT EXISTS caller text;

-- "none": a run without a caller (open mode, or journaled before callers existed).
ALTER TABLE cost_ledger ADD COLUMN IF NOT EXISTS caller text NOT NULL DEFAULT 'none';
ALTER TABLE cost_ledger DROP CONSTRAINT IF EXISTS cost_ledger_pkey;
ALTER TABLE cost_ledger ADD PRIMARY KEY (day, project_id, lane, provider, model, caller);
