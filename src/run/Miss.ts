/** A host (or provider) that did not answer, and why paid providers are asked. */

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

/** Every miss kind that says an Ollama endpoint failed or could not be used (a rule refusal does not). */
const missLabels: Readonly<Record<string, string>> = {
  timeout: "timeout",
  "circuit-open": "circuit open",
  "probe-in-flight": "circuit half-open",
  refused: "refused",
  "host-down": "down",
  busy: "busy",
  "server-error": "error",
  reset: "connection reset",
  malformed: "malformed answer",
  truncated: "truncated answer",
  "not-found": "model not found",
  "model-not-installed": "model not installed",
  saturated: "saturated"
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
  if (tried.some((m) => missLabels[m.kind] === undefined)) return null
  const seen = new Set<string>()
  const parts: Array<string> = []
  for (const m of tried) {
    const part = `${m.host} ${missLabels[m.kind]}`
    if (!seen.has(part)) parts.push(part)
    seen.add(part)
  }
  return `all Ollama endpoints failed: ${parts.length > 0 ? parts.join(", ") : "the lane has no Ollama endpoint"}`
}

/** For tests and the README: the reason a `paid` lane records. */
export const directReason = (lane: string) => `lane ${lane} calls paid providers directly (no Ollama route)`
