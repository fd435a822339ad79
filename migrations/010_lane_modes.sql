-- Lane modes the operator set at runtime (issue 13): a row pins a lane to `active` or `shadow` over
-- the config's `mode`, so rolling a lane back to shadow (the runbook's rollback, one lane at a time)
-- needs no restart and no deploy, survives a restart and is seen by every replica. No row: the
-- config's mode. Every change is journaled as LaneModeChanged on the lane's stream ("lane-<name>").
CREATE TABLE IF NOT EXISTS lane_modes (
  lane        text PRIMARY KEY,
  mode        text NOT NULL CHECK (mode IN ('active', 'shadow')),
  reason      text NOT NULL,
  changed_by  text NOT NULL,
  changed_at  timestamptz NOT NULL DEFAULT now()
);
