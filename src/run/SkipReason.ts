/**
 * Why plan() left a host out of a run, and the one renderer of it. The wordings differ by reader
 * (a caller's error, an operator's health view, run_state's stable fallback_reason, the paid
 * fallback's reason), so they are variants of one switch rather than four copies.
 */

import { Schema } from "effect"

/** Why a host was left out (journaled in RouteDecided's plan, so a Schema: the journal's catalogue decodes it). */
export const SkipReason = Schema.Union(
  Schema.Struct({ kind: Schema.Literal("circuit-open"), until: Schema.NullOr(Schema.Number) }),
  Schema.Struct({ kind: Schema.Literal("probe-in-flight") }),
  Schema.Struct({ kind: Schema.Literal("host-down") }),
  Schema.Struct({ kind: Schema.Literal("heavy-model-denied"), sizeB: Schema.Number, minParamsB: Schema.Number }),
  Schema.Struct({ kind: Schema.Literal("model-not-installed") }),
  /** A "when: unavailable" step after a step that a rule refused (not one that was unavailable). */
  Schema.Struct({ kind: Schema.Literal("only-when-unavailable") })
)
export type SkipReason = typeof SkipReason.Type

export const Skip = Schema.Struct({ host: Schema.String, reason: SkipReason })
export type Skip = typeof Skip.Type

/** A skip reason read back from a journal: an old or foreign one may lack fields or have another kind. */
export interface RecordedSkipReason {
  readonly kind: string | null
  readonly until?: number | null
  readonly sizeB?: number | null
  readonly minParamsB?: number | null
}

/**
 * caller: the error and the journal (RouteDecided's reasons, KeepWarmSkipped); operator: health and
 * shadow; record: run_state's fallback_reason (stable, short); fallback: the paid fallback's reason.
 */
export type Wording = "caller" | "operator" | "record" | "fallback"

/** Skips that mean "this host cannot take the request now", as opposed to a rule refusing it. */
export const isUnavailability = (reason: { readonly kind: string | null }): boolean =>
  reason.kind === "circuit-open" || reason.kind === "probe-in-flight" || reason.kind === "host-down" ||
  reason.kind === "model-not-installed"

export const skipWords = (host: string, reason: SkipReason | RecordedSkipReason, wording: Wording): string => {
  const pick = (caller: string, operator: string, record: string, fallback = record) =>
    `${host} ${wording === "caller" ? caller : wording === "operator" ? operator : wording === "record" ? record : fallback}`
  const r: RecordedSkipReason = reason
  const size = r.sizeB ?? "?"
  switch (r.kind) {
    case "circuit-open":
      return pick(`circuit open${r.until != null ? ` until ${new Date(r.until).toISOString()}` : ""}`, "circuit open", "circuit open")
    case "probe-in-flight":
      return pick("circuit half-open, probe in flight", "circuit half-open (probe in flight)", "circuit half-open (probe in flight)", "circuit half-open")
    case "host-down":
      return pick("down", "down", "down")
    case "heavy-model-denied":
      return pick(
        `denies ${size}B models (protected host, heavy >= ${r.minParamsB ?? "?"}B, no maintenance window)`,
        `denies ${size}B models (protected host, no maintenance window)`,
        `denies heavy models (${size}B >= ${r.minParamsB ?? "?"}B)`
      )
    case "model-not-installed":
      return pick("does not have the model", "lacks the model", "lacks the model", "model not installed")
    case "only-when-unavailable":
      return pick(
        "is used only when the hosts before it are unavailable, and one was refused by a rule",
        "only when the hosts before it are unavailable",
        "skipped (only-when-unavailable)"
      )
    default:
      return `${host} skipped (${r.kind ?? "unknown"})`
  }
}

/** The caller's wording of a plan's skip (what the lane's error and the journal say). */
export const describeSkip = (skip: Skip): string => skipWords(skip.host, skip.reason, "caller")
