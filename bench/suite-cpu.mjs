#!/usr/bin/env node
/**
 * Where the test suite's CPU goes (issue 11's wall time): runs a command (default `npx vitest run`)
 * and samples every process's CPU from /proc every 200 ms meanwhile, then prints the CPU used during
 * the run by kind of process (vitest workers, spawned gateways, Chromium, PostgreSQL, …), the whole
 * machine's busy time and the wall time. On a 2-core machine whose cores are busy most of a run, more
 * workers or more concurrency inside files cannot shorten it: only less CPU can (BENCHMARKS.md).
 *
 *   node bench/suite-cpu.mjs                       # the README's test command
 *   node bench/suite-cpu.mjs npx vitest run test/console.browser.test.ts
 *
 * Linux only (/proc). A process that lives less than one sample is missed (its CPU still counts in
 * the machine's busy time, which is read from /proc/stat).
 */
import { spawn } from "node:child_process"
import fs from "node:fs"

const command = process.argv.length > 2 ? process.argv.slice(2) : ["npx", "vitest", "run"]
const hz = 100 // USER_HZ: /proc's clock ticks (100 on Linux/x86_64)

const machineTicks = () => {
  const [, ...fields] = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.map(Number)
  return { busy: user + nice + system + irq + softirq + steal, all: user + nice + system + idle + iowait + irq + softirq + steal }
}

const commandLine = (pid) => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim().slice(0, 200)
  } catch {
    return "" // gone
  }
}

/** pid:starttime → { name, cmd, first, last } (CPU seconds when first and last seen). */
const seen = new Map()
const sample = (firstSweep) => {
  for (const pid of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      const close = stat.lastIndexOf(")")
      const name = stat.slice(stat.indexOf("(") + 1, close)
      const f = stat.slice(close + 2).split(" ")
      const cpu = (Number(f[11]) + Number(f[12])) / hz
      const key = `${pid}:${f[19]}`
      const known = seen.get(key)
      if (known !== undefined) {
        known.last = cpu
        // Seen between fork and exec: its command line comes later.
        if (known.cmd === "") known.cmd = commandLine(pid)
      } else {
        // A process already running before the command counts from now; a new one from its start.
        seen.set(key, { name, cmd: commandLine(pid), first: firstSweep ? cpu : 0, last: cpu })
      }
    } catch { /* gone between readdir and read */ }
  }
}

const kindOf = ({ name, cmd }) =>
  name === "postgres" ? "PostgreSQL"
    : /chrom/.test(name) || cmd.includes("chromium") ? "Chromium"
    : cmd.includes("tinypool") ? "vitest workers"
    : cmd.includes("vitest") ? "vitest main"
    : cmd.includes("dist/main.js") ? "spawned gateways (dist/main.js)"
    : cmd.includes("dist/replay/cli.js") ? "audit CLI (dist/replay/cli.js)"
    : /\btsc\b|typescript/.test(cmd) ? "tsc"
    : name === "esbuild" || cmd.includes("esbuild") ? "esbuild"
    : /^(node|npm|sh)$/.test(name) || cmd.startsWith("node") ? `other node: ${cmd.slice(0, 60)}`
    : name

sample(true)
const before = machineTicks()
const started = Date.now()
const timer = setInterval(() => sample(false), 200)
const child = spawn(command[0], command.slice(1), { stdio: ["ignore", "inherit", "inherit"] })
const code = await new Promise((resolve) => child.on("exit", (c) => resolve(c ?? 1)))
clearInterval(timer)
sample(false)
const after = machineTicks()
const wall = (Date.now() - started) / 1000

const byKind = new Map()
for (const [key, p] of seen) {
  if (Number(key.split(":")[0]) === process.pid) continue
  const used = p.last - p.first
  if (used <= 0) continue
  const k = kindOf(p)
  const entry = byKind.get(k) ?? { cpu: 0, n: 0 }
  entry.cpu += used
  entry.n += 1
  byKind.set(k, entry)
}
const busy = (after.busy - before.busy) / hz
const capacity = (after.all - before.all) / hz
console.log(`\n${command.join(" ")}: exit ${code}, wall ${wall.toFixed(1)} s; machine busy ${busy.toFixed(0)} s of ${capacity.toFixed(0)} s (${((busy / capacity) * 100).toFixed(0)}%)`)
for (const [k, { cpu, n }] of [...byKind].sort((a, b) => b[1].cpu - a[1].cpu).slice(0, 20)) {
  console.log(`${cpu.toFixed(1).padStart(7)} s  ${String(n).padStart(4)} × ${k}`)
}
process.exitCode = code
