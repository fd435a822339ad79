/**
 * The journal's event catalogue: every event the gateway writes to `step_journal`, one
 * `Schema.TaggedStruct` each. The tag is the row's `type`; the other fields are its `data`, exactly
 * as journaled (field names, nulls, omitted fields), so journals written before the catalogue read
 * back unchanged.
 *
 * Writers (journal/StreamWriter.ts) take a value of the union of their stream kind, built as a plain
 * object literal: the type checker ties every write to this file, and nothing is encoded per event
 * (the plain object already has the encoded shape). Readers decode once per row with `decodeEvent`,
 * which looks the type's schema up by tag; a type not in the catalogue (an older or a newer
 * gateway's) or data that does not match its schema comes back as `UnknownEvent`, kept raw, never a
 * failure. `test/journal-catalogue.e2e.test.ts` decodes every row a full test journal holds.
 */
import { Either, Schema, SchemaAST } from "effect"
import { Plan, PlanInput } from "../routing/Plan.ts"

const Str = Schema.String
const Num = Schema.Number
const Bool = Schema.Boolean
const NullableStr = Schema.NullOr(Str)
const NullableNum = Schema.NullOr(Num)
const Strings = Schema.Array(Str)
const opt = Schema.optional

// ---------------------------------------------------------------------------------------------
// Run streams ("run-<uuid>"): routing/Lane.ts, routing/PaidRoute.ts, operations/async/AsyncRuns.ts
// ---------------------------------------------------------------------------------------------

/** What RunStarted records of the caller (run/Run.ts callerFacts): never the key. */
const callerFields = {
  intent: NullableStr,
  caller: NullableStr,
  legacy: Bool,
  traceMinted: Bool,
  parentSpanId: NullableStr
}

export const RunStarted = Schema.TaggedStruct("RunStarted", {
  runId: Str,
  /** The process that runs a synchronous run (journal/Orphans.ts). */
  instance: opt(Str),
  /** Async runs: queued, then run by a worker. */
  async: opt(Schema.Literal(true)),
  via: opt(Schema.Literal("inference", "api")),
  operation: Str,
  protocol: opt(Str),
  stream: Bool,
  requestedStream: opt(Schema.NullOr(Bool)),
  requestedModel: NullableStr,
  assignedModel: NullableStr,
  ...callerFields,
  /** Only with `server.journalPrompts`. */
  prompt: opt(Schema.Unknown)
})

export const RouteDecided = Schema.TaggedStruct("RouteDecided", { input: PlanInput, plan: Plan })
/**
 * What the projector reads of a RouteDecided: projections/Projector.ts leaves the hosts' views in the
 * database and selects only the route, the model and the plan, which is all the folds read.
 */
export const RouteDecidedSummary = Schema.TaggedStruct("RouteDecided", { input: PlanInput.pipe(Schema.pick("route", "model")), plan: Plan })
export type RouteDecidedSummary = typeof RouteDecidedSummary.Type

export const HostSkipped = Schema.TaggedStruct("HostSkipped", {
  host: Str,
  reason: Str,
  message: opt(Str),
  until: opt(NullableNum),
  probeInFlight: opt(Bool)
})

/** Paid attempts name the provider (as `host` too) and their tier. */
const paidFields = {
  provider: opt(Str),
  tier: opt(Schema.Literal("paid"))
}

const lagFields = {
  /** The gateway's own event-loop lag during the attempt (observability/EventLoopLag.ts). */
  eventLoopLagMs: opt(Num),
  eventLoopStallMs: opt(Num)
}

export const AttemptStarted = Schema.TaggedStruct("AttemptStarted", {
  attempt: Num,
  host: Str,
  timeoutMs: Num,
  slotPool: opt(Schema.Literal("reserved", "shared")),
  ...paidFields,
  model: opt(Str),
  reservationId: opt(Str)
})

export const AttemptFailed = Schema.TaggedStruct("AttemptFailed", {
  attempt: Num,
  /** Absent when the run was ended from outside the attempt (a shutdown, an orphan). */
  host: opt(Str),
  kind: Str,
  status: opt(NullableNum),
  message: Str,
  durationMs: opt(Num),
  afterFirstChunk: opt(Schema.NullOr(Bool)),
  ...lagFields,
  /** The timeout was the gateway's own stall, not counted against the host. */
  gatewayStall: opt(Schema.Literal(true)),
  ...paidFields,
  orphaned: opt(Bool),
  shutdown: opt(Bool)
})

