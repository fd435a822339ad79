/**
 * A run as the lane and the paid route both see it: the request, the answer, who runs it. Both
 * import these from here, so neither imports the other's values.
 */
import type { Stream } from "effect"
import type { CallerContext } from "../domain/CallerContext.ts"
import type { OllamaRequest } from "../domain/OllamaApi.ts"
import type { Protocol } from "../domain/Protocol.ts"
import type { StreamWriter } from "../journal/StreamWriter.ts"
import type { ChunkSource } from "../routing/ChunkSource.ts"

/**
 * What a lane runs: the decoded Ollama request (its `model` is replaced by the lane's; fields the
 * schema does not know were dropped when it was decoded) and how the caller asked for it.
 */
export type LaneRequest = OllamaRequest & LaneRequestFacts

export interface LaneRequestFacts {
  readonly stream: boolean
  readonly caller: CallerContext
  /** Recorded only when the config asks for prompts to be journaled. */
  readonly prompt: unknown
  /** The protocol the caller spoke (journaled on RunStarted); absent: Ollama's. */
  readonly protocol?: Protocol
}

export interface RunInfo {
  readonly runId: string
  readonly traceId: string
  readonly lane: string
  readonly model: string
  /** The host that answered. */
  readonly endpoint: string
}

export type LaneResult =
  | { readonly _tag: "Unary"; readonly info: RunInfo; readonly bytes: Uint8Array }
  | {
    readonly _tag: "Stream"
    readonly info: RunInfo
    readonly stream: Stream.Stream<Uint8Array>
    /** The same chunks as a pull (an Ollama relay), for a consumer that writes them as they are. */
    readonly source?: ChunkSource
    /** The step's timeout: a caller that takes no chunk for this long is cut off (a slow consumer). */
    readonly idleTimeoutMs?: number
  }

/**
 * An async run's worker (operations/async/AsyncRuns.ts) runs the lane under the run's own id and stream:
 * no RunStarted (the run journaled its own when it was queued), no async-only refusal, attempts
 * numbered after those an earlier process made, and an interruption (shutdown, cancel) journals
 * nothing here: the worker decides what it means.
 */
/** What RunStarted records of the caller, for synchronous and async runs alike (never the key). */
export const callerFacts = (caller: CallerContext) => ({
  intent: caller.intent,
  caller: caller.caller ?? null,
  legacy: caller.legacy,
  traceMinted: caller.traceMinted,
  parentSpanId: caller.parentSpanId
})

export interface RunAs {
  readonly runId: string
  readonly run: StreamWriter
  readonly attemptsSoFar: number
}
