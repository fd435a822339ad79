/**
 * What the additive projections (cost ledger, metrics) fold over: a journal event together with
 * the transition it caused in its stream's state. A re-delivered event causes no transition, so
 * it reaches them with `run` and `host` both null and adds nothing.
 */
import { HashMap } from "effect"
import type { ProjectionEvent } from "./Event.ts"
import type { HostState } from "./HostState.ts"
import type { RunState } from "./RunState.ts"

export interface Transition<S> {
  /**
   * The state before the event; null for a new stream — and, from the projector's batch fold,
   * for a run that was still running: neither contributes anything to the additive projections,
   * and not copying a running state for every event keeps the fold fast.
   */
  readonly before: S | null
  readonly after: S
}

export interface Change {
  readonly event: ProjectionEvent
  readonly run: Transition<RunState> | null
  readonly host: Transition<HostState> | null
}

/** Key of an additive row: its parts joined by a separator that cannot occur in them. */
export const keyOf = (parts: ReadonlyArray<string>): string => parts.join("\u0000")

/**
 * An additive projection's pure fold: each `[row, sign]` of `deltas` added (or, signed -1,
 * taken away) into the row of its key, which starts as `zero(row)`.
 */
export const addDeltas = <R>(
  rows: HashMap.HashMap<string, R>,
  deltas: ReadonlyArray<readonly [R, 1 | -1]>,
  keyOfRow: (row: R) => string,
  plus: (base: R, row: R, sign: 1 | -1) => R,
  zero: (row: R) => R
): HashMap.HashMap<string, R> =>
  deltas.reduce((acc, [row, sign]) => {
    const key = keyOfRow(row)
    const prev = HashMap.get(acc, key)
    return HashMap.set(acc, key, plus(prev._tag === "Some" ? prev.value : zero(row), row, sign))
  }, rows)
