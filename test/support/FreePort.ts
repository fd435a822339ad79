/**
 * A TCP port nobody listens on right now, for a server a test starts later (a gateway, a runner).
 *
 * Chosen at random below the kernel's ephemeral range and checked by listening on it once. A port
 * the kernel picks (listen(0)) goes back to that range when closed, and any other suite's listen(0)
 * may be given it before this one's server binds it (test/support/ClosedPort.ts: that happened to a
 * dead host's port); below the range only another random pick can collide.
 */
import * as fs from "node:fs"
import { createServer } from "node:net"

const ephemeralStart = (() => {
  try {
    return Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768
  } catch {
    return 32768
  }
})()
const lowest = 20000
const highest = Math.max(lowest + 1000, ephemeralStart) - 1

const tryPort = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = createServer()
    server.once("error", () => resolve(false))
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
  })

export const freePort = async (): Promise<number> => {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = lowest + Math.floor(Math.random() * (highest - lowest + 1))
    if (await tryPort(port)) return port
  }
  throw new Error(`no free port between ${lowest} and ${highest} after 100 tries`)
}
