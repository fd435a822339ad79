/**
 * The operator console at /console/ (issue 15): server-rendered pages over the gateway's own
 * services — the health view, the journal's projections and `explain`, the shadow decisions, the
 * budget — with a small script for live updates and uPlot for charts. Mounted by http/Server.ts.
 *
 *   GET  /console/                     the live board (hosts × lanes, lanes' safety)
 *   GET  /console/board/events         SSE: `board` (the board's HTML) on change, `ping` every 2 s
 *   GET  /console/board/fragment       the same HTML, for the polling fallback
 *   GET  /console/runs?lane=&host=&model=&outcome=&reason=&project=&since=&until=   the runs tail
 *   GET  /console/runs/rows?…          its rows (the live tail polls them)
 *   GET  /console/runs/:id, /console/traces/:traceId, /console/find?q=   a run's story
 *   GET  /console/cost?window=&by=     fallbacks and cost over time; /console/api/cost the series
 *   GET  /console/shadow?window=       shadow agreement and disagreements; /console/api/shadow
 *   GET  /console/controls, /console/controls/preview   controls (signed in), the preview of an action
 *   POST /console/login, /console/logout, /console/controls/maintenance, /console/controls/hard-kill
 *
 * Pages need no JavaScript except for live updates and charts; every form works without it.
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Effect, Option, Ref, Schedule, Stream } from "effect"
import { Drain } from "../http/Drain.ts"
import { Journal } from "../journal/Journal.ts"
import { healthView } from "../http/HealthRoutes.ts"
import { explain, runStreamOf } from "../replay/Explain.ts"
import { AsyncRuns } from "../operations/async/AsyncRuns.ts"
import { Gateway } from "../routing/Gateway.ts"
import { assetResponse, loadAssets } from "./Assets.ts"
import { keepWarmEvents, renderBoard } from "./Board.ts"
import { costDimensions, type CostDimension, costPage, shadowPage } from "./Charts.ts"
import { controlsPage, loginForm, parseAction, perform, preview, previewPage } from "./Controls.ts"
import { type Html, html, htmlResponse, notice, page, securityHeaders, type Tab } from "./Html.ts"
import { listRuns, parseFilters, runRows, runsPage } from "./Runs.ts"
import { costSeries, shadowSeries, windowOf } from "./Series.ts"
import { checkOrigin, ConsoleRefused, clearedCookie, makeSessions, readForm, sessionCookie, type Sessions } from "./Session.ts"
import { runStory } from "./Story.ts"

type Params = Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
const param = (params: Params, name: string): string | undefined => {
  const v = params[name]
  return typeof v === "string" ? v : v?.[0]
}

/** One value shared by every viewer for `ttlMs` (ten browsers on the board cost one read). */
const cachedFor = <A, E, R>(ttlMs: number, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  let cached: { readonly at: number; readonly value: A } | null = null
  return Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    if (cached !== null && now - cached.at < ttlMs) return cached.value
    const value = yield* effect
    cached = { at: now, value }
    return value
  })
}

const encoder = new TextEncoder()
/** One SSE message; each line of `data` gets its own `data:` prefix. */
const sse = (event: string, data: string) => encoder.encode(`event: ${event}\n${data.split("\n").map((l) => `data: ${l}`).join("\n")}\n\n`)

const json = (body: unknown, status = 200) =>
  HttpServerResponse.text(JSON.stringify(body), { status, contentType: "application/json; charset=utf-8", headers: securityHeaders })
const jsonUnavailable = (e: unknown) => Effect.succeed(json({ error: `the journal database did not answer: ${e instanceof Error ? e.message : String(e)}` }, 503))

const screen = (tab: Tab, title: string, body: Html, status = 200, headers: Record<string, string> = {}) =>
  htmlResponse(page({ title, tab, body, script: tab === "cost" || tab === "shadow" ? "uplot" : undefined }), { status, headers })

/** A read that failed (the database, usually): the page says so instead of a blank 500. */
const orUnavailable = (tab: Tab, title: string) => (e: unknown) =>
  Effect.succeed(screen(tab, title, html`<h1>${title}</h1>${notice("error", `the journal database did not answer: ${e instanceof Error ? e.message : String(e)}`)}`, 503))

