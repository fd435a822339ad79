/**
 * The operator's side of the gateway's HttpApi (composed into Api.ts): the health view, the
 * Prometheus metrics and the shadow report (group `operations`), and the admin controls behind
 * the operator's bearer token (group `admin`, http/AdminAuth.ts). Served by HttpApiBuilder
 * (http/ApiServer.ts); the answers are declared as the server builds them, field for field.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"
import { answer, QueryParam } from "./ApiAnswer.ts"

const NullableString = Schema.NullOr(Schema.String)
const NullableNumber = Schema.NullOr(Schema.Number)
const InUse = Schema.Struct({ total: Schema.Number, inUse: Schema.Number })

// ---------------------------------------------------------------------------------------------
// GET /awooop/health (http/HealthRoutes.ts)
// ---------------------------------------------------------------------------------------------

/** One host: its last poll, breaker, slots, residency and maintenance window. */
export const HostHealth = Schema.Struct({
  status: Schema.Literal("up", "down", "unknown"),
  protected: Schema.Boolean,
  lastCheckedAt: NullableString,
  lastLatencyMs: NullableNumber,
  lastError: NullableString,
  version: NullableString,
  breaker: Schema.Struct({
    status: Schema.Literal("closed", "open", "half-open"),
    consecutiveTimeouts: Schema.Number,
    openedAt: NullableString,
    reopensAt: NullableString,
    probeInFlight: Schema.Boolean
  }),
  slots: Schema.Struct({
    total: Schema.Number,
    inUse: Schema.Number,
    shared: InUse,
    reserved: Schema.Record({ key: Schema.String, value: InUse })
  }),
  resident: Schema.NullOr(Schema.Array(Schema.Struct({ name: Schema.String, expiresAt: NullableString, sizeVram: NullableNumber }))),
  installed: Schema.NullOr(Schema.Array(Schema.Struct({ name: Schema.String, parameterSize: NullableString }))),
  maintenance: Schema.Struct({ open: Schema.Boolean, reason: NullableString, until: NullableString })
})
export type HostHealth = typeof HostHealth.Type

const LaneModeLiteral = Schema.Literal("active", "shadow")
/** Where a lane's mode comes from: the config, or an operator's runtime switch (routing/LaneMode.ts). */
const ModeSource = Schema.Literal("config", "operator")
/** The operator's switch (null when the config's mode applies). */
const ModeChangeView = Schema.NullOr(Schema.Struct({ reason: Schema.String, by: Schema.String, at: Schema.String }))

/** Whether a lane is safe now, and why (operations/Health.ts `laneSafety`). */
export const LaneHealth = Schema.Struct({
  model: NullableString,
  mode: LaneModeLiteral,
  modeSource: ModeSource,
  modeChange: ModeChangeView,
  async: Schema.Boolean,
  safe: Schema.Boolean,
  reasons: Schema.Array(Schema.String),
  planned: Schema.Array(Schema.String),
  residentOn: Schema.Array(Schema.String),
  summary: Schema.String
})

export const ProviderHealth = Schema.Struct({
  kind: Schema.String,
  model: Schema.String,
  available: Schema.Boolean,
  reason: NullableString
})

export const JournalHealth = Schema.Struct({
  status: Schema.Literal("ok", "degraded", "unavailable"),
  spilled: Schema.Number,
  queued: Schema.Number,
  written: Schema.Number,
  spillFailing: Schema.Boolean,
  lost: Schema.Struct({ dropped: Schema.Number, torn: Schema.Number, shutdown: Schema.Number })
})

/** The cluster as Postgres knows it (cluster/ClusterRole.ts `ClusterView`) and the hosts' owners; only in a cluster. */
export const ClusterHealth = Schema.Struct({
  runner: Schema.String,
  runners: Schema.Array(Schema.Struct({ address: Schema.String, healthy: Schema.Boolean, lastHeartbeat: Schema.String })),
  singletons: Schema.Record({ key: Schema.String, value: Schema.String }),
  here: Schema.Array(Schema.String),
  /** Host → the runner whose entity counts its slots (null: not known yet). */
  hosts: Schema.Record({ key: Schema.String, value: NullableString })
})

export const HealthView = Schema.Struct({
  checkedAt: NullableString,
  summary: Schema.Array(Schema.String),
  hosts: Schema.Record({ key: Schema.String, value: HostHealth }),
  providers: Schema.Record({ key: Schema.String, value: ProviderHealth }),
  lanes: Schema.Record({ key: Schema.String, value: LaneHealth }),
  journal: JournalHealth,
  asyncRuns: Schema.Struct({ queuedOrRunning: Schema.Number, store: Schema.Literal("ok", "unavailable"), problem: NullableString }),
  cluster: Schema.optional(ClusterHealth)
})
export type HealthView = typeof HealthView.Type

// ---------------------------------------------------------------------------------------------
// GET /awooop/shadow/report (http/ShadowRoutes.ts)
// ---------------------------------------------------------------------------------------------

export const ShadowReportParams = Schema.Struct({ lane: Schema.optional(QueryParam), since: Schema.optional(QueryParam) })

export const ShadowReport = Schema.Struct({
  since: Schema.String,
  lanes: Schema.Array(Schema.Struct({
    lane: Schema.String,
    decisions: Schema.Number,
    compared: Schema.Number,
    agreed: Schema.Number,
    disagreed: Schema.Number,
    agreement: NullableNumber,
    disagreementsByReason: Schema.Record({ key: Schema.String, value: Schema.Number })
  }))
})
export type ShadowReport = typeof ShadowReport.Type

