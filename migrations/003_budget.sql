-- The paid-provider budget. The journal is the record (BudgetReserved / BudgetSettled / BudgetReleased
-- on each run's stream, HardKillTripped / HardKillReset on the "budget" stream); these tables are the
-- projection every reservation is checked against, updated under one lock so that concurrent paid
-- calls can never together exceed the period's cap.

-- One row per reservation of a paid call.
CREATE TABLE IF NOT EXISTS budget_ledger (
  reservation_id text          PRIMARY KEY,
  period_start   timestamptz   NOT NULL,          -- UTC start of the budget period it counts in
  run_id         text          NOT NULL,
  trace_id       text,
  project_id     text,
  lane           text,
  provider       text          NOT NULL,
  model          text          NOT NULL,
  reserved_usd   numeric(20,9) NOT NULL CHECK (reserved_usd >= 0),   -- worst case, before the call
  settled_usd    numeric(20,9),                   -- charged against the cap once settled
  cost_usd       numeric(20,9),                   -- real cost; NULL when the provider did not report usage
  status         text          NOT NULL CHECK (status IN ('reserved', 'settled', 'released')),
  release_reason text,
  owner          text          NOT NULL,          -- the gateway process that made it (orphans are released at startup)
  created_at     timestamptz   NOT NULL DEFAULT now(),
  closed_at      timestamptz
);

CREATE INDEX IF NOT EXISTS budget_ledger_period_idx ON budget_ledger (period_start, status);
CREATE INDEX IF NOT EXISTS budget_ledger_open_idx ON budget_ledger (status) WHERE status = 'reserved';

-- The operator's hard kill. Its single row is also the lock every reservation takes (SELECT … FOR UPDATE).
CREATE TABLE IF NOT EXISTS budget_state (
  id          integer     PRIMARY KEY CHECK (id = 1),
  tripped     boolean     NOT NULL DEFAULT false,
  reason      text,
  changed_at  timestamptz
);

INSERT INTO budget_state (id, tripped) VALUES (1, false) ON CONFLICT (id) DO NOTHING;