const maxStreamMs = 10 * 60_000

// --- the board: live, shared by every viewer ------------------------------------------------

const makeBoard = () => {
  const warm = cachedFor(5_000, Effect.flatMap(Gateway, (g) => keepWarmEvents([...g.hosts.keys()])).pipe(Effect.orElseSucceed(() => [])))
  const view = cachedFor(400, healthView)

  const boardHtml = Effect.gen(function*() {
    const gateway = yield* Gateway
    const v = yield* view
    const events = yield* warm
    // What changed, apart from the clock: SSE sends the board only then.
    const key = JSON.stringify({ ...v, checkedAt: null }) + JSON.stringify(events)
    return { key, html: renderBoard(v, gateway.config, events, yield* Clock.currentTimeMillis) }
  })

  const board = Effect.map(boardHtml, (b) =>
    screen("board", "Board", html`<h1 class="with-live">Live board <span id="live" class="live-state" role="status" aria-live="polite">connecting…</span></h1>${b.html}`))

  const boardEvents = Effect.gen(function*() {
    const context = yield* Effect.context<Gateway | AsyncRuns | SqlClient.SqlClient | Journal>()
    const drain = yield* Drain
    let lastKey = ""
    let lastSent = 0
    const tick = Effect.gen(function*() {
      const b = yield* boardHtml
      const now = yield* Clock.currentTimeMillis
      if (b.key !== lastKey) {
        lastKey = b.key
        lastSent = now
        return Option.some(sse("board", b.html.text))
      }
      if (now - lastSent >= 2_000) {
        lastSent = now
        return Option.some(sse("ping", String(now)))
      }
      return Option.none()
    })
    const body = Stream.concat(
      Stream.make(encoder.encode("retry: 2000\n\n")),
      Stream.repeatEffectWithSchedule(tick, Schedule.spaced("500 millis")).pipe(
        Stream.filterMap((x) => x),
        // A shutdown ends the stream (the browser reconnects elsewhere); so does age, to shed stale connections.
        Stream.takeUntilEffect(() => Ref.get(drain.draining)),
        Stream.interruptWhen(Effect.sleep(maxStreamMs)),
        Stream.provideContext(context)
      )
    )
    return HttpServerResponse.stream(body, {
      contentType: "text/event-stream",
      headers: { ...securityHeaders, "x-accel-buffering": "no" }
    })
  })

  return { board, fragment: Effect.map(boardHtml, (b) => htmlResponse(b.html)), boardEvents }
}

// --- read pages: runs, stories, cost, shadow -------------------------------------------------

const runs = Effect.gen(function*() {
  const gateway = yield* Gateway
  const filters = parseFilters(yield* HttpServerRequest.ParsedSearchParams)
  const list = yield* listRuns(filters, yield* Clock.currentTimeMillis)
  return screen("runs", "Runs", runsPage(gateway.config, filters, list))
}).pipe(Effect.catchAll(orUnavailable("runs", "Runs")))

const rows = Effect.gen(function*() {
  const filters = parseFilters(yield* HttpServerRequest.ParsedSearchParams)
  const list = yield* listRuns(filters, yield* Clock.currentTimeMillis)
  return htmlResponse(runRows(list))
}).pipe(Effect.catchAll((e) => Effect.succeed(htmlResponse(html`<tr><td colspan="11">the journal database did not answer: ${String(e)}</td></tr>`, { status: 503 }))))

const story = (id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const x = yield* explain(sql, id)
    const title = x.runId !== null ? `Run ${x.runId.slice(0, 8)}` : `Trace ${(x.traceId ?? id).slice(0, 8)}`
    return screen("story", title, html`<h1>${x.runId !== null ? "Run" : "Trace"} <code>${x.runId ?? x.traceId ?? id}</code></h1>
<p class="dim">trace ${x.traceId === null ? "—" : html`<a href="/console/traces/${x.traceId}">${x.traceId}</a>`} · ${x.runs.length} run${x.runs.length === 1 ? "" : "s"} · from the journal (<code>npm run journal -- explain ${id}</code> tells the same)</p>
${x.runs.map((r, i) => runStory(r, i, x.runs.length, r.run.runId === x.runId))}`)
  }).pipe(
    Effect.catchTag("ExplainNotFound", (e) => Effect.succeed(screen("story", "Not found", html`<h1>Not found</h1>${notice("error", e.message)}`, 404))),
    Effect.catchAll(orUnavailable("story", "Story"))
  )

