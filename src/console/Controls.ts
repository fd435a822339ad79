/**
 * The operator's controls: open/close a host's maintenance window, trip/reset the budget hard
 * kill. Each goes form → preview (what changes, computed from the live state: plan() re-run with the
 * window toggled, the lanes a hard kill stops) → confirm (a POST guarded by Session.ts) → the same
 * actor calls the admin API makes, so every action is journaled as it is there
 * (MaintenanceOpened / MaintenanceClosed on the host's stream, HardKillTripped / HardKillReset on
 * "budget", `by: "console"`). A reason is required for every action.
 */
import { Clock, Effect } from "effect"
import { parseDurationMs } from "../config/Duration.ts"
import { parseUntil } from "../http/MaintenanceRoutes.ts"
import type { Gateway } from "../routing/Gateway.ts"
import type { HostActor } from "../routing/Host.ts"
import { plan } from "../routing/Plan.ts"
import { clockTime, type Html, html, isoTime, usd } from "./Html.ts"
import { ConsoleRefused, type Session } from "./Session.ts"

type GatewayShape = Gateway

export interface MaintenanceAction {
  readonly kind: "maintenance"
  readonly host: HostActor
  readonly open: boolean
  readonly reason: string
  /** epoch ms; only when opening */
  readonly until: number | null
}

export interface HardKillAction {
  readonly kind: "hard-kill"
  readonly tripped: boolean
  readonly reason: string
}

export type Action = MaintenanceAction | HardKillAction

/** The action a form describes, or why it is not one. */
export const parseAction = (gateway: GatewayShape, form: URLSearchParams) =>
  Effect.gen(function*() {
    const bad = (reason: string) => new ConsoleRefused({ status: 400, reason })
    const reason = (form.get("reason") ?? "").trim().slice(0, 1000)
    const action = form.get("action")
    if (reason === "") return yield* bad("a reason is required for every action")
    if (action === "maintenance") {
      const name = form.get("host") ?? ""
      const host = gateway.hosts.get(name)
      if (host === undefined) return yield* bad(`unknown host ${JSON.stringify(name)}`)
      const open = form.get("open") === "open"
      if (!open) return { kind: "maintenance", host, open, reason, until: null } satisfies Action
      const now = yield* Clock.currentTimeMillis
      const text = (form.get("until") ?? "").trim()
      const back = parseDurationMs(text)
      const until = parseUntil(back !== undefined ? new Date(now + back).toISOString() : text === "" ? undefined : text, now)
      if (typeof until === "string") return yield* bad(until)
      return { kind: "maintenance", host, open, reason, until } satisfies Action
    }
    if (action === "hard-kill") return { kind: "hard-kill", tripped: form.get("tripped") === "trip", reason } satisfies Action
    return yield* bad(`unknown action ${JSON.stringify(action ?? "")}`)
  })

const route = (attempts: ReadonlyArray<{ readonly host: string }>) => (attempts.length === 0 ? "nothing" : attempts.map((a) => a.host).join(" → "))