export const AttemptSucceeded = Schema.TaggedStruct("AttemptSucceeded", {
  host: Str,
  durationMs: Num,
  firstChunkMs: NullableNum,
  ...lagFields,
  ...paidFields
})

export const RunCompleted = Schema.TaggedStruct("RunCompleted", {
  endpoint: NullableStr,
  /** "ollama" or "paid"; null on a recovered async run that never recorded an attempt. */
  providerTier: NullableStr,
  model: opt(Str),
  inputTokens: NullableNum,
  outputTokens: NullableNum,
  doneReason: NullableStr,
  costUsd: opt(NullableNum),
  fallbackReason: opt(Str),
  reservationId: opt(Str),
  /** An async run whose answer was stored before a stop, completed by the next start's reconcile. */
  recovered: opt(Schema.Literal(true)),
  durationMs: NullableNum
})

export const RunFailed = Schema.TaggedStruct("RunFailed", {
  status: Num,
  error: Str,
  message: Str,
  durationMs: Num,
  fallbackReason: opt(Str),
  costUsd: opt(NullableNum),
  /** An async submission whose RunStarted may have committed after all: it never runs. */
  refused: opt(Schema.Literal(true)),
  /** Ended at a start-up for a process that is gone (journal/Orphans.ts). */
  orphaned: opt(Bool),
  instance: opt(NullableStr),
  /** Ended by the journal closing (journal/RunEnds.ts). */
  shutdown: opt(Bool)
})

export const PaidFallbackSkipped = Schema.TaggedStruct("PaidFallbackSkipped", {
  reason: Str,
  providers: Strings,
  fallbackReason: Str,
  caller: opt(NullableStr)
})

export const PaidFallbackRequested = Schema.TaggedStruct("PaidFallbackRequested", {
  reason: Str,
  providers: Strings,
  direct: Bool
})

export const PaidProviderSkipped = Schema.TaggedStruct("PaidProviderSkipped", { provider: Str, reason: Str })

export const BudgetDenied = Schema.TaggedStruct("BudgetDenied", {
  provider: Str,
  amountUsd: Num,
  reason: Str,
  /** The ledger could not be read: refused without figures. */
  failClosed: opt(Schema.Literal(true)),
  capUsd: opt(Num),
  committedUsd: opt(Num),
  periodStart: opt(Str),
  operatorKill: opt(Bool)
})

export const BudgetReserved = Schema.TaggedStruct("BudgetReserved", {
  reservationId: Str,
  provider: Str,
  model: Str,
  amountUsd: Num,
  inputTokensEstimate: Num,
  maxOutputTokens: Num,
  inputUsdPerMillion: Num,
  outputUsdPerMillion: Num,
  capUsd: Num,
  committedUsd: Num,
  periodStart: Str
})

export const BudgetSettled = Schema.TaggedStruct("BudgetSettled", {
  reservationId: Str,
  provider: Str,
  model: Str,
  reservedUsd: Num,
  /** null: the provider did not report usage (charged at the reservation). */
  costUsd: NullableNum,
  chargedUsd: Num,
  inputTokens: NullableNum,
  outputTokens: NullableNum,
  usageKnown: Bool,
  note: Str
})

export const BudgetReleased = Schema.TaggedStruct("BudgetReleased", {
  reservationId: Str,
  provider: Str,
  reservedUsd: Num,
  reason: Str,
  orphaned: opt(Schema.Literal(true))
})

export const RunDequeued = Schema.TaggedStruct("RunDequeued", { attemptsSoFar: Num })

export const RunSuspended = Schema.TaggedStruct("RunSuspended", { reason: Str })

export const RunRequeued = Schema.TaggedStruct("RunRequeued", { attemptsSoFar: Num, was: Str, reason: Str })

export const RunEvent = Schema.Union(
  RunStarted, RouteDecided, HostSkipped, AttemptStarted, AttemptFailed, AttemptSucceeded, RunCompleted, RunFailed,
  PaidFallbackSkipped, PaidFallbackRequested, PaidProviderSkipped, BudgetDenied, BudgetReserved, BudgetSettled,
  BudgetReleased, RunDequeued, RunSuspended, RunRequeued
)
export type RunEvent = typeof RunEvent.Type

