/**
 * The floor for any Node proxy on this machine: node:http in, undici out, no logic, no journal. The
 * gateway benchmark runs it beside the gateway so the gap between "a proxy" and "the gateway" is
 * measured, not guessed. Not part of the product.
 */
import { createServer } from "node:http"
import { Agent, request } from "undici"

const upstream = process.argv[2]!
const agent = new Agent({ connections: 256, keepAliveTimeout: 30_000 })
const server = createServer((req, res) => {
  const chunks: Array<Buffer> = []
  req.on("data", (c: Buffer) => chunks.push(c))
  req.on("end", () => {
    request(`${upstream}${req.url}`, { method: "POST", dispatcher: agent, headers: { "content-type": "application/json" }, body: Buffer.concat(chunks) })
      .then(async (r) => {
        res.writeHead(r.statusCode, { "content-type": String(r.headers["content-type"] ?? "application/json") })
        for await (const chunk of r.body) res.write(chunk)
        res.end()
      })
      .catch((e: Error) => {
        res.writeHead(502, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: e.message }))
      })
  })
})
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  process.stdout.write(`READY ${typeof address === "object" && address !== null ? address.port : 0}\n`)
})
process.on("SIGTERM", () => server.close(() => process.exit(0)))
