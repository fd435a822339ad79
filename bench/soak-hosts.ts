/**
 * The soak's upstreams in their own process (so the load generator does not share their event loop):
 * fake Ollama hosts gcp-a, gcp-b and 111, and a fake Gemini. Prints `READY {json of urls}`, then takes
 * commands over IPC from bench/soak.ts: { id, op: "mode", host, mode, delayMs? } | { id, op: "stop" |
 * "start", host } | { id, op: "inFlight" }, answering { id, result }.
 */
import { startFakeGemini } from "../test/support/FakeGemini.ts"
import { type FakeMode, type FakeOllama, startFakeOllama } from "../test/support/FakeOllama.ts"

const apiKey = process.env.AWOOOP_SOAK_GEMINI_KEY ?? "soak"
const fakes: Record<string, FakeOllama> = {}
for (const name of ["gcp-a", "gcp-b", "111"]) fakes[name] = await startFakeOllama({ name, record: false })
const gemini = await startFakeGemini({ apiKey, delayMs: 20 })

type Command =
  | { readonly id: number; readonly op: "mode"; readonly host: string; readonly mode: FakeMode; readonly delayMs?: number }
  | { readonly id: number; readonly op: "stop" | "start"; readonly host: string }
  | { readonly id: number; readonly op: "inFlight" }

process.on("message", (raw) => {
  const command = raw as Command
  const reply = (result: unknown) => process.send?.({ id: command.id, result })
  switch (command.op) {
    case "mode":
      fakes[command.host]!.setMode(command.mode, command.delayMs !== undefined ? { delayMs: command.delayMs } : undefined)
      return reply(true)
    case "stop":
      return void fakes[command.host]!.stop().then(() => reply(true))
    case "start":
      return void fakes[command.host]!.start().then(() => reply(true))
    case "inFlight":
      return reply(Object.fromEntries(Object.entries(fakes).map(([n, f]) => [n, f.inFlight()])))
  }
})
process.on("disconnect", () => process.exit(0))

const urls = { ...Object.fromEntries(Object.entries(fakes).map(([n, f]) => [n, f.url])), gemini: gemini.url }
process.stdout.write(`READY ${JSON.stringify(urls)}\n`)