/** GET /metrics: Prometheus' text format. */
export const MetricsText = Schema.String.pipe(HttpApiSchema.withEncoding({ kind: "Text", contentType: "text/plain; version=0.0.4; charset=utf-8" }))

export class OperationsGroup extends HttpApiGroup.make("operations")
  .add(HttpApiEndpoint.get("health", "/awooop/health").addSuccess(answer(HealthView)))
  .add(HttpApiEndpoint.get("metrics", "/metrics").addSuccess(MetricsText))
  .add(HttpApiEndpoint.get("shadowReport", "/awooop/shadow/report").setUrlParams(ShadowReportParams).addSuccess(answer(ShadowReport)))
{}

// ---------------------------------------------------------------------------------------------
// Admin (http/BudgetAdminRoutes.ts, http/MaintenanceRoutes.ts, http/LaneModeRoutes.ts)
// ---------------------------------------------------------------------------------------------

/** `Authorization: Bearer <AWOOOP_ADMIN_TOKEN>`; checked by the server itself (401 with a challenge). */
export const AdminHeaders = Schema.Struct({ authorization: Schema.optional(Schema.String) })

export const HardKillRequest = Schema.Struct({
  tripped: Schema.Boolean,
  reason: Schema.optional(Schema.String.pipe(Schema.maxLength(1000)))
})

/** The budget's hard kill and the period's spend (budget/Budget.ts `BudgetStatus`). */
export const BudgetStatus = Schema.Struct({
  hardKill: Schema.Struct({ tripped: Schema.Boolean, reason: NullableString, changedAt: NullableString }),
  period: Schema.Literal("hour", "day", "month"),
  periodStart: Schema.String,
  capUsd: Schema.Number,
  settledUsd: Schema.Number,
  reservedUsd: Schema.Number,
  remainingUsd: Schema.Number,
  openReservations: Schema.Number
})
export type BudgetStatus = typeof BudgetStatus.Type

export const MaintenanceRequest = Schema.Struct({
  open: Schema.Boolean,
  reason: Schema.optional(Schema.String.pipe(Schema.maxLength(1000))),
  until: Schema.optional(Schema.String.pipe(Schema.maxLength(64)))
})

export const MaintenanceAnswer = Schema.Struct({
  host: Schema.String,
  /** false: the window was already closed. */
  changed: Schema.Boolean,
  maintenance: Schema.Struct({ open: Schema.Boolean, reason: NullableString, until: NullableString })
})
export type MaintenanceAnswer = typeof MaintenanceAnswer.Type

const ModeReason = Schema.optional(Schema.String.pipe(Schema.maxLength(1000)))

/**
 * PUT /awooop/admin/lanes/:lane/mode. `mode` is "shadow" or "active"; declared as any string
 * because the server checks it itself (its 400 names the mode it got, or says one is required).
 * The reason is required (400 without one).
 */
export const LaneModeRequest = Schema.Struct({ mode: Schema.String, reason: ModeReason })

/** DELETE /awooop/admin/lanes/:lane/mode: an optional body; the reason may come as `?reason=` instead. */
export const LaneModeReset = Schema.Struct({ reason: ModeReason })

export const LaneModeResetParams = Schema.Struct({ reason: Schema.optional(QueryParam) })

/** What a lane-mode call did: the mode now, the one before, the config's, and the operator's pin. */
export const LaneModeAnswer = Schema.Struct({
  lane: Schema.String,
  /** false: the lane was pinned to this mode already (or had no pin to remove); nothing journaled. */
  changed: Schema.Boolean,
  mode: LaneModeLiteral,
  previous: LaneModeLiteral,
  configMode: LaneModeLiteral,
  modeSource: ModeSource,
  modeChange: ModeChangeView
})
export type LaneModeAnswer = typeof LaneModeAnswer.Type

const LanePath = Schema.Struct({ lane: Schema.String })

export class AdminGroup extends HttpApiGroup.make("admin")
  .add(HttpApiEndpoint.get("budget", "/awooop/admin/budget").setHeaders(AdminHeaders).addSuccess(answer(BudgetStatus)))
  .add(
    // Bodies are read by the server itself (its 64 KiB limit and messages); the payload is what the client sends.
    HttpApiEndpoint.post("hardKill", "/awooop/admin/budget/hard-kill").setHeaders(AdminHeaders).setPayload(HardKillRequest).addSuccess(answer(BudgetStatus))
  )
  .add(
    HttpApiEndpoint.post("maintenance", "/awooop/admin/hosts/:host/maintenance").setPath(Schema.Struct({ host: Schema.String }))
      .setHeaders(AdminHeaders).setPayload(MaintenanceRequest).addSuccess(answer(MaintenanceAnswer))
  )
  .add(
    HttpApiEndpoint.put("setLaneMode", "/awooop/admin/lanes/:lane/mode").setPath(LanePath)
      .setHeaders(AdminHeaders).setPayload(LaneModeRequest).addSuccess(answer(LaneModeAnswer))
  )
  .add(
    HttpApiEndpoint.del("resetLaneMode", "/awooop/admin/lanes/:lane/mode").setPath(LanePath).setUrlParams(LaneModeResetParams)
      .setHeaders(AdminHeaders).setPayload(LaneModeReset).addSuccess(answer(LaneModeAnswer))
  )
{}