const find = Effect.gen(function*() {
  const q = (param(yield* HttpServerRequest.ParsedSearchParams, "q") ?? "").trim()
  if (q === "") return HttpServerResponse.redirect("/console/runs", { status: 303 })
  const run = runStreamOf(q)
  return HttpServerResponse.redirect(run !== null ? `/console/runs/${run.slice(4)}` : `/console/traces/${encodeURIComponent(q)}`, { status: 303 })
})

const costParams = Effect.map(HttpServerRequest.ParsedSearchParams, (p) => {
  const by = param(p, "by")
  return { window: windowOf(param(p, "window")), by: (costDimensions as ReadonlyArray<string>).includes(by ?? "") ? by as CostDimension : "lane" }
})
const cost = Effect.gen(function*() {
  const gateway = yield* Gateway
  const q = yield* costParams
  const series = yield* costSeries(gateway.config, q.window, yield* Clock.currentTimeMillis)
  return screen("cost", "Fallbacks and cost", costPage(series, q.by))
}).pipe(Effect.catchAll(orUnavailable("cost", "Fallbacks and cost")))
const costApi = Effect.gen(function*() {
  const gateway = yield* Gateway
  const q = yield* costParams
  return json(yield* costSeries(gateway.config, q.window, yield* Clock.currentTimeMillis))
})

const shadowWindow = Effect.map(HttpServerRequest.ParsedSearchParams, (p) => windowOf(param(p, "window")))
const shadow = Effect.gen(function*() {
  const gateway = yield* Gateway
  const series = yield* shadowSeries(gateway.config, yield* shadowWindow, yield* Clock.currentTimeMillis)
  return screen("shadow", "Shadow", shadowPage(series))
}).pipe(Effect.catchAll(orUnavailable("shadow", "Shadow")))
const shadowApi = Effect.gen(function*() {
  const gateway = yield* Gateway
  return json(yield* shadowSeries(gateway.config, yield* shadowWindow, yield* Clock.currentTimeMillis))
})

// --- controls: behind the admin sign-in -------------------------------------------------------

const makeControls = (sessions: Sessions) => {
  const refused = (e: ConsoleRefused) =>
    Effect.gen(function*() {
      const session = yield* sessions.current
      const message = notice("error", e.reason)
      if (session === null) return screen("controls", "Controls", loginForm(message), e.status)
      const gateway = yield* Gateway
      return screen("controls", "Controls", yield* controlsPage(gateway, session, message), e.status)
    })

  const controls = Effect.gen(function*() {
    const session = yield* sessions.current
    if (session === null) return screen("controls", "Controls", loginForm())
    const gateway = yield* Gateway
    const flash = yield* sessions.takeFlash(session)
    return screen("controls", "Controls", yield* controlsPage(gateway, session, flash === null ? "" : notice("ok", flash)))
  })

  const previewAction = Effect.gen(function*() {
    const session = yield* sessions.current
    if (session === null) return screen("controls", "Controls", loginForm(notice("error", "sign in to preview an action")), 401)
    const gateway = yield* Gateway
    const request = yield* HttpServerRequest.HttpServerRequest
    const form = new URLSearchParams(request.url.split("?")[1] ?? "")
    const action = yield* parseAction(gateway, form)
    return screen("controls", "Preview", previewPage(action, yield* preview(gateway, action), form, session))
  }).pipe(Effect.catchTag("ConsoleRefused", refused))

  const act = (kind: "maintenance" | "hard-kill") =>
    Effect.gen(function*() {
      const form = yield* readForm
      const session = yield* sessions.authorize(form)
      const gateway = yield* Gateway
      if (form.get("action") !== kind) return yield* new ConsoleRefused({ status: 400, reason: `this form is not a ${kind} action` })
      const action = yield* parseAction(gateway, form)
      yield* sessions.flash(session, yield* perform(gateway, action))
      return HttpServerResponse.redirect("/console/controls", { status: 303, headers: securityHeaders })
    }).pipe(Effect.catchTag("ConsoleRefused", refused))

  const login = Effect.gen(function*() {
    const form = yield* readForm
    yield* checkOrigin
    const session = yield* sessions.open(form.get("token") ?? "")
    const request = yield* HttpServerRequest.HttpServerRequest
    const secure = request.headers["x-forwarded-proto"] === "https"
    return HttpServerResponse.redirect("/console/controls", { status: 303, headers: { ...securityHeaders, "set-cookie": sessionCookie(session, secure) } })
  }).pipe(Effect.catchTag("ConsoleRefused", refused))

  const logout = Effect.gen(function*() {
    const form = yield* readForm
    const session = yield* sessions.authorize(form)
    yield* sessions.close(session)
    return HttpServerResponse.redirect("/console/controls", { status: 303, headers: { ...securityHeaders, "set-cookie": clearedCookie } })
  }).pipe(Effect.catchTag("ConsoleRefused", refused))

  return { controls, previewAction, act, login, logout }
}

