/**
 * What the projections fold over: journal events as the projector reads them, and their decoding
 * with the journal's catalogue (domain/Events.ts). Event data is whatever a writer journaled,
 * possibly by an older or newer gateway: a type the catalogue does not know, or data that does not
 * match it, decodes to `UnknownEvent`, which every fold skips (never a failure).
 */
import { Either, Schema } from "effect"
import { type DecodedEvent, decodeEvent, RouteDecidedSummary } from "../domain/Events.ts"
import type { EventKey } from "../journal/EventRow.ts"

export interface ProjectionEvent extends EventKey {
  readonly globalPosition: number
  /** The writing transaction (`xid8` as decimal text): the projector's order is (transactionId, globalPosition). */
  readonly transactionId: string
  readonly data: unknown
  /** epoch ms */
  readonly occurredAt: number
}

/** Run streams are "run-<uuid>", host streams "host-<name>" (see routing/Lane.ts, routing/Host.ts). */
export const runStreamPrefix = "run-"
export const hostStreamPrefix = "host-"

export const isRunStream = (streamId: string): boolean => streamId.startsWith(runStreamPrefix)
export const isHostStream = (streamId: string): boolean => streamId.startsWith(hostStreamPrefix)

/** A row as the folds see it: RouteDecided as the projector reads it (Projector.ts's `eventColumns`). */
export type ProjectedEvent = Exclude<DecodedEvent, { readonly _tag: "RouteDecided" }> | RouteDecidedSummary

const isRouteSummary = Schema.is(RouteDecidedSummary)
const decodeRouteSummary = Schema.decodeUnknownEither(RouteDecidedSummary)

const decodeRow = (event: ProjectionEvent): ProjectedEvent => {
  if (event.type !== "RouteDecided") return decodeEvent(event.type, event.data) as ProjectedEvent
  // A full RouteDecided (an in-memory fold, a test) has the summary's fields too.
  const value = { ...fields(event.data), _tag: "RouteDecided" }
  // Plain JSON (no transformation): a row that is a summary is used as it is (see decodeEvent).
  if (isRouteSummary(value)) return value
  const summary = decodeRouteSummary(value)
  return Either.isRight(summary)
    ? summary.right
    : { _tag: "UnknownEvent", type: event.type, data: event.data, invalid: String(summary.left) }
}

// The projector folds each event through several projections (run or host state, the ledger, the
// metrics): each asks for the decoded event, and it is decoded once.
const decodedRows = new WeakMap<ProjectionEvent, ProjectedEvent>()

/** The row as a catalogue event (decoded once per row object). */
export const decoded = (event: ProjectionEvent): ProjectedEvent => {
  let e = decodedRows.get(event)
  if (e === undefined) {
    e = decodeRow(event)
    decodedRows.set(event, e)
  }
  return e
}

export type Fields = Readonly<Record<string, unknown>>

export const fields = (v: unknown): Fields =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Fields) : {}
