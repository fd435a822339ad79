/**
 * A host's maintenance window (the runbook's "an operator opens maintenance"): open or closed, until
 * when, why. Read on every request (plan()'s view), so it is a plain value; opening and closing are
 * journaled on the host's stream, and a window closes by itself at `until` even when nobody reads
 * it, so the journal says when it ended. With a `WindowStore` windows outlive the process and are
 * shared by replicas (operations/MaintenanceWindows.ts).
 */
import { Clock, Effect, FiberHandle, Ref, type Scope } from "effect"
import type { HostEvent } from "../domain/Events.ts"

export interface Maintenance {
  readonly open: boolean
  readonly reason: string | null
  readonly until: number | null
}

/** An open window as stored (operations/MaintenanceWindows.ts): `id` tells it from a newer one. */
export interface StoredWindow {
  readonly id: number
  readonly reason: string
  readonly until: number | null
}

/**
 * Where windows outlive the process and are shared by replicas. Without one (unit tests) windows
 * live in memory only. A store that cannot be reached is a defect of the operator's call.
 */
export interface WindowStore {
  /** Stores the host's window (replacing an open one); its id. */
  readonly open: (host: string, reason: string, until: number | null) => Effect.Effect<number>
  /** Deletes the host's window (only window `id` when given); true when this call deleted it. */
  readonly close: (host: string, id: number | null) => Effect.Effect<boolean>
}

const closed: Maintenance = { open: false, reason: null, until: null }

/** Sleeps until the epoch-ms time `at` (in steps of a day: longer timers count as "never" in Effect's clock). */
export const sleepUntil = (at: number): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    now >= at ? Effect.void : Effect.zipRight(Effect.sleep(Math.min(at - now, 86_400_000)), Effect.suspend(() => sleepUntil(at))))

export const makeHostMaintenance = (
  host: string,
  windows: WindowStore | undefined,
  append: (event: Extract<HostEvent, { readonly _tag: "MaintenanceOpened" | "MaintenanceClosed" }>) => Effect.Effect<void>
): Effect.Effect<HostMaintenance, never, Scope.Scope> =>
  Effect.gen(function*() {
    let maintenance: Maintenance = closed
    // Each window gets an id, so the fiber closing an expired window never closes a newer one.
    const windowId = yield* Ref.make(0)
    const closer = yield* FiberHandle.make<void, never>()

    /**
     * Closes window `id` (null: whichever is open) if it is still the open one. Journaled once: with
     * a store, only by the replica whose delete removed it; in memory, by whoever gets there first.
     */
    const closeWindow = (id: number | null, reason: string, expired: boolean) =>
      Effect.gen(function*() {
        const current = yield* Ref.get(windowId)
        const ours = windows === undefined ? id === null || id === current : yield* windows.close(host, id)
        const was = maintenance
        if (id === null || id === current) maintenance = closed
        if (!ours || !was.open && windows === undefined) return false
        yield* append({ _tag: "MaintenanceClosed", host, reason, expired, openReason: was.reason, until: was.until })
        return true
      }).pipe(Effect.uninterruptible)

    /** Arms the closer of window `id` at `until` (or disarms it for a window without an end). */
    const closeAt = (id: number, until: number | null) =>
      until === null
        ? FiberHandle.clear(closer)
        : FiberHandle.run(
          closer,
          Effect.zipRight(sleepUntil(until), closeWindow(id, `the window ended at ${new Date(until).toISOString()}`, true))
        )

    const open = (reason: string, until: number | null) =>
      Effect.gen(function*() {
        const id = windows === undefined
          ? yield* Ref.updateAndGet(windowId, (n) => n + 1)
          : yield* Effect.tap(windows.open(host, reason, until), (id) => Ref.set(windowId, id))
        const m: Maintenance = { open: true, reason, until }
        maintenance = m
        yield* append({ _tag: "MaintenanceOpened", host, open: true, reason, until })
        yield* closeAt(id, until)
        return m
      }).pipe(Effect.uninterruptible)

    const close = (reason: string) => Effect.zipLeft(closeWindow(null, reason, false), FiberHandle.clear(closer))

    const adopt = (window: StoredWindow | null) =>
      Effect.gen(function*() {
        if (window === null) {
          if (!maintenance.open) return
          maintenance = closed
          return yield* FiberHandle.clear(closer)
        }
        if (maintenance.open && (yield* Ref.get(windowId)) === window.id) return
        yield* Ref.set(windowId, window.id)
        maintenance = { open: true, reason: window.reason, until: window.until }
        yield* closeAt(window.id, window.until)
      }).pipe(Effect.uninterruptible)

    const at = (now: number): Maintenance =>
      maintenance.open && maintenance.until !== null && now >= maintenance.until ? closed : maintenance

    return { at, open, close, adopt }
  })

export interface HostMaintenance {
  /** The window as it stands at `now` (one past its `until` reads closed before its closer has run). */
  readonly at: (now: number) => Maintenance
  /** Opens (or replaces) a window; it closes by itself at `until`, journaled. */
  readonly open: (reason: string, until: number | null) => Effect.Effect<Maintenance>
  /** Closes the window now; false when none was open. */
  readonly close: (reason: string) => Effect.Effect<boolean>
  /** Takes on a stored window (null: none) without journaling it. */
  readonly adopt: (window: StoredWindow | null) => Effect.Effect<void>
}
