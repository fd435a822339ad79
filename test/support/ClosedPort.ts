/**
 * A URL on loopback where connecting is refused at once: a host that is down.
 *
 * Port 9 (discard), which nothing here serves. A port taken with listen(0) and closed again — how
 * the tests did it before — goes back to the kernel's ephemeral range, and another suite's fake host
 * could be given it a moment later: a "down" host then answered (paid-fallback saw `[gcp-b] hello
 * world` from the other worker's fake). Ports below the ephemeral range are never handed out that way.
 */
import * as net from "node:net"

const port = 9

export const closedPortUrl = (): Promise<string> =>
  new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      reject(new Error(`127.0.0.1:${port} accepts connections: the tests need it closed (a dead host's URL)`))
    })
    socket.once("error", (error: NodeJS.ErrnoException) =>
      error.code === "ECONNREFUSED" ? resolve(`http://127.0.0.1:${port}`) : reject(error))
  })