// ---------------------------------------------------------------------------------------------
// Host streams ("host-<name>"): routing/Host.ts, routing/Breaker.ts, operations/KeepWarm.ts
// ---------------------------------------------------------------------------------------------

export const BreakerOpened = Schema.TaggedStruct("BreakerOpened", {
  host: Str,
  at: Num,
  consecutiveTimeouts: Num,
  until: Num,
  reason: Str
})

export const BreakerHalfOpened = Schema.TaggedStruct("BreakerHalfOpened", { host: Str, at: Num })

export const BreakerClosed = Schema.TaggedStruct("BreakerClosed", { host: Str, at: Num })

export const HostDown = Schema.TaggedStruct("HostDown", { host: Str, error: Str })

export const HostUp = Schema.TaggedStruct("HostUp", { host: Str, latencyMs: Num })

export const ResidencyChanged = Schema.TaggedStruct("ResidencyChanged", {
  host: Str,
  resident: Strings,
  loaded: Strings,
  evicted: Strings
})

export const MaintenanceOpened = Schema.TaggedStruct("MaintenanceOpened", {
  host: Str,
  open: Schema.Literal(true),
  reason: Str,
  until: NullableNum
})

export const MaintenanceClosed = Schema.TaggedStruct("MaintenanceClosed", {
  host: Str,
  reason: Str,
  /** Closed by its own end time rather than by an operator. */
  expired: Bool,
  openReason: NullableStr,
  until: NullableNum
})

const keepWarmFields = { host: Str, lane: Str, model: Str }

export const KeepWarmSkipped = Schema.TaggedStruct("KeepWarmSkipped", { ...keepWarmFields, reason: Str, message: Str })

export const KeepWarmFailed = Schema.TaggedStruct("KeepWarmFailed", {
  ...keepWarmFields,
  reason: Str,
  kind: Str,
  status: NullableNum,
  message: Str,
  durationMs: Num
})

export const KeepWarmLoaded = Schema.TaggedStruct("KeepWarmLoaded", {
  ...keepWarmFields,
  reason: Str,
  keepAliveSeconds: Num,
  via: Schema.Literal("generate", "embed"),
  durationMs: Num
})

export const ModelEvicted = Schema.TaggedStruct("ModelEvicted", { ...keepWarmFields, replacedBy: Strings, resident: Strings })

export const HostEvent = Schema.Union(
  BreakerOpened, BreakerHalfOpened, BreakerClosed, HostDown, HostUp, ResidencyChanged, MaintenanceOpened,
  MaintenanceClosed, KeepWarmSkipped, KeepWarmFailed, KeepWarmLoaded, ModelEvicted
)
export type HostEvent = typeof HostEvent.Type

// ---------------------------------------------------------------------------------------------
// The "budget" stream: budget/Budget.ts
// ---------------------------------------------------------------------------------------------

const hardKillFields = { tripped: Bool, reason: NullableStr, by: Str, wasTripped: Schema.NullOr(Bool) }

export const HardKillTripped = Schema.TaggedStruct("HardKillTripped", hardKillFields)

export const HardKillReset = Schema.TaggedStruct("HardKillReset", hardKillFields)

export const OrphanedReservationsReleased = Schema.TaggedStruct("OrphanedReservationsReleased", {
  count: Num,
  reservationIds: Strings
})

export const BudgetEvent = Schema.Union(HardKillTripped, HardKillReset, OrphanedReservationsReleased)
export type BudgetEvent = typeof BudgetEvent.Type

// ---------------------------------------------------------------------------------------------
// Shadow streams ("shadow-<uuid>"): operations/Shadow.ts
// ---------------------------------------------------------------------------------------------

const Reason = Schema.Struct({ kind: Str, text: Str })

