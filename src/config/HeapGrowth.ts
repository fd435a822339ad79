/**
 * How far V8 lets the old generation grow past the live heap before a full collection.
 *
 * Under load the gateway promotes ~25 KB of short-lived garbage per request (request objects alive
 * across two scavenges). With V8's own growing factor (up to 4× on a busy heap) the old space grew
 * from ~49 MB live to ~195–205 MB before each mark-compact, so RSS peaked at ~320 MB at c=32.
 * bench/profile.ts (20,000 requests, c=32): a factor of 1.5 gave a peak RSS of ~197 MB for ~5% more
 * CPU per request; a hard `--max-old-space-size=128` gave 192 MB for +37% CPU and can abort on OOM.
 *
 * `AWOOOP_HEAP_GROWING_PERCENT` (default 50; 0 keeps V8's heuristic). A `--heap-growing-percent`
 * on node's own command line wins.
 *
 * Applied when this module is evaluated, which main.ts makes the first thing the process does
 * (its first import; this file imports nothing else): the limit V8 sets at the first full
 * collection, during start-up, must already use the factor, or the first climb goes to ~195 MB.
 * A bad value is not applied here; main.ts fails the start with `heapGrowth.error`.
 */
import v8 from "node:v8"

export const defaultHeapGrowingPercent = 50

export type HeapGrowth = { readonly percent: number; readonly error?: undefined } | { readonly percent?: undefined; readonly error: string }

export const parseHeapGrowingPercent = (raw: string | undefined): HeapGrowth => {
  const text = raw?.trim() ?? ""
  if (text === "") return { percent: defaultHeapGrowingPercent }
  const percent = /^\d+$/.test(text) ? Number(text) : NaN
  return percent <= 1000
    ? { percent }
    : { error: `AWOOOP_HEAP_GROWING_PERCENT: expected a whole number from 0 to 1000 (0 keeps V8's default), got ${JSON.stringify(raw)}` }
}

/** The V8 flag to set, or null when node's command line already sets it or the setting is 0. */
export const heapGrowingFlag = (percent: number, execArgv: ReadonlyArray<string>): string | null =>
  percent === 0 || execArgv.some((arg) => /^--heap[-_]growing[-_]percent/.test(arg)) ? null : `--heap-growing-percent=${percent}`

const applyAtStart = (): HeapGrowth => {
  const growth = parseHeapGrowingPercent(process.env.AWOOOP_HEAP_GROWING_PERCENT)
  const flag = growth.error === undefined ? heapGrowingFlag(growth.percent, process.execArgv) : null
  if (flag !== null) v8.setFlagsFromString(flag)
  return growth
}

export const heapGrowth: HeapGrowth = applyAtStart()
