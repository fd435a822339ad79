/**
 * Bytes allocated per request, by allocating function (issue 14, item 4): the test gateway in
 * process, V8's sampling heap profiler with collected objects included, over N sequential requests.
 *
 *   npx tsx bench/alloc.ts [requests=300]
 */
import { Session } from "node:inspector/promises"
import { startTestGateway } from "../test/support/TestGateway.ts"

const n = Number(process.argv[2] ?? 300)
const gw = await startTestGateway({})
const body = JSON.stringify({ model: "gemma3:4b", prompt: "why?", stream: false })
const one = async () => {
  const res = await fetch(`${gw.url}/api/generate`, { method: "POST", headers: { "content-type": "application/json", "x-awooop-lane": "alert-fast" }, body })
  await res.text()
  if (res.status !== 200) throw new Error(`status ${res.status}`)
}
for (let i = 0; i < 100; i++) await one()
const session = new Session()
session.connect()
await session.post("HeapProfiler.startSampling", { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
for (let i = 0; i < n; i++) await one()
await new Promise((r) => setTimeout(r, 300))
const { profile } = await session.post("HeapProfiler.stopSampling") as { profile: { head: Node } }
interface Node { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Array<Node> }
const byFn = new Map<string, number>()
const byOwn = new Map<string, number>()
let total = 0
const walk = (node: Node, own: string | null) => {
  const cf = node.callFrame
  const url = cf.url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*?\/src\//, "src/")
  const here = `${cf.functionName || "(anon)"} ${url}:${cf.lineNumber + 1}`
  const mine = url.startsWith("src/") ? here : own
  total += node.selfSize
  byFn.set(here, (byFn.get(here) ?? 0) + node.selfSize)
  const k = mine ?? "(no src frame)"
  byOwn.set(k, (byOwn.get(k) ?? 0) + node.selfSize)
  for (const c of node.children) walk(c, mine)
}
walk(profile.head, null)
const top = (m: Map<string, number>, k: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, k).map(([f, v]) => `${(v / n).toFixed(0).padStart(7)} B  ${f}`).join("\n")
console.log(`${(total / n).toFixed(0)} bytes allocated per request (sampled; in-process: includes the fetch client and the fake host)\n\nby allocating function:\n${top(byFn, 30)}\n\nby nearest src/ function:\n${top(byOwn, 40)}`)
await gw.close()
process.exit(0)
