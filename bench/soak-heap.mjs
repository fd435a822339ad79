// Preloaded into the soak's gateway (NODE_OPTIONS=--expose-gc --import): once a minute, a full GC,
// then the heap still in use is appended to $SOAK_HEAP_FILE ("<seconds> <bytes>"). RSS alone cannot
// tell a leak from V8 growing its heap lazily; the heap left after a full collection can.
import { appendFileSync } from "node:fs"

const file = process.env.SOAK_HEAP_FILE
const every = Number(process.env.SOAK_HEAP_EVERY_MS ?? 60_000)
if (file && typeof globalThis.gc === "function") {
  const t0 = Date.now()
  setInterval(() => {
    globalThis.gc()
    appendFileSync(file, `${((Date.now() - t0) / 1000).toFixed(1)} ${process.memoryUsage().heapUsed}\n`)
  }, every).unref()
}