/**
 * With `callers:` configured the gateway is a trust boundary: its read routes answer each caller for
 * its own project only, and the console shows every project, so every page needs the admin sign-in.
 * In open mode (no callers) the pages are as open as /awooop/health; only the controls need it.
 */
const signedInWith = (sessions: Sessions) =>
<E, R>(handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
  Effect.gen(function*() {
    const gateway = yield* Gateway
    if (gateway.config.callers === undefined || (yield* sessions.current) !== null) return yield* handler
    return screen("controls", "Sign in", loginForm(notice("error", "callers are configured, so the console (every project's runs and spend) needs the admin sign-in")), 401)
  })

const assetWith = (assets: ReturnType<typeof loadAssets>) =>
  Effect.gen(function*() {
    const { name } = yield* HttpRouter.params
    const request = yield* HttpServerRequest.HttpServerRequest
    const found = name === undefined ? undefined : assets.get(name)
    if (found === undefined) return HttpServerResponse.text("not found", { status: 404, headers: securityHeaders })
    return assetResponse(found, request.headers["if-none-match"])
  })

export const makeConsoleRoutes = Effect.sync(() => {
  const sessions = makeSessions()
  const board = makeBoard()
  const c = makeControls(sessions)
  const signedIn = signedInWith(sessions)
  return HttpRouter.empty.pipe(
    HttpRouter.get("/console/", signedIn(board.board)),
    HttpRouter.get("/console/board/fragment", signedIn(board.fragment)),
    HttpRouter.get("/console/board/events", signedIn(board.boardEvents)),
    HttpRouter.get("/console/runs", signedIn(runs)),
    HttpRouter.get("/console/runs/rows", signedIn(rows)),
    HttpRouter.get("/console/runs/:id", signedIn(Effect.flatMap(HttpRouter.params, (p) => story(p.id ?? "")))),
    HttpRouter.get("/console/traces/:traceId", signedIn(Effect.flatMap(HttpRouter.params, (p) => story(p.traceId ?? "")))),
    HttpRouter.get("/console/find", signedIn(find)),
    HttpRouter.get("/console/cost", signedIn(cost)),
    HttpRouter.get("/console/api/cost", signedIn(costApi.pipe(Effect.catchAll(jsonUnavailable)))),
    HttpRouter.get("/console/shadow", signedIn(shadow)),
    HttpRouter.get("/console/api/shadow", signedIn(shadowApi.pipe(Effect.catchAll(jsonUnavailable)))),
    HttpRouter.get("/console/controls", c.controls),
    HttpRouter.get("/console/controls/preview", c.previewAction),
    HttpRouter.post("/console/controls/maintenance", c.act("maintenance")),
    HttpRouter.post("/console/controls/hard-kill", c.act("hard-kill")),
    HttpRouter.post("/console/login", c.login),
    HttpRouter.post("/console/logout", c.logout),
    HttpRouter.get("/console/assets/:name", assetWith(loadAssets()))
  )
})
