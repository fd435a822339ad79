// The operator console's only script (served as /console/assets/console.js, no build step).
// Pages are rendered on the server and work without it; this adds: the colour-scheme toggle,
// ticking countdowns, the live board (SSE, polling when SSE is down, a "stale" mark when updates
// stop), the runs live tail, and the uPlot charts. Nothing here is inline: the CSP forbids it.
"use strict"

const $ = (selector, root = document) => root.querySelector(selector)
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector))

// --- colour scheme ---------------------------------------------------------------------------

const themes = ["auto", "dark", "light"]
const themeOf = () => document.documentElement.getAttribute("data-theme") || "auto"
const showTheme = () => {
  const button = $("#theme-toggle")
  if (button === null) return
  button.textContent = themeOf()
  button.setAttribute("aria-label", `Colour scheme: ${themeOf()} (click to change)`)
}
const setTheme = (theme) => {
  if (theme === "auto") document.documentElement.removeAttribute("data-theme")
  else document.documentElement.setAttribute("data-theme", theme)
  try {
    if (theme === "auto") localStorage.removeItem("awooop-theme")
    else localStorage.setItem("awooop-theme", theme)
  } catch (e) { /* not persisted */ }
  showTheme()
  document.dispatchEvent(new Event("awooop-theme"))
}

// --- countdowns ------------------------------------------------------------------------------

