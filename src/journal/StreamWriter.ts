/**
 * Appends the events of one journal stream (a run, a host) with consecutive positions. The writer
 * owns the position counter, so two events of a stream can never claim the same position.
 *
 * On a run stream it also keeps the run invariant's bookkeeping (RunEnds.ts): whether the run has
 * ended and which attempts are unsettled, so `endRun` can end it on any exit; a second terminal
 * event is never written (it is logged as the bug it is). With `durableEnd`
 * (`server.durableRunEnd`) the terminal event is persisted — committed, or fsync'd to the spill —
 * before the append returns, so before the caller's last byte.
 */
import { Clock, Effect } from "effect"
import { Journal, type JournalEvent } from "./Journal.ts"
import { isTerminalRunEvent } from "./RunEnds.ts"

export interface StreamBase {
  readonly streamId: string
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
}

export interface RunProgress {
  /** A terminal event (RunCompleted | RunFailed) has been appended. */
  readonly ended: boolean
  /** Attempts started and not settled, in order. */
  readonly openAttempts: ReadonlyArray<number>
}

export interface StreamWriter {
  readonly streamId: string
  /** Queue an event for the group commit (off the request path). */
  readonly append: (type: string, data: unknown) => Effect.Effect<void>
  /** Append and wait until it is committed (before money is spent, say). */
  readonly appendDurable: (type: string, data: unknown) => Effect.Effect<void, unknown>
  /** The next position this writer will use. */
  readonly position: () => number
  /** Where the run stands (for `endRun`). */
  readonly progress: () => RunProgress
}

export interface StreamWriterOptions {
  /** Persist the terminal event before `append` returns (`server.durableRunEnd`). */
  readonly durableEnd?: boolean
}

export const makeStreamWriter = (journal: Journal, base: StreamBase, startPosition = 0, options: StreamWriterOptions = {}): StreamWriter => {
  let next = startPosition
  let ended = false
  const openAttempts: Array<number> = []
  const event = (type: string, data: unknown, occurredAt: number): JournalEvent => ({
    streamId: base.streamId,
    streamPosition: next++,
    type,
    traceId: base.traceId,
    projectId: base.projectId,
    lane: base.lane,
    data,
    occurredAt
  })
  /** False for a second terminal event, which is not written. */
  const track = (type: string, data: unknown): boolean => {
    if (isTerminalRunEvent(type)) {
      if (ended) return false
      ended = true
      return true
    }
    const attempt = typeof data === "object" && data !== null ? (data as { attempt?: unknown }).attempt : undefined
    if (typeof attempt === "number") {
      if (type === "AttemptStarted") openAttempts.push(attempt)
      else if (type === "AttemptSucceeded" || type === "AttemptFailed") {
        const i = openAttempts.indexOf(attempt)
        if (i >= 0) openAttempts.splice(i, 1)
      }
    }
    return true
  }
  const second = (type: string) =>
    Effect.logError(`Journal: ${base.streamId} already ended; a second terminal event (${type}) was NOT written`)
  return {
    streamId: base.streamId,
    append: (type, data) =>
      Effect.suspend(() => {
        if (!track(type, data)) return second(type)
        return Effect.clockWith((clock) => {
          const e = event(type, data, clock.unsafeCurrentTimeMillis())
          if (!(options.durableEnd === true && isTerminalRunEvent(type))) return journal.append(e)
          return journal.appendPersisted(e).pipe(
            Effect.catchAll((error) => Effect.logWarning(`Journal: the end of ${base.streamId} could not be persisted before the answer`, error))
          )
        })
      }),
    appendDurable: (type, data) =>
      Effect.suspend(() => {
        if (!track(type, data)) return second(type)
        return Effect.clockWith((clock) => journal.appendDurable(event(type, data, clock.unsafeCurrentTimeMillis())))
      }),
    position: () => next,
    progress: () => ({ ended, openAttempts: [...openAttempts] })
  }
}

/**
 * Ends the run if nothing has yet: each unsettled attempt `AttemptFailed` (kind `interrupted`), then
 * `RunFailed` with `fields`. A no-op on a run that ended.
 */
export const endRun = (run: StreamWriter, fields: { readonly status: number; readonly error: string; readonly message: string } & Readonly<Record<string, unknown>>, startedAt: number) =>
  Effect.suspend(() => {
    const progress = run.progress()
    if (progress.ended) return Effect.void
    return Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      for (const attempt of progress.openAttempts) {
        yield* run.append("AttemptFailed", { attempt, kind: "interrupted", status: null, message: fields.message, afterFirstChunk: null })
      }
      yield* run.append("RunFailed", { ...fields, durationMs: now - startedAt })
    })
  })
