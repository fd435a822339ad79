/**
 * Bounds on the work a request can cause before it reaches a host (issue 12): a body is refused
 * while it is still bytes — too deep (server.maxJsonDepth, checked by a scan before JSON.parse, so
 * nothing recursive ever sees it), too many chat messages (server.maxMessages, checked before the
 * schema walks them) — and unfinished bodies together hold at most server.maxInFlightBodyBytes
 * (server.maxInFlightBodyBytesPerClient per client address); beyond that a request gets 503 and its
 * connection is closed instead of read.
 */
import { BadRequest } from "../domain/Errors.ts"

export interface JsonLimits {
  readonly maxJsonDepth: number
  readonly maxMessages: number
}

export const defaultJsonLimits: JsonLimits = { maxJsonDepth: 64, maxMessages: 10_000 }

const OPEN_OBJECT = 0x7b
const OPEN_ARRAY = 0x5b
const CLOSE_OBJECT = 0x7d
const CLOSE_ARRAY = 0x5d
const QUOTE = 0x22
const BACKSLASH = 0x5c

const COMMA = 0x2c
const COLON = 0x3a
const MESSAGES = Array.from(new TextEncoder().encode("messages"))

const isSpace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09

/** What one pass over the JSON bytes found against the limits (it stops at the first one passed). */
export type ScanResult =
  | { readonly _tag: "Ok" }
  | { readonly _tag: "TooDeep" }
  /** The root object's `messages` array has more entries than the limit (counted up to it + 1). */
  | { readonly _tag: "TooManyMessages"; readonly atLeast: number }

const ok: ScanResult = { _tag: "Ok" }

/**
 * One pass over the bytes, no recursion, before JSON.parse: nesting deeper than maxJsonDepth, and
 * the root object's `messages` entries beyond maxMessages (a 7 MB flood of tiny messages is refused
 * without building 450,000 objects). Invalid JSON is left for JSON.parse to name.
 */
export const scanJson = (bytes: Buffer | Uint8Array, limits: JsonLimits): ScanResult => {
  let depth = 0
  let inString = false
  let stringStart = -1
  // After the root object's key "messages": waiting for its ':' then '['.
  let sawMessagesKey = 0
  let messagesDepth = -1
  let messages = 0
  for (let i = 0; i < bytes.length; i++) {
    if (inString) {
      // A string's end, found natively: the next quote not escaped by an odd run of backslashes.
      let end = bytes.indexOf(QUOTE, i)
      while (end > 0) {
        let slashes = 0
        while (bytes[end - 1 - slashes] === BACKSLASH) slashes++
        if (slashes % 2 === 0) break
        end = bytes.indexOf(QUOTE, end + 1)
      }
      if (end < 0) return ok // unterminated: JSON.parse names it
      i = end
      inString = false
      if (depth === 1 && i - stringStart - 1 === MESSAGES.length && MESSAGES.every((c, k) => bytes[stringStart + 1 + k] === c)) sawMessagesKey = 1
      continue
    }
    const b = bytes[i]!
    if (isSpace(b)) continue
    if (sawMessagesKey === 1) sawMessagesKey = b === COLON ? 2 : 0
    else if (sawMessagesKey === 2) {
      sawMessagesKey = 0
      if (b === OPEN_ARRAY) {
        messagesDepth = depth + 1
        messages = 0
      }
    }
    // The first byte of the array's first entry counts it.
    if (depth === messagesDepth && messages === 0 && b !== CLOSE_ARRAY) {
      if (++messages > limits.maxMessages) return { _tag: "TooManyMessages", atLeast: messages }
    }
    if (b === QUOTE) {
      inString = true
      stringStart = i
    } else if (b === OPEN_OBJECT || b === OPEN_ARRAY) {
      if (++depth > limits.maxJsonDepth) return { _tag: "TooDeep" }
    } else if (b === CLOSE_OBJECT || b === CLOSE_ARRAY) {
      if (depth === messagesDepth) messagesDepth = -1
      depth--
    } else if (b === COMMA && depth === messagesDepth) {
      if (++messages > limits.maxMessages) return { _tag: "TooManyMessages", atLeast: messages }
    }
  }
  return ok
}

export const tooDeep = (max: number) =>
  new BadRequest({ message: `request body nests objects or arrays more than ${max} levels deep (the limit is server.maxJsonDepth)` })

export const tooManyMessages = (atLeast: number | string, max: number) =>
  new BadRequest({ message: `messages has ${atLeast} entries; the limit is ${max} (server.maxMessages)` })

/** The parsed body's shape limits, checked before any schema walks it. */
export const shapeProblem = (body: Record<string, unknown>, limits: JsonLimits): BadRequest | null => {
  const messages = body.messages
  if (Array.isArray(messages) && messages.length > limits.maxMessages) {
    return tooManyMessages(messages.length, limits.maxMessages)
  }
  return null
}

export interface InFlightLimits {
  readonly maxInFlightBodyBytes: number
  readonly maxInFlightBodyBytesPerClient: number
}

/**
 * The bytes of request bodies being received, in total and per client address. A body takes its
 * bytes as they arrive and gives them all back once it is read (or refused).
 */
export class BodyBudget {
  private total = 0
  private readonly byClient = new Map<string, number>()
  constructor(readonly limits: InFlightLimits) {}

  /** Takes `n` more bytes for `client`; false (nothing taken) when a limit would be passed. */
  take(client: string, n: number): boolean {
    const mine = this.byClient.get(client) ?? 0
    if (this.total + n > this.limits.maxInFlightBodyBytes || mine + n > this.limits.maxInFlightBodyBytesPerClient) return false
    this.total += n
    this.byClient.set(client, mine + n)
    return true
  }

  give(client: string, n: number): void {
    if (n === 0) return
    this.total -= n
    const left = (this.byClient.get(client) ?? 0) - n
    if (left <= 0) this.byClient.delete(client)
    else this.byClient.set(client, left)
  }

  get inFlight(): number {
    return this.total
  }
}
