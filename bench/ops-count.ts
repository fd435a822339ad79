/**
 * Effect operations per request in the whole gateway (edge, lane, journal, projector, observers),
 * in process: the test gateway on Postgres and fake hosts on loopback, with the default scheduler's
 * per-op `shouldYield` call counted (issue 14, item 4). Sequential requests after a warm-up, so
 * batch work (journal writer, projector) is included at its per-request share at c=1.
 *
 *   npx tsx bench/ops-count.ts [requests=200]
 */
import { Effect, Fiber, Scheduler } from "effect"
import { currentRequest } from "../src/observability/RequestLog.ts"
import { startTestGateway } from "../test/support/TestGateway.ts"

let ops = 0
let requestOps = 0
const sched = Scheduler.defaultScheduler as unknown as { shouldYield: (f: unknown) => unknown }
const shouldYield = sched.shouldYield.bind(sched)
sched.shouldYield = (f) => {
  ops++
  if ((f as { getFiberRef: (r: unknown) => unknown }).getFiberRef(currentRequest) !== null) requestOps++
  return shouldYield(f)
}

// Which operations: each op method of the fiber runtime, wrapped, keyed by the op and where its function comes from.
const byOp = new Map<string, number>()
let counting = false
let trail: Array<string> | null = null
const proto = Object.getPrototypeOf(Effect.runFork(Effect.void)) as Record<string, unknown>
for (const name of Object.getOwnPropertyNames(proto)) {
  const m = proto[name]
  if (typeof m !== "function" || !/^[A-Z]/.test(name)) continue
  proto[name] = function(this: { getFiberRef: (r: unknown) => unknown }, op: Record<string, unknown>) {
    if (counting && this.getFiberRef(currentRequest) !== null) {
      const f = (op.effect_instruction_i1 ?? op.effect_instruction_i0) as unknown
      const where = typeof f === "function" ? String(f).replace(/\s+/g, " ").slice(0, 90) : ""
      const key = `${name} ${where}`
      byOp.set(key, (byOp.get(key) ?? 0) + 1)
      if (trail !== null) trail.push(`${(this as unknown as { id: () => { id: number } }).id().id} ${key}`)
    }
    return (m as (op: unknown) => unknown).call(this, op)
  }
}
void Fiber
const n = Number(process.argv[2] ?? 200)
const gw = await startTestGateway({})
const body = JSON.stringify({ model: "gemma3:4b", prompt: "why?", stream: false })
const one = async (stream: boolean) => {
  const res = await fetch(`${gw.url}/api/generate`, { method: "POST", headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast" }, body: stream ? body.replace("false", "true") : body })
  await res.text()
  if (res.status !== 200) throw new Error(`status ${res.status}`)
}
for (let i = 0; i < 50; i++) await one(false)
await new Promise((r) => setTimeout(r, 500))
for (const stream of [false, true]) {
  ops = 0
  requestOps = 0
  const cpu0 = process.cpuUsage()
  for (let i = 0; i < n; i++) await one(stream)
  await new Promise((r) => setTimeout(r, 300)) // the journal's and projector's batches for them
  const cpu = process.cpuUsage(cpu0)
  console.log(`${stream ? "streaming" : "unary"}: ${(ops / n).toFixed(0)} Effect ops per request (${(requestOps / n).toFixed(0)} in the request's fibers); process CPU ${((cpu.user + cpu.system) / n).toFixed(0)} µs/req (incl. fetch client and fake host)`)
}
counting = true
for (let i = 0; i < 100; i++) await one(false)
trail = []
await one(false)
counting = false
if (process.env.TRAIL) (await import("node:fs")).writeFileSync(process.env.TRAIL, trail.join("\n"))
const byKind = new Map<string, number>()
for (const [k, v] of byOp) byKind.set(k.split(" ")[0]!, (byKind.get(k.split(" ")[0]!) ?? 0) + v)
console.log("by op:", [...byKind].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${(v / 100).toFixed(0)}`).join(", "))
for (const [k, v] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 70)) console.log(`${(v / 100).toFixed(1).padStart(6)}  ${k}`)
await gw.close()
process.exit(0)