/** What the action would change, in sentences, from the live state. */
export const preview = (gateway: GatewayShape, action: Action) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    if (action.kind === "maintenance") {
      const host = action.host
      const m = yield* host.maintenance
      if (action.open === m.open) lines.push(`${host.name} is already ${m.open ? "in maintenance (the window is replaced)" : "out of maintenance: nothing changes"}.`)
      lines.push(action.open
        ? `${host.name} enters maintenance until ${isoTime(action.until)}${host.config.protected ? `: heavy models (≥ ${gateway.config.policy.heavyModelMinParamsB}B) are allowed on this protected host until then` : " (not a protected host: routing is unchanged)"}.`
        : `${host.name} leaves maintenance now${host.config.protected ? `: heavy models (≥ ${gateway.config.policy.heavyModelMinParamsB}B) are denied there again` : ""}.`)
      for (const lane of gateway.lanes.values()) {
        if (!lane.config.route.some((s) => s.host === host.name)) continue
        const { input, plan: before } = yield* lane.decide
        const view = input.hosts[host.name]
        if (view === undefined) continue
        const after = plan({ ...input, hosts: { ...input.hosts, [host.name]: { ...view, maintenance: { open: action.open, until: action.until } } } })
        const was = route(before.attempts)
        const will = route(after.attempts)
        lines.push(was === will ? `lane ${lane.name}: unchanged (tries ${was})` : `lane ${lane.name}: would try ${will} instead of ${was}`)
      }
      lines.push(`Journaled as ${action.open ? "MaintenanceOpened" : "MaintenanceClosed"} on host-${host.name} with the reason.`)
    } else {
      const paidLanes = [...gateway.lanes.values()].filter((l) => l.config.paid.length > 0 || l.config.paidFallback.length > 0)
      const status = yield* gateway.paid.budget.status.pipe(Effect.option)
      if (status._tag === "Some" && status.value.hardKill.tripped === action.tripped) {
        lines.push(`The hard kill is already ${action.tripped ? "tripped" : "reset"}: only the reason is journaled again.`)
      }
      lines.push(action.tripped
        ? "Every paid call is refused (503 naming the hard kill) until it is reset; Ollama routing is unchanged."
        : "Paid calls are allowed again, within the period's cap.")
      for (const l of paidLanes) {
        lines.push(l.config.paid.length > 0
          ? `lane ${l.name}: ${action.tripped ? "every request refused" : "answered by"} ${l.config.paid.join(", ")}${action.tripped ? "" : " again"}`
          : `lane ${l.name}: paid fallback (${l.config.paidFallback.join(", ")}) ${action.tripped ? "no longer asked when its hosts fail" : "asked again when its hosts fail"}`)
      }
      if (paidLanes.length === 0) lines.push("No lane uses paid providers in this config.")
      if (status._tag === "Some") {
        lines.push(`This ${status.value.period}: ${usd(status.value.settledUsd)} settled, ${usd(status.value.reservedUsd)} reserved of ${usd(status.value.capUsd)}; ${status.value.openReservations} call(s) in flight finish either way.`)
      }
      lines.push(`Journaled as ${action.tripped ? "HardKillTripped" : "HardKillReset"} on the budget stream and kept in PostgreSQL.`)
    }
    return lines
  })

/** Carries the action out exactly as the admin API does; the sentence for the page. */
export const perform = (gateway: GatewayShape, action: Action) =>
  Effect.gen(function*() {
    if (action.kind === "maintenance") {
      if (action.open) {
        yield* action.host.openMaintenance(action.reason, action.until)
        return `Maintenance opened on ${action.host.name} until ${isoTime(action.until)}: ${action.reason}`
      }
      const closed = yield* action.host.closeMaintenance(action.reason)
      return closed ? `Maintenance closed on ${action.host.name}: ${action.reason}` : `${action.host.name} was not in maintenance; nothing changed`
    }
    return yield* gateway.paid.budget.setHardKill(action.tripped, action.reason, "console").pipe(
      Effect.map((s) => `Budget hard kill ${s.tripped ? "TRIPPED" : "reset"}: ${action.reason}`),
      Effect.mapError((e) => new ConsoleRefused({ status: 403, reason: `the budget ledger is unreachable: ${e.message}` }))
    )
  })

const hidden = (name: string, value: string) => html`<input type="hidden" name="${name}" value="${value}">`

export const loginForm = (message: Html | string = "") =>
  html`<h1>Controls</h1>
${message}
<form class="login" method="post" action="/console/login">
<p>Controls need the gateway's admin token (<code>AWOOOP_ADMIN_TOKEN</code>). It is checked once and exchanged for a session cookie (HttpOnly, SameSite=Strict, 8 hours); it is not stored in the browser.</p>
<label for="token">Admin token</label> <input id="token" name="token" type="password" autocomplete="current-password" required size="40">
<button type="submit">Sign in</button>
</form>`

