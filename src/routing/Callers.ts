/**
 * Caller identity: which configured caller (config/Callers.ts) a request's `Authorization: Bearer
 * <key>` (or `x-api-key: <key>`, as Anthropic's SDKs send it) belongs to. The key is hashed (sha256) and compared with every configured digest by
 * `timingSafeEqual`, so neither the match nor its position leaks through timing; it is never kept,
 * logged, journaled or put in a span — only the caller's name travels on (CallerContext.caller).
 */
import { createHash, timingSafeEqual } from "node:crypto"
import type { AnonymousConfig, CallerConfig } from "../config/Callers.ts"
import type { Identity } from "../domain/CallerContext.ts"

type HeaderBag = Readonly<Record<string, string | undefined>>

interface Entry {
  readonly digest: Buffer
  readonly identity: Identity
}

/** The bearer token of an Authorization header, or null (no header, another scheme). */
export const bearerOf = (authorization: string | undefined): string | null => {
  if (authorization === undefined) return null
  const match = /^Bearer\s+(\S.*)$/i.exec(authorization.trim())
  return match === null ? null : match[1]!.trim()
}

const nonEmpty = (v: string | undefined): string | null => (v === undefined || v.trim() === "" ? null : v.trim())

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest()

/**
 * `identify` for the lane rules, or undefined in open mode (no `callers:`). `adminToken` is the
 * operator's AWOOOP_ADMIN_TOKEN, recognised so the read routes can show every project to it.
 */
export const makeIdentify = (
  callers: Readonly<Record<string, CallerConfig>> | undefined,
  anonymous: AnonymousConfig | undefined,
  adminToken: string | null,
  legacyProjectId: string
): ((headers: HeaderBag) => Identity) | undefined => {
  if (callers === undefined) return undefined
  const entries: Array<Entry> = []
  for (const [name, caller] of Object.entries(callers)) {
    const identity: Identity = { _tag: "Caller", name, project: caller.project, lanes: caller.lanes, mayPay: caller.paidFallback }
    for (const hex of caller.keySha256) entries.push({ digest: Buffer.from(hex, "hex"), identity })
  }
  if (adminToken !== null && adminToken !== "") entries.push({ digest: sha256(adminToken), identity: { _tag: "Admin" } })
  const keyless: Identity = {
    _tag: "Anonymous",
    name: "anonymous",
    project: anonymous?.project ?? legacyProjectId,
    lanes: anonymous?.lanes ?? [],
    mayPay: anonymous?.paidFallback ?? false
  }
  const unknown: Identity = { _tag: "UnknownKey" }
  return (headers) => {
    // Anthropic's SDKs send their apiKey as x-api-key (POST /v1/messages); every other client as a bearer token.
    const token = bearerOf(headers["authorization"]) ?? nonEmpty(headers["x-api-key"])
    if (token === null) return keyless
    const digest = sha256(token)
    // Every entry is compared (no early exit), so the time does not say which one matched.
    let found: Identity = unknown
    for (const entry of entries) {
      if (timingSafeEqual(digest, entry.digest)) found = entry.identity
    }
    return found
  }
}
