/**
 * What the projections fold over: journal events as the projector reads them, and their decoding
 * with the journal's catalogue (domain/Events.ts). Event data is whatever a writer journaled,
 * possibly by an older or newer gateway: a type the catalogue does not know, or data that does not
 * match it, decodes to `UnknownEvent`, which every fold skips (never a failure).
 */
import { type DecodedEvent, decodeEvent } from "../domain/Events.ts"
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

// The projector folds each event through several projections (run or host state, the ledger, the
// metrics): each asks for the decoded event, and it is decoded once.
const decodedRows = new WeakMap<ProjectionEvent, DecodedEvent>()

/** The row as a catalogue event (decoded once per row object). */
export const decoded = (event: ProjectionEvent): DecodedEvent => {
  let e = decodedRows.get(event)
  if (e === undefined) {
    e = decodeEvent(event.type, event.data)
    decodedRows.set(event, e)
  }
  return e
}

export type Fields = Readonly<Record<string, unknown>>

export const fields = (v: unknown): Fields =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Fields) : {}