export const controlsPage = (gateway: GatewayShape, session: Session, message: Html | string = "") =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const hosts: Array<Html> = []
    for (const host of gateway.hosts.values()) {
      const m = yield* host.maintenance
      hosts.push(html`<tr data-host="${host.name}"><th scope="row">${host.name}</th><td>${host.config.protected ? "protected" : "—"}</td><td>${
        m.open ? html`<span class="badge maint">MAINT</span> until ${isoTime(m.until)}: ${m.reason ?? ""}` : html`<span class="dim">no window</span>`
      }</td></tr>`)
    }
    const budget = gateway.config.budget === undefined ? null : yield* gateway.paid.budget.status.pipe(Effect.option)
    const names = [...gateway.hosts.keys()]
    return html`<h1>Controls</h1>
${message}
<form method="post" action="/console/logout" class="signout">${hidden("csrf", session.csrf)}<span class="dim">signed in until ${clockTime(session.expiresAt)}Z</span> <button type="submit">Sign out</button></form>
<section class="control" aria-labelledby="maint-h">
<h2 id="maint-h">Maintenance windows</h2>
<table class="grid"><caption>Now (${clockTime(now)}Z)</caption><thead><tr><th scope="col">host</th><th scope="col">kind</th><th scope="col">maintenance</th></tr></thead><tbody>${hosts}</tbody></table>
<form method="get" action="/console/controls/preview" class="action">${hidden("action", "maintenance")}
<label>host <select name="host">${names.map((n) => html`<option>${n}</option>`)}</select></label>
<label>action <select name="open"><option value="open">open a window</option><option value="close">close the window</option></select></label>
<label>until (when opening) <input name="until" value="2h" size="22" placeholder="2h or 2026-05-05T18:00:00Z"></label>
<label>reason <input name="reason" required size="40" placeholder="e.g. load qwen2.5:14b for INC-4711"></label>
<button type="submit">Preview</button>
</form>
</section>
<section class="control" aria-labelledby="kill-h">
<h2 id="kill-h">Budget hard kill</h2>
${
      budget === null
        ? html`<p class="dim">No budget is configured.</p>`
        : budget._tag === "None"
        ? html`<p class="notice error" role="alert">The budget ledger is unreachable.</p>`
        : html`<p>Hard kill: ${budget.value.hardKill.tripped ? html`<span class="badge down">TRIPPED</span> ${budget.value.hardKill.reason ?? ""}` : html`<span class="badge ok">not tripped</span>`} · this ${budget.value.period}: ${usd(budget.value.settledUsd + budget.value.reservedUsd)} of ${usd(budget.value.capUsd)}</p>`
    }
<form method="get" action="/console/controls/preview" class="action">${hidden("action", "hard-kill")}
<label>action <select name="tripped"><option value="trip">trip the hard kill</option><option value="reset">reset it</option></select></label>
<label>reason <input name="reason" required size="40" placeholder="e.g. runaway spend on deep-rca"></label>
<button type="submit">Preview</button>
</form>
</section>`
  })

/** The preview page: what will change, and the confirm form carrying the same fields and the CSRF token. */
export const previewPage = (action: Action, lines: ReadonlyArray<string>, form: URLSearchParams, session: Session) => {
  const title = action.kind === "maintenance"
    ? `${action.open ? "Open" : "Close"} maintenance on ${action.host.name}`
    : `${action.tripped ? "Trip" : "Reset"} the budget hard kill`
  const fields = ["action", "host", "open", "until", "tripped", "reason"].flatMap((k) => {
    const v = form.get(k)
    return v === null ? [] : [hidden(k, v)]
  })
  return html`<h1>Controls</h1>
<section class="preview" aria-labelledby="preview-h">
<h2 id="preview-h">Preview: ${title}</h2>
<p>Reason: <q>${action.reason}</q></p>
<ul class="changes">${lines.map((l) => html`<li>${l}</li>`)}</ul>
<form method="post" action="/console/controls/${action.kind}">${fields}${hidden("csrf", session.csrf)}
<button type="submit" class="confirm">Confirm: ${title}</button> <a href="/console/controls">cancel</a>
</form>
</section>`
}
