/**
 * How far V8 lets the old generation grow past the live heap before a full collection.
 *
 * Under load the gateway promotes ~25 KB of short-lived garbage per request (request objects alive
 * across two scavenges). With V8's own growing factor (up to 4× on a busy heap) the old space grew
 * from ~49 MB live to ~205 MB before each mark-compact, so RSS peaked at ~320 MB at c=32.
 * bench/profile.ts (20,000 requests, c=32): a factor of 1.5 gave a peak RSS of 196 MB for ~5% more
 * CPU per request; a hard `--max-old-space-size=128` gave 192 MB for +37% CPU and can abort on OOM.
 *
 * `AWOOOP_HEAP_GROWING_PERCENT` (default 50; 0 keeps V8's heuristic). A `--heap-growing-percent`
 * on node's own command line wins.
 */
import v8 from "node:v8"
import { Config, Effect, Layer } from "effect"

export const defaultHeapGrowingPercent = 50

export const HeapGrowingPercent = Config.integer("AWOOOP_HEAP_GROWING_PERCENT").pipe(
  Config.validate({ message: "expected a whole number from 0 to 1000 (0 keeps V8's default)", validation: (n) => n >= 0 && n <= 1000 }),
  Config.withDefault(defaultHeapGrowingPercent)
)

/** The V8 flag to set, or null when node's command line already sets it or the setting is 0. */
export const heapGrowingFlag = (percent: number, execArgv: ReadonlyArray<string>): string | null =>
  percent === 0 || execArgv.some((arg) => /^--heap[-_]growing[-_]percent/.test(arg)) ? null : `--heap-growing-percent=${percent}`

/** Set before the service is built: V8 reads the flag at each collection, so it holds from the first load on. */
export const HeapGrowthLive = Layer.effectDiscard(
  Effect.flatMap(HeapGrowingPercent, (percent) =>
    Effect.sync(() => {
      const flag = heapGrowingFlag(percent, process.execArgv)
      if (flag !== null) v8.setFlagsFromString(flag)
    }))
)
