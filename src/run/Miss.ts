/** A host (or provider) that did not answer, and why paid providers are asked. */
import { isUnavailability, skipWords } from "./SkipReason.ts"

/**
 * A failed or skipped step, in the order it happened: kept for the final error, the journal and
 * run_state's `misses` (whose JSON has these field names). Readers that need only who and why take
 * `Pick<Miss, "host" | "kind">`.
 */
export interface Miss {
  readonly host: string
  /** circuit-open, host-down, timeout, refused, busy, heavy-model-denied, budget-denied, ... */
  readonly kind: string
  readonly text: string
}

/** Failure kinds that say an Ollama endpoint failed (a skip says so when it is an unavailability). */
const failureLabels: Readonly<Record<string, string>> = {
  timeout: "timeout",
  refused: "refused",
  busy: "busy",
  "server-error": "error",
  reset: "connection reset",
  malformed: "malformed answer",
  truncated: "truncated answer",
  "not-found": "model not found",
  saturated: "saturated"
}

/** "gcp-a timeout", "gcp-b circuit open"; undefined for a miss that is a rule's refusal, not a failure. */
const failedPart = (m: Pick<Miss, "host" | "kind">): string | undefined => {
  const label = failureLabels[m.kind]
  if (label !== undefined) return `${m.host} ${label}`
  return isUnavailability(m) ? skipWords(m.host, { kind: m.kind }, "fallback") : undefined
}

/**
 * The runbook's condition: paid providers only when every Ollama endpoint failed or is circuit-open.
 * Null when a rule (not a failure) turned a host away; otherwise the reason to journal.
 */
export const fallbackReason = (misses: ReadonlyArray<Pick<Miss, "host" | "kind">>, route: ReadonlyArray<string> = []): string | null => {
  // In route order (a skip found by plan() is recorded before the attempts that failed).
  const rank = (host: string) => {
    const i = route.indexOf(host)
    return i < 0 ? route.length : i
  }
  const tried = misses.filter((m) => m.kind !== "only-when-unavailable").sort((a, b) => rank(a.host) - rank(b.host))
  const failed = tried.map(failedPart)
  if (failed.some((part) => part === undefined)) return null
  const parts = [...new Set(failed)]
  return `all Ollama endpoints failed: ${parts.length > 0 ? parts.join(", ") : "the lane has no Ollama endpoint"}`
}

/** For tests and the README: the reason a `paid` lane records. */
export const directReason = (lane: string) => `lane ${lane} calls paid providers directly (no Ollama route)`
