/**
 * Server-rendered HTML for the operator console: an escaping template tag, the page frame (header,
 * tabs, theme toggle) and the security headers every console answer carries.
 *
 * Everything is escaped unless it is already `Html`, so a model name or a reason typed by an
 * operator can never become markup. The pages use no inline script or style (the CSP forbids both):
 * widths are drawn with SVG attributes or repeated cells, behaviour lives in /console/assets/console.js.
 */
import { HttpServerResponse } from "@effect/platform"

export class Html {
  constructor(readonly text: string) {}
}

const escapes: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }
export const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => escapes[c]!)

const part = (v: unknown): string =>
  v instanceof Html
    ? v.text
    : Array.isArray(v)
    ? v.map(part).join("")
    : v === null || v === undefined || v === false
    ? ""
    : escape(String(v))

/** `html\`<td>${name}</td>\`` — values escaped, nested Html and arrays of Html kept. */
export const html = (strings: TemplateStringsArray, ...values: ReadonlyArray<unknown>): Html => {
  let out = strings[0]!
  values.forEach((v, i) => {
    out += part(v) + strings[i + 1]!
  })
  return new Html(out)
}

export const join = (items: ReadonlyArray<Html>, sep = ""): Html => new Html(items.map((i) => i.text).join(sep))

/** `default-src 'self'`, nothing inline, no framing, forms only to ourselves. */
export const contentSecurityPolicy =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; " +
  "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

export const securityHeaders: Readonly<Record<string, string>> = {
  "content-security-policy": contentSecurityPolicy,
  "x-content-type-options": "nosniff",
  "referrer-policy": "same-origin",
  "x-frame-options": "DENY",
  "cache-control": "no-store"
}

export const htmlResponse = (body: Html, options: { readonly status?: number; readonly headers?: Record<string, string> } = {}) =>
  HttpServerResponse.text(body.text, {
    status: options.status ?? 200,
    contentType: "text/html; charset=utf-8",
    headers: { ...securityHeaders, ...options.headers }
  })

export type Tab = "board" | "runs" | "story" | "cost" | "shadow" | "controls"

const tabs: ReadonlyArray<readonly [Tab, string, string]> = [
  ["board", "Board", "/console/"],
  ["runs", "Runs", "/console/runs"],
  ["cost", "Fallbacks & cost", "/console/cost"],
  ["shadow", "Shadow", "/console/shadow"],
  ["controls", "Controls", "/console/controls"]
]

/** The whole page: header with tabs and the run/trace lookup, then `body`. */
export const page = (options: { readonly title: string; readonly tab: Tab; readonly body: Html; readonly script?: string }) =>
  html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${options.title} · AwoooP console</title>
<link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/console/assets/uPlot.min.css">
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/theme.js"></script>
${options.script === undefined ? "" : html`<script src="/console/assets/uPlot.iife.min.js" defer></script>`}
<script src="/console/assets/console.js" defer></script>
</head>
<body data-page="${options.tab}">
<header class="top">
  <span class="brand">AwoooP gateway</span>
  <nav aria-label="Console sections"><ul>${
    tabs.map(([id, label, href]) =>
      html`<li><a href="${href}"${id === options.tab ? new Html(" aria-current=\"page\"") : ""}>${label}</a></li>`
    )
  }</ul></nav>
  <form class="find" action="/console/find" method="get" role="search">
    <label for="find-q">Run or trace id</label>
    <input id="find-q" name="q" size="36" placeholder="run id or trace id" autocomplete="off">
    <button type="submit">Open</button>
  </form>
  <button type="button" id="theme-toggle" class="theme" aria-label="Colour scheme: automatic">auto</button>
</header>
<main id="main">
${options.body}
</main>
</body>
</html>
`

export const isoTime = (ms: number | null): string => (ms === null ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z")
export const clockTime = (ms: number | null): string => (ms === null ? "—" : new Date(ms).toISOString().slice(11, 19))
export const seconds = (ms: number | null): string =>
  ms === null ? "—" : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
export const usd = (v: number | null): string => (v === null ? "unknown" : v === 0 ? "$0" : v < 0.01 ? `$${v.toFixed(6)}` : `$${v.toFixed(2)}`)

/** A notice box (errors, results of an action). */
export const notice = (kind: "ok" | "error" | "info", text: Html | string) =>
  html`<p class="notice ${kind}" role="${kind === "error" ? "alert" : "status"}">${text}</p>`