// Server clock minus ours, from the board's data-now and the pings: countdowns use the server's time.
let clockOffset = 0
const duration = (ms) => {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 90) return `${s}s`
  if (s < 5400) return `${Math.round(s / 60)}m`
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, "0")}`
}
const tickCountdowns = () => {
  const now = Date.now() + clockOffset
  for (const el of $$(".countdown[data-until]")) {
    const left = Number(el.dataset.until) - now
    el.textContent = left > 0 ? `${el.dataset.prefix} ${duration(left)}` : el.dataset.done
  }
}

// --- live board ------------------------------------------------------------------------------

const staleAfterMs = 5000
const pollEveryMs = 2000

const liveBoard = () => {
  const state = $("#live")
  let lastUpdate = Date.now()
  let mode = "connecting"
  let source = null
  let pollTimer = null

  const replace = (fragment) => {
    const board = $("#board")
    if (board === null) return
    const template = document.createElement("template")
    template.innerHTML = fragment.trim()
    const next = template.content.firstElementChild
    if (next === null) return
    board.replaceWith(next)
    clockOffset = Number(next.dataset.now) - Date.now()
    tickCountdowns()
  }
  const seen = () => {
    lastUpdate = Date.now()
    render()
  }
  const render = () => {
    const age = Date.now() - lastUpdate
    const stale = age > staleAfterMs
    document.body.classList.toggle("stale", stale)
    state.textContent = stale ? `STALE — no update for ${duration(age)}${mode === "polling" ? ", polling" : ", reconnecting"}` : mode === "sse" ? "live" : mode === "polling" ? "live (polling)" : "connecting…"
    state.className = `live-state ${stale ? "stale" : mode}`
  }

  const poll = async () => {
    try {
      const res = await fetch("/console/board/fragment", { cache: "no-store" })
      if (res.ok) {
        replace(await res.text())
        seen()
      }
    } catch (e) { /* the gateway is unreachable: the stale mark says so */ }
  }
  const startPolling = () => {
    if (pollTimer !== null) return
    mode = "polling"
    pollTimer = setInterval(poll, pollEveryMs)
    poll()
  }
  const stopPolling = () => {
    if (pollTimer !== null) clearInterval(pollTimer)
    pollTimer = null
  }

  if (typeof EventSource === "function") {
    source = new EventSource("/console/board/events")
    source.addEventListener("open", () => {
      stopPolling()
      mode = "sse"
      seen()
    })
    source.addEventListener("board", (e) => {
      replace(e.data)
      seen()
    })
    source.addEventListener("ping", (e) => {
      clockOffset = Number(e.data) - Date.now()
      seen()
    })
    // EventSource retries by itself; meanwhile (and if it gave up) the board is polled.
    source.addEventListener("error", () => startPolling())
  } else {
    startPolling()
  }
  setInterval(render, 1000)
  render()
}

// --- runs tail -------------------------------------------------------------------------------

const runsTail = () => {
  const table = $("table.runs[data-rows-url]")
  const toggle = $("#live-tail")
  const form = $("#run-filters")
  if (table === null) return
  // A changed select applies at once (the URL keeps the filters, so a reload or a pasted link shows the same).
  for (const select of $$("select", form)) select.addEventListener("change", () => form.requestSubmit())
  setInterval(async () => {
    if (toggle !== null && !toggle.checked) return
    try {
      const res = await fetch(table.dataset.rowsUrl, { cache: "no-store" })
      if (res.ok) $("#run-rows").innerHTML = await res.text()
    } catch (e) { /* try again at the next tick */ }
  }, 3000)
}

// --- charts ----------------------------------------------------------------------------------

// Colours come from the stylesheet (they differ in dark and light), read through swatch elements.
const colour = (cls) => {
  const probe = document.createElement("span")
  probe.className = `swatch ${cls}`
  document.body.appendChild(probe)
  const value = getComputedStyle(probe).color
  probe.remove()
  return value
}
const palette = () => ["c1", "c5", "c6", "c7", "c8", "c4", "c3", "c2"].map(colour)
// Outcomes keep their meaning: green answered, amber after a fallback, red failed.
const fixedColours = { "answered first try": "c3", "answered after fallback": "c4", failed: "c2", running: "c8" }
const seriesColour = (name, i, colours) => (name in fixedColours ? colour(fixedColours[name]) : colours[i % colours.length])

const pick = (data, path) => path.split(".").reduce((v, k) => (v === null || v === undefined ? v : v[k]), data)

// Vertical lines for breaker trips (and hard kills), shaded bands for maintenance windows.
const marksPlugin = (marks) => ({
  hooks: {
    draw: [(u) => {
      const { ctx, bbox } = u
      const x = (t) => u.valToPos(t, "x", true)
      ctx.save()
      ctx.fillStyle = colour("band")
      for (const b of marks.bands || []) {
        const left = Math.max(bbox.left, x(b.from))
        const right = Math.min(bbox.left + bbox.width, x(b.to))
        if (right > left) ctx.fillRect(left, bbox.top, right - left, bbox.height)
      }
      ctx.strokeStyle = colour("trip")
      ctx.lineWidth = 2 * devicePixelRatio
      for (const m of marks.trips || []) {
        const at = x(m.t)
        if (at < bbox.left || at > bbox.left + bbox.width) continue
        ctx.beginPath()
        ctx.moveTo(at, bbox.top)
        ctx.lineTo(at, bbox.top + bbox.height)
        ctx.stroke()
      }
      ctx.restore()
    }]
  }
})

const charts = []

const drawChart = (box, data) => {
  const key = box.dataset.series
  const unit = box.dataset.unit
  const colours = palette()
  const axisColour = colour("axis")
  const gridColour = colour("grid")
  let xs = data.axis.t
  let groups = pick(data, key) || {}
  let marks = data.marks || { trips: [], bands: [] }
  let scales = { x: { time: true } }
  if (key === "budget") {
    const b = data.budget
    xs = b.t
    groups = { remaining: b.remaining }
    marks = { trips: b.kills, bands: [] }
    scales = { x: { time: true, range: () => [b.from, b.to] }, y: { range: () => [0, b.capUsd * 1.05] } }
  }
  if (key === "agreement") scales = { x: { time: true }, y: { range: () => [0, 1.05] } }
  const names = Object.keys(groups)
  box.textContent = ""
  if (names.length === 0) {
    box.textContent = "nothing in this window"
    return
  }
  const axis = { stroke: axisColour, grid: { stroke: gridColour, width: 1 }, ticks: { stroke: gridColour } }
  // Times in UTC, 24 h (the journal's and the runbook's clock); the date too when the axis spans days.
  const timeValues = (u, ticks) => {
    const span = ticks.length > 1 ? ticks[ticks.length - 1] - ticks[0] : 0
    return ticks.map((t) => {
      const iso = new Date(t * 1000).toISOString()
      return span > 2 * 86400 ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, span < 600 ? 19 : 16)
    })
  }
  const valueOf = (u, ticks) => {
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1
    const digits = step >= 1 ? 0 : Math.min(8, Math.ceil(-Math.log10(step)))
    return ticks.map((v) => (unit === "$" ? `$${v.toFixed(digits)}` : v.toFixed(digits)))
  }
  const stepped = uPlot.paths.stepped({ align: 1 })
  const fill = (c) => c.replace(/^rgb\((.*)\)$/, "rgba($1, 0.12)")
  const opts = {
    width: Math.max(300, box.clientWidth),
    height: 190,
    scales,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    axes: [{ ...axis, values: timeValues }, { ...axis, size: unit === "$" ? 84 : 50, values: valueOf }],
    series: [{ value: (u, t) => (t === null ? "" : new Date(t * 1000).toISOString().slice(11, 19)) }, ...names.map((name, i) => ({
      label: name,
      stroke: seriesColour(name, i, colours),
      fill: key === "agreement" ? undefined : fill(seriesColour(name, i, colours)),
      width: 2,
      paths: key === "agreement" || key === "budget" ? undefined : stepped,
      points: { show: key === "agreement" },
      spanGaps: false
    }))],
    plugins: [marksPlugin(marks)]
  }
  charts.push(new uPlot(opts, [xs, ...names.map((n) => groups[n])], box))
}

const drawCharts = (data) => {
  while (charts.length > 0) charts.pop().destroy()
  for (const box of $$(".chart[data-chart]")) drawChart(box, data)
}

const chartsPage = () => {
  const holder = $("#series")
  if (holder === null || typeof uPlot !== "function") return
  let data = JSON.parse(holder.dataset.json)
  drawCharts(data)
  document.addEventListener("awooop-theme", () => drawCharts(data))
  let resizeTimer = null
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer)
    resizeTimer = setTimeout(() => drawCharts(data), 200)
  })
  setInterval(async () => {
    try {
      const res = await fetch(holder.dataset.src, { cache: "no-store" })
      if (!res.ok) return
      data = await res.json()
      drawCharts(data)
    } catch (e) { /* keep the last charts */ }
  }, 30000)
}

// --- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  showTheme()
  const toggle = $("#theme-toggle")
  if (toggle !== null) toggle.addEventListener("click", () => setTheme(themes[(themes.indexOf(themeOf()) + 1) % themes.length]))
  const board = $("#board")
  if (board !== null) clockOffset = Number(board.dataset.now) - Date.now()
  tickCountdowns()
  setInterval(tickCountdowns, 1000)
  if ($("#live") !== null) liveBoard()
  runsTail()
  chartsPage()
})
