/**
 * A lane's mode at runtime: `active` (requests run) or `shadow` (each request is answered 202 with
 * the routing decision, journaled, and nothing runs: operations/Shadow.ts). The config's `mode` is
 * the default; the operator pins a lane to either mode with the admin API (http/LaneModeRoutes.ts)
 * — the runbook's per-lane activation and its rollback, without a restart or a deploy — and removes
 * the pin to return to the config's mode.
 *
 * The pin is stored in Postgres (operations/LaneModes.ts, migration 010), so it survives a restart
 * and every replica takes it on (at start, and in a cluster at each poll); the replica that took
 * the operator's call journals the change on the lane's stream ("lane-<name>", LaneModeChanged).
 * Every request reads `current()`: a plain read, so the next request after a change sees it.
 */
import { Clock, Data, Effect } from "effect"
import type { LaneEvent } from "../domain/Events.ts"
import type { Journal } from "../journal/Journal.ts"
import { makeStreamWriter, type StreamBase, type StreamWriter } from "../journal/StreamWriter.ts"

export type Mode = "active" | "shadow"

/** The operator's mode of a lane as stored. */
export interface StoredMode {
  readonly mode: Mode
  readonly reason: string
  readonly by: string
  /** epoch ms */
  readonly changedAt: number
}

/** The lane's mode now, and where it comes from. */
export interface ModeState {
  readonly mode: Mode
  /** "operator": pinned by the admin API; "config": the config's `mode`. */
  readonly source: "config" | "operator"
  /** The operator's pin; null when the config's mode applies. */
  readonly operator: StoredMode | null
}

/** The store (Postgres) did not answer: the operator's change was not made, anywhere. */
export class ModeStoreUnavailable extends Data.TaggedError("ModeStoreUnavailable")<{ readonly message: string }> {}

/** Where the operator's modes outlive the process and are shared by replicas (operations/LaneModes.ts). */
export interface ModeStore {
  /**
   * Stores the lane's mode. `previous`: the mode stored before (null: none); `changed` false when
   * this mode was stored already (the stored pin, with its reason and time, is left as it was).
   */
  readonly set: (lane: string, mode: Mode, reason: string, by: string) => Effect.Effect<{
    readonly changed: boolean
    readonly stored: StoredMode | null
    readonly previous: Mode | null
  }, ModeStoreUnavailable>
  /** Deletes the lane's mode; the one deleted (null: none was stored). */
  readonly clear: (lane: string) => Effect.Effect<StoredMode | null, ModeStoreUnavailable>
}

/** What an operator's call did. */
export interface ModeChange {
  readonly changed: boolean
  readonly previous: Mode
  readonly state: ModeState
}

export interface LaneMode {
  /** The mode now (read by every request, so it is a plain read). */
  readonly current: () => ModeState
  /** Pins the lane to `mode` (stored, journaled); unchanged when it is pinned to it already. Not stored: not changed. */
  readonly set: (mode: Mode, reason: string, by: string) => Effect.Effect<ModeChange, ModeStoreUnavailable>
  /** Removes the pin: the config's mode applies again (journaled when there was a pin). Not stored: not changed. */
  readonly reset: (reason: string, by: string) => Effect.Effect<ModeChange, ModeStoreUnavailable>
  /**
   * Takes on the stored pin (null: none) loaded at start or set by another replica; not journaled.
   * `readAt` (epoch ms) is when the read began: a read older than this replica's own last change is
   * stale (it would undo that change until the next poll) and is ignored.
   */
  readonly adopt: (stored: StoredMode | null, readAt: number) => Effect.Effect<void>
}

export interface LaneModeDeps {
  readonly journal: Journal
  /** Durable, shared pins; without one (unit tests) a pin lives in memory only. */
  readonly store?: ModeStore
  /** The lane stream's writer when several replicas write it (cluster/SharedStreamWriter.ts). */
  readonly sharedWriter?: (base: StreamBase) => StreamWriter<LaneEvent>
}

const stateOf = (configMode: Mode, stored: StoredMode | null): ModeState =>
  stored === null ? { mode: configMode, source: "config", operator: null } : { mode: stored.mode, source: "operator", operator: stored }

/** A pin kept in memory (a lane built without a store: unit tests, the scripted gateway). */
const memoryStore = (): ModeStore => {
  const pins = new Map<string, StoredMode>()
  return {
    set: (lane, mode, reason, by) =>
      Effect.sync(() => {
        const before = pins.get(lane) ?? null
        if (before !== null && before.mode === mode) return { changed: false, stored: before, previous: before.mode }
        const stored: StoredMode = { mode, reason, by, changedAt: Date.now() }
        pins.set(lane, stored)
        return { changed: true, stored, previous: before?.mode ?? null }
      }),
    clear: (lane) =>
      Effect.sync(() => {
        const before = pins.get(lane) ?? null
        pins.delete(lane)
        return before
      })
  }
}

export const make = (lane: string, configMode: Mode, deps: LaneModeDeps): Effect.Effect<LaneMode> =>
  Effect.gen(function*() {
    const store = deps.store ?? memoryStore()
    let state = stateOf(configMode, null)
    // One operator change of this lane at a time in this process, so its journal order is the table's.
    const lock = yield* Effect.makeSemaphore(1)
    const base: StreamBase = { streamId: `lane-${lane}`, traceId: null, projectId: null, lane }
    // Made at the first change (the single runner's writer continues the stream where it ended).
    let writer: StreamWriter<LaneEvent> | null = deps.sharedWriter?.(base) ?? null
    const writerOf = Effect.suspend(() =>
      writer !== null
        ? Effect.succeed(writer)
        : Effect.map(Effect.orDie(deps.journal.streamHead(base.streamId)), (head) => (writer = makeStreamWriter<LaneEvent>(deps.journal, base, head))))

    const journal = (event: Omit<LaneEvent, "_tag" | "lane">) =>
      Effect.flatMap(writerOf, (w) => w.append({ _tag: "LaneModeChanged", lane, ...event }))

    // When this replica last changed the pin: an older read does not undo it.
    let changedHereAt = 0
    const take = (stored: StoredMode | null) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        state = stateOf(configMode, stored)
        changedHereAt = now
      })

    const set = (mode: Mode, reason: string, by: string) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const result = yield* store.set(lane, mode, reason, by)
        const previous = result.previous ?? configMode
        yield* take(result.stored)
        if (result.changed) yield* journal({ mode, previous, source: "operator", reason, by })
        return { changed: result.changed, previous, state } satisfies ModeChange
      })).pipe(Effect.uninterruptible)

    const reset = (reason: string, by: string) =>
      lock.withPermits(1)(Effect.gen(function*() {
        const was = yield* store.clear(lane)
        yield* take(null)
        const previous = was?.mode ?? configMode
        if (was !== null) yield* journal({ mode: configMode, previous, source: "config", reason, by })
        return { changed: was !== null, previous, state } satisfies ModeChange
      })).pipe(Effect.uninterruptible)

    const adopt = (stored: StoredMode | null, readAt: number) =>
      Effect.sync(() => {
        if (readAt >= changedHereAt) state = stateOf(configMode, stored)
      })

    return { current: () => state, set, reset, adopt } satisfies LaneMode
  })
