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

/** True when the JSON text nests objects/arrays deeper than `max`; one pass over the bytes, no recursion. */
export const nestsDeeperThan = (bytes: Uint8Array, max: number): boolean => {
  let depth = 0
  let inString = false
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!
    if (inString) {
      if (b === BACKSLASH) i++
      else if (b === QUOTE) inString = false
    } else if (b === QUOTE) inString = true
    else if (b === OPEN_OBJECT || b === OPEN_ARRAY) {
      if (++depth > max) return true
    } else if (b === CLOSE_OBJECT || b === CLOSE_ARRAY) depth--
  }
  return false
}

export const tooDeep = (max: number) =>
  new BadRequest({ message: `request body nests objects or arrays more than ${max} levels deep (the limit is server.maxJsonDepth)` })

/** The parsed body's shape limits, checked before any schema walks it. */
export const shapeProblem = (body: Record<string, unknown>, limits: JsonLimits): BadRequest | null => {
  const messages = body.messages
  if (Array.isArray(messages) && messages.length > limits.maxMessages) {
    return new BadRequest({ message: `messages has ${messages.length} entries; the limit is ${limits.maxMessages} (server.maxMessages)` })
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
