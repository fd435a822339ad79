-- Operator state that must outlive a restart and be seen by every replica (issue 13): open
-- maintenance windows. A row is an open window; closing (by the operator, or at `until`) deletes it,
-- and only the statement that deleted it journals MaintenanceClosed, so several replicas closing
-- the same window at its end journal it once. `window_id` tells a window from a newer one on the
-- same host.
CREATE SEQUENCE IF NOT EXISTS maintenance_window_id;

CREATE TABLE IF NOT EXISTS host_maintenance (
  host       text PRIMARY KEY,
  window_id  bigint NOT NULL,
  reason     text NOT NULL,
  until      timestamptz,
  opened_at  timestamptz NOT NULL DEFAULT now()
);

-- The next position of a stream several replicas write (a host's stream, issue 13): a replica takes
-- each position here, so two of them never claim the same one (the journal would drop the second).
CREATE TABLE IF NOT EXISTS stream_positions (
  stream_id  text PRIMARY KEY,
  next       bigint NOT NULL
);

-- Which runner of a cluster (issue 13) runs each singleton (the projector, orphan release, keep-warm,
-- host health journaling) since when: shown on /awooop/health.
CREATE TABLE IF NOT EXISTS cluster_singletons (
  name    text PRIMARY KEY,
  runner  text NOT NULL,
  since   timestamptz NOT NULL DEFAULT now()
);

-- Each gateway process's journal instance (recorded on its RunStarted) and its latest heartbeat: a
-- run of an instance whose heartbeat stopped is an orphan (journal/Orphans.ts) once the cluster's
-- lock expiration has passed.
CREATE TABLE IF NOT EXISTS gateway_instances (
  instance   text PRIMARY KEY,
  runner     text NOT NULL,
  beat_at    timestamptz NOT NULL DEFAULT now()
);

-- Async runs in a cluster (issue 13): the gateway process (journal instance) running an open run and
-- until when its lease holds. It renews its leases while it lives; another replica takes a run over
-- only once the lease has expired, so a run is never executed by two replicas at once.
ALTER TABLE async_runs ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE async_runs ADD COLUMN IF NOT EXISTS lease_until timestamptz;
