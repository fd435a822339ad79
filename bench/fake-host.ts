/** A fake Ollama host in its own process, so the benchmark's load generator does not share its event loop. */
import { startFakeOllama } from "../test/support/FakeOllama.ts"

const port = Number(process.argv[2] ?? 0)
const fake = await startFakeOllama({ port, name: "bench", record: false, chunks: 8 })
process.stdout.write(`READY ${fake.port}\n`)
process.on("SIGTERM", () => void fake.stop().then(() => process.exit(0)))
