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
import type { AnyEvent, EventOf, RunEvent } from "../domain/Events.ts"
import { Journal } from "./Journal.ts"
import type { JournalEvent } from "./JournalEvent.ts"
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

/** A writer of one stream; `E` is its stream kind's events (domain/Events.ts): a run's by default. */
export interface StreamWriter<E extends AnyEvent = RunEvent> {
  readonly streamId: string
  /** Queue an event for the group commit (off the request path). */
  readonly append: (event: E) => Effect.Effect<void>
  /** Append and wait until it is committed (before money is spent, say). */
  readonly appendDurable: (event: E) => Effect.Effect<void, unknown>
  /** The next position this writer will use. */
  readonly position: () => number
  /** Where the run stands (for `endRun`). */
  readonly progress: () => RunProgress
}

export interface StreamWriterOptions {
  /** Persist the terminal event before `append` returns (`server.durableRunEnd`). */
  readonly durableEnd?: boolean
}

export const makeStreamWriter = <E extends AnyEvent = RunEvent>(
  journal: Journal,
  base: StreamBase,
  startPosition = 0,
  options: StreamWriterOptions = {}
): StreamWriter<E> => {
  let next = startPosition
  let ended = false
  const openAttempts: Array<number> = []
  // The row's data is the event without its tag: the value already has the encoded shape (no Schema encode here).
  const row = ({ _tag, ...data }: E, occurredAt: number): JournalEvent => ({
    streamId: base.streamId,
    streamPosition: next++,
    type: _tag,
    traceId: base.traceId,
    projectId: base.projectId,
    lane: base.lane,
    data,
    occurredAt
  })
  /** False for a second terminal event, which is not written. */
  const track = (event: E): boolean => {
    const type = event._tag
    if (isTerminalRunEvent(type)) {
      if (ended) return false
      ended = true
      return true
    }
    const attempt = (event as { readonly attempt?: unknown }).attempt
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
    append: (event) =>
      Effect.suspend(() => {
        if (!track(event)) return second(event._tag)
        return Effect.clockWith((clock) => {
          const e = row(event, clock.unsafeCurrentTimeMillis())
          if (!(options.durableEnd === true && isTerminalRunEvent(e.type))) return journal.append(e)
          return journal.appendPersisted(e).pipe(
            Effect.catchAll((error) => Effect.logWarning(`Journal: the end of ${base.streamId} could not be persisted before the answer`, error))
          )
        })
      }),
    appendDurable: (event) =>
      Effect.suspend(() => {
        if (!track(event)) return second(event._tag)
        return Effect.clockWith((clock) => journal.appendDurable(row(event, clock.unsafeCurrentTimeMillis())))
      }),
    position: () => next,
    progress: () => ({ ended, openAttempts: [...openAttempts] })
  }
}

/**
 * Ends the run if nothing has yet: each unsettled attempt `AttemptFailed` (kind `interrupted`), then
 * `RunFailed` with `fields`. A no-op on a run that ended.
 */
export const endRun = (run: StreamWriter, fields: Pick<EventOf<"RunFailed">, "status" | "error" | "message">, startedAt: number) =>
  Effect.suspend(() => {
    const progress = run.progress()
    if (progress.ended) return Effect.void
    return Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      for (const attempt of progress.openAttempts) {
        yield* run.append({ _tag: "AttemptFailed", attempt, kind: "interrupted", status: null, message: fields.message, afterFirstChunk: null })
      }
      yield* run.append({ _tag: "RunFailed", status: fields.status, error: fields.error, message: fields.message, durationMs: now - startedAt })
    })
  })