export const ShadowDecided = Schema.TaggedStruct("ShadowDecided", {
  shadowId: Str,
  lane: Str,
  via: Schema.Literal("header", "lane"),
  gateway: Schema.Struct({
    host: NullableStr,
    model: NullableStr,
    attempts: Strings,
    skipped: Schema.Array(Schema.Struct({ host: Str, kind: Str, text: Str }))
  }),
  legacy: Schema.Struct({ endpoint: NullableStr, host: NullableStr, model: NullableStr }),
  /** null: the legacy choice is not known, so there is nothing to compare. */
  agree: Schema.NullOr(Bool),
  reasons: Schema.Array(Reason),
  operation: Str,
  requestedModel: NullableStr,
  intent: NullableStr,
  legacyCaller: Bool,
  /** plan()'s input and result, when the lane has a route (replay recomputes the gateway's side). */
  input: opt(PlanInput),
  plan: opt(Plan)
})

export const ShadowEvent = ShadowDecided
export type ShadowEvent = typeof ShadowEvent.Type

// ---------------------------------------------------------------------------------------------
// All of them, and reading them back
// ---------------------------------------------------------------------------------------------

export const JournalEventSchema = Schema.Union(RunEvent, HostEvent, BudgetEvent, ShadowEvent)
export type AnyEvent = typeof JournalEventSchema.Type
export type EventType = AnyEvent["_tag"]
export type EventOf<T extends EventType> = Extract<AnyEvent, { readonly _tag: T }>

/** The row's `data` of an event: everything but the tag. */
export type DataOf<E extends AnyEvent> = Omit<E, "_tag">

/** A row whose type the catalogue does not know, or whose data does not match it: kept as it was. */
export interface UnknownEvent {
  readonly _tag: "UnknownEvent"
  readonly type: string
  readonly data: unknown
  /** Why a known type did not decode; null for a type the catalogue does not know. */
  readonly invalid: string | null
}

export type DecodedEvent = AnyEvent | UnknownEvent

interface Decoder {
  /** Whether a value already is the event: every catalogue type is plain JSON (Type = Encoded, no transformation), so a row that passes is used as it is. */
  readonly is: (input: unknown) => input is AnyEvent
  /** Only for a row that failed `is`: the full decode, for its message. */
  readonly decode: (input: unknown) => Either.Either<AnyEvent, unknown>
}

const members: ReadonlyArray<Schema.Schema.AnyNoContext> = [...RunEvent.members, ...HostEvent.members, ...BudgetEvent.members, ShadowEvent]

const tagOf = (schema: Schema.Schema.AnyNoContext): string => {
  const tag = SchemaAST.getPropertySignatures(schema.ast).find((p) => p.name === "_tag")!
  return String((tag.type as SchemaAST.Literal).literal)
}

/**
 * One compiled decoder per type, looked up by the row's type (no union dispatch per row). The
 * projector reads every event of every request: `Schema.is` checks a row without building a copy of
 * it (measured ~3× cheaper than a decode per row), and the decode runs only to say why a row failed.
 */
const decoders: ReadonlyMap<string, Decoder> = new Map(
  members.map((s) => [tagOf(s), { is: Schema.is(s) as Decoder["is"], decode: Schema.decodeUnknownEither(s) as Decoder["decode"] }])
)

/** The row (type, data) as a catalogue event, or `UnknownEvent`. Decodes once; never throws. */
export const decodeEvent = (type: string, data: unknown): DecodedEvent => {
  const decode = decoders.get(type)
  if (decode === undefined) return { _tag: "UnknownEvent", type, data, invalid: null }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    return { _tag: "UnknownEvent", type, data, invalid: "data is not an object" }
  }
  const value = { ...data, _tag: type }
  if (decode.is(value)) return value
  const decoded = decode.decode(value)
  return Either.isRight(decoded)
    ? decoded.right
    : { _tag: "UnknownEvent", type, data, invalid: String(decoded.left) }
}

/** Every type in the catalogue. */
export const eventTypes: ReadonlyArray<string> = [...decoders.keys()]

const hostTags: ReadonlySet<string> = new Set(HostEvent.members.map(tagOf))

/** An event of a host stream (the others are of runs, the budget or shadow decisions). */
export const isHostEvent = (event: AnyEvent): event is HostEvent => hostTags.has(event._tag)

/** The row's (type, data) of an event: the tag and the rest, without encoding (the value already has the encoded shape). */
export const toRow = <E extends AnyEvent>(event: E): { readonly type: E["_tag"]; readonly data: DataOf<E> } => {
  const { _tag, ...data } = event
  return { type: _tag, data }
}
