/**
 * Console sessions: the operator types the admin token (AWOOOP_ADMIN_TOKEN) once; it is checked
 * exactly as the admin API checks a bearer token (http/AdminAuth.ts) and exchanged for a random
 * session id in an HttpOnly, SameSite=Strict cookie scoped to /console. The token never reaches
 * the browser again, and scripts cannot read the cookie.
 *
 * Every POST must (1) come from our own origin (Origin, else Sec-Fetch-Site, must say so), (2) carry
 * a live session and (3) carry that session's CSRF token in the form. The token the session was
 * opened with is checked again on each POST, so rotating AWOOOP_ADMIN_TOKEN ends old sessions.
 * Sessions live in the process (a restart logs everyone out) and last 8 hours.
 */
import { HttpServerRequest } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Clock, Data, Effect, Redacted } from "effect"
import { randomBytes } from "node:crypto"
import { requireAdmin } from "../http/AdminAuth.ts"
import { readBody } from "../http/RequestBody.ts"

export const cookieName = "awooop_console"
export const sessionTtlMs = 8 * 3_600_000
const maxSessions = 256

export interface Session {
  readonly id: string
  readonly csrf: string
  readonly token: Redacted.Redacted<string>
  readonly expiresAt: number
}

export class ConsoleRefused extends Data.TaggedError("ConsoleRefused")<{ readonly status: 400 | 401 | 403 | 413; readonly reason: string }> {}

const secret = () => randomBytes(32).toString("base64url")

const cookieOf = (header: string | undefined, name: string): string | null => {
  for (const part of (header ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=")
    if (k === name) return v.join("=")
  }
  return null
}

/** The admin check of AdminAuth.ts, run as if `token` had come as the bearer header. */
const checkToken = (token: Redacted.Redacted<string>) =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    requireAdmin.pipe(
      Effect.provideService(
        HttpServerRequest.HttpServerRequest,
        request.modify({ headers: { ...request.headers, authorization: `Bearer ${Redacted.value(token)}` } })
      )
    ))

/** POST bodies of the console's forms: small urlencoded forms. */
export const readForm = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const limit = 16 * 1024
  // The edge's one body reader: a typed BodyTooLarge is the 413; a body that could not be read, a 400.
  const bytes = yield* readBody(NodeHttpServerRequest.toIncomingMessage(request), limit, { res: NodeHttpServerRequest.toServerResponse(request) }).pipe(
    Effect.mapError((e) =>
      e._tag === "BodyTooLarge"
        ? new ConsoleRefused({ status: 413, reason: `the form is larger than ${limit} bytes` })
        : new ConsoleRefused({ status: 400, reason: `the form could not be read: ${e.message}` }))
  )
  return new URLSearchParams(new TextDecoder().decode(bytes))
})

/** Same-origin POSTs only: Origin must name this host (or, without Origin, Sec-Fetch-Site must say same-origin). */
export const checkOrigin = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const origin = request.headers["origin"]
  const host = request.headers["host"]
  if (origin !== undefined && origin !== "null") {
    let originHost: string | null = null
    try {
      originHost = new URL(origin).host
    } catch {
      originHost = null
    }
    if (host !== undefined && originHost === host) return
    return yield* new ConsoleRefused({ status: 403, reason: `cross-origin request refused (Origin ${origin} is not this console)` })
  }
  if (request.headers["sec-fetch-site"] === "same-origin") return
  return yield* new ConsoleRefused({ status: 403, reason: "request refused: no Origin header to prove it comes from this console" })
})

export const makeSessions = () => {
  const sessions = new Map<string, Session>()

  const current = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const id = cookieOf(request.headers["cookie"], cookieName)
    if (id === null) return null
    const session = sessions.get(id)
    if (session === undefined) return null
    if (session.expiresAt <= (yield* Clock.currentTimeMillis)) {
      sessions.delete(id)
      return null
    }
    return session
  })

  /** Checks the token as the admin API would; a session on success (the old one of this browser is dropped). */
  const open = (token: string) =>
    Effect.gen(function*() {
      const redacted = Redacted.make(token.trim())
      yield* checkToken(redacted).pipe(Effect.mapError((e) => new ConsoleRefused({ status: 401, reason: e.reason })))
      const previous = yield* current
      if (previous !== null) sessions.delete(previous.id)
      if (sessions.size >= maxSessions) sessions.delete(sessions.keys().next().value!)
      const session: Session = { id: secret(), csrf: secret(), token: redacted, expiresAt: (yield* Clock.currentTimeMillis) + sessionTtlMs }
      sessions.set(session.id, session)
      return session
    })

  /** A POST's guard: same origin, a live session, its CSRF token, and the admin token still valid. */
  const authorize = (form: URLSearchParams) =>
    Effect.gen(function*() {
      yield* checkOrigin
      const session = yield* current
      if (session === null) return yield* new ConsoleRefused({ status: 401, reason: "not signed in: enter the admin token first" })
      if (form.get("csrf") !== session.csrf) return yield* new ConsoleRefused({ status: 403, reason: "missing or wrong CSRF token: reload the page and try again" })
      yield* checkToken(session.token).pipe(
        Effect.tapError(() => Effect.sync(() => sessions.delete(session.id))),
        Effect.mapError((e) => new ConsoleRefused({ status: 401, reason: `the session's token is no longer accepted (${e.reason}); sign in again` }))
      )
      return session
    })

  const close = (session: Session) => Effect.sync(() => sessions.delete(session.id))

  // What the last action did, shown once on the page the POST redirects to.
  const flashes = new Map<string, string>()
  const flash = (session: Session, text: string) => Effect.sync(() => void flashes.set(session.id, text))
  const takeFlash = (session: Session) =>
    Effect.sync(() => {
      const text = flashes.get(session.id) ?? null
      flashes.delete(session.id)
      return text
    })

  return { current, open, authorize, close, flash, takeFlash }
}

export type Sessions = ReturnType<typeof makeSessions>

export const sessionCookie = (session: Session, secure: boolean) =>
  `${cookieName}=${session.id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age=${sessionTtlMs / 1000}${secure ? "; Secure" : ""}`

export const clearedCookie = `${cookieName}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0`
