/**
 * An event as the writer inserts it: prepared when it is appended (a snapshot: later mutation of
 * `data` by the caller has no effect). Input that could never be stored is a bug of the caller and
 * is reported as a defect at the call site rather than wedging the writer: a `streamPosition` that
 * is not an int4 ≥ 0, an `occurredAt` that is not a valid date, `data` that `JSON.stringify`
 * rejects (cycles, BigInt). NUL characters and lone UTF-16 surrogates (which PostgreSQL's
 * text/jsonb refuse) are replaced by U+FFFD.
 */
import { Effect } from "effect"
import type { EventKey } from "./EventRow.ts"
import type { JournalEvent } from "./JournalEvent.ts"

/** An event in the form it is inserted. */
export interface Row extends EventKey {
  readonly _tag: "Row"
  readonly data: string // JSON text
  readonly occurredAt: string // ISO-8601
}

/** Why an event can never be stored. */
export interface Invalid {
  readonly _tag: "Invalid"
  readonly error: string
}

const MAX_INT4 = 2_147_483_647
const MIN_DATE_MS = -62_135_596_800_000 // 0001-01-01T00:00:00Z
const MAX_DATE_MS = 253_402_300_799_999 // 9999-12-31T23:59:59.999Z

/** A `\u0000` or lone-surrogate escape emitted by JSON.stringify (not an escaped backslash). */
const BAD_JSON_ESCAPE = /(?<!\\)((?:\\\\)*)\\u(?:0000|d[89a-f][0-9a-f]{2})/gi

// NUL is refused by PostgreSQL's text: replaced here. Lone surrogates in text fields are escaped by
// JSON.stringify when the batch document is built, and replaced there (jsonString).
const cleanText = (s: string): string => (s.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s)

const cleanNullable = (s: string | null): string | null => (s === null ? null : cleanText(s))

/** JSON text jsonb accepts: a `\u0000` or lone-surrogate escape becomes `\ufffd`. */
const storableJson = (json: string): string =>
  json.includes("\\u") ? json.replace(BAD_JSON_ESCAPE, "$1\\ufffd") : json

const toJson = (data: unknown): string | Invalid => {
  let json: string | undefined
  try {
    json = JSON.stringify(data)
  } catch (cause) {
    return { _tag: "Invalid", error: `data is not JSON-serialisable: ${String(cause)}` }
  }
  if (json === undefined) return "null"
  return storableJson(json)
}

// Events come in bursts within one millisecond (a run's first three steps, say): reuse the text.
let lastMs = Number.NaN
let lastIso = ""
const isoOf = (ms: number): string => {
  if (ms !== lastMs) {
    lastIso = new Date(ms).toISOString()
    lastMs = ms
  }
  return lastIso
}

/**
 * A text field as a JSON string for the batch document. NUL was replaced when the row was prepared;
 * a lone surrogate, which JSON.stringify escapes and jsonb refuses, becomes U+FFFD as in `data`.
 */
export const jsonString = (s: string): string => storableJson(JSON.stringify(s))

export const jsonNullable = (s: string | null): string => (s === null ? "null" : jsonString(s))

/** The row for `event`, or why it can never be stored. */
export const prepare = (event: JournalEvent): Row | Invalid => {
  const position = event.streamPosition
  if (!Number.isInteger(position) || position < 0 || position > MAX_INT4) {
    return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: streamPosition must be an integer in [0, ${MAX_INT4}], got ${position}` }
  }
  const at = event.occurredAt
  if (!Number.isFinite(at) || at < MIN_DATE_MS || at > MAX_DATE_MS) {
    return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: occurredAt must be epoch milliseconds of a date in years 1..9999, got ${at}` }
  }
  const data = toJson(event.data)
  if (typeof data !== "string") return { _tag: "Invalid", error: `${event.type} of ${event.streamId}: ${data.error}` }
  return {
    _tag: "Row",
    streamId: cleanText(event.streamId),
    streamPosition: position,
    traceId: cleanNullable(event.traceId),
    projectId: cleanNullable(event.projectId),
    lane: cleanNullable(event.lane),
    type: cleanText(event.type),
    data,
    occurredAt: isoOf(at)
  }
}

export const prepareAll = (events: ReadonlyArray<JournalEvent>): Array<Row> | Invalid => {
  const rows: Array<Row> = []
  for (const event of events) {
    const row = prepare(event)
    if (row._tag !== "Row") return row
    rows.push(row)
  }
  return rows
}

export const invalidEvent = (invalid: Invalid) => Effect.dieMessage(`Journal: cannot store event ${invalid.error}`)
