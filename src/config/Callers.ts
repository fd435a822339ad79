/**
 * Who may call the gateway (the `callers:` and `anonymous:` keys of the config file, a public
 * contract): each caller is a bearer key bound to one project, the lanes it may use, and an optional
 * budget inside the global one. Callers without a key are `anonymous` (the legacy bootstrap of
 * ADR-111), on their own lanes, and never spend money unless `anonymous.paidFallback` says so.
 * Without `callers:` the gateway is open, as it was before (main.ts warns at start-up).
 *
 * Keys never go in the config: `keyEnv` names an environment variable holding the key, `keySha256`
 * is the key's sha256 in hex. Either may list several (key rotation: old and new key overlap).
 */
import { createHash } from "node:crypto"
import { Schema } from "effect"

const Name = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9._:-]{1,64}$/, {
  message: () => "expected a name of letters, digits, '.', '_', ':' or '-' (1-64 characters)"
}))
const EnvName = Schema.String.pipe(Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]*$/, {
  message: () => "expected the NAME of an environment variable (the key itself never goes in the config)"
}))

/** What applyCallerKeys writes for a keyEnv whose variable is not set, so the check can name it. */
const unsetPrefix = "unset-env:"

const KeyDigest = Schema.String.pipe(Schema.filter((s) =>
  /^[0-9a-f]{64}$/.test(s) ||
  (s.startsWith(unsetPrefix)
    ? `keyEnv ${s.slice(unsetPrefix.length)}: the environment variable is not set or empty`
    : "expected the key's sha256 as 64 lowercase hex digits (printf %s \"$KEY\" | sha256sum)")
))

const Usd = Schema.Number.pipe(Schema.finite(), Schema.greaterThanOrEqualTo(0))

export const CallerBudget = Schema.Struct({
  /** This caller's paid spending (settled plus reserved) per period never exceeds this. */
  hardKillUsd: Usd,
  period: Schema.optionalWith(Schema.Literal("hour", "day", "month"), { default: () => "day" as const })
})
export type CallerBudget = typeof CallerBudget.Type

export const CallerConfig = Schema.Struct({
  /** Environment variable(s) holding the bearer key (read at start-up; hashed, never kept). */
  keyEnv: Schema.optionalWith(Schema.Array(EnvName), { default: () => [] }),
  /** sha256 (hex) of the key(s); keyEnv's keys are added here when the config is loaded. */
  keySha256: Schema.optionalWith(Schema.Array(KeyDigest), { default: () => [] }),
  project: Name,
  lanes: Schema.Array(Name),
  budget: Schema.optional(CallerBudget),
  /** May this caller's requests fall back to (or call) paid providers; default true for a keyed caller. */
  paidFallback: Schema.optionalWith(Schema.Boolean, { default: () => true })
})
export type CallerConfig = typeof CallerConfig.Type

export const AnonymousConfig = Schema.Struct({
  project: Name,
  lanes: Schema.optionalWith(Schema.Array(Name), { default: () => [] }),
  /** Default false: anonymous traffic never spends money. */
  paidFallback: Schema.optionalWith(Schema.Boolean, { default: () => false })
})
export type AnonymousConfig = typeof AnonymousConfig.Type

export const keyDigest = (key: string): string => createHash("sha256").update(key, "utf8").digest("hex")

/**
 * Before decoding: each caller's `keyEnv` variables are read and their keys' digests added to its
 * `keySha256` (an unset variable leaves a marker the schema reports by name). The key itself is
 * dropped here; only its digest reaches the config.
 */
export const applyCallerKeys = (raw: unknown, env: Record<string, string | undefined>): unknown => {
  if (typeof raw !== "object" || raw === null) return raw
  const callers = (raw as { callers?: unknown }).callers
  if (typeof callers !== "object" || callers === null || Array.isArray(callers)) return raw
  const next: Record<string, unknown> = {}
  for (const [name, caller] of Object.entries(callers)) {
    if (typeof caller !== "object" || caller === null) {
      next[name] = caller
      continue
    }
    // One key or a list: both read as a list (so an error names the entry, not the union).
    const c = caller as { keyEnv?: unknown; keySha256?: unknown }
    const list = (v: unknown): Array<unknown> | undefined => (v === undefined ? undefined : Array.isArray(v) ? v : [v])
    const envNames = list(c.keyEnv) ?? []
    const fromEnv = envNames.filter((n): n is string => typeof n === "string").map((n) => {
      const key = env[n]
      return key === undefined || key === "" ? `${unsetPrefix}${n}` : keyDigest(key)
    })
    const given = list(c.keySha256)
    next[name] = {
      ...caller,
      ...(c.keyEnv === undefined ? {} : { keyEnv: envNames }),
      ...(given === undefined && fromEnv.length === 0 ? {} : { keySha256: [...(given ?? []), ...fromEnv] })
    }
  }
  return { ...raw, callers: next }
}

/** Cross-references of callers and anonymous: lanes exist, keys are given and not shared, budgets fit. */
export const callerIssues = (config: {
  readonly lanes: Readonly<Record<string, unknown>>
  readonly callers?: Readonly<Record<string, CallerConfig>>
  readonly anonymous?: AnonymousConfig
  readonly budget?: unknown
}): Array<Schema.FilterIssue> => {
  const issues: Array<Schema.FilterIssue> = []
  const lanes = Object.keys(config.lanes)
  const checkLanes = (path: ReadonlyArray<PropertyKey>, names: ReadonlyArray<string>) =>
    names.forEach((lane, i) => {
      if (!lanes.includes(lane)) issues.push({ path: [...path, i], message: `unknown lane ${JSON.stringify(lane)} (lanes: ${lanes.join(", ")})` })
    })
  const owner = new Map<string, string>()
  for (const [name, caller] of Object.entries(config.callers ?? {})) {
    checkLanes(["callers", name, "lanes"], caller.lanes)
    if (caller.keySha256.length === 0) {
      issues.push({ path: ["callers", name], message: "a caller needs a key: keyEnv (an environment variable) or keySha256" })
    }
    for (const digest of caller.keySha256) {
      const other = owner.get(digest)
      if (other !== undefined && other !== name) issues.push({ path: ["callers", name, "keySha256"], message: `the same key is also caller ${other}'s` })
      owner.set(digest, name)
    }
    if (caller.budget !== undefined && config.budget === undefined) {
      issues.push({ path: ["callers", name, "budget"], message: "a caller's budget lies inside the global one: set `budget` with hardKillUsd too" })
    }
  }
  if (config.anonymous !== undefined) checkLanes(["anonymous", "lanes"], config.anonymous.lanes)
  return issues
}
