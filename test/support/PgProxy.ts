/**
 * A loopback TCP proxy in front of the local PostgreSQL, so a test can take "the database" away
 * from one gateway without touching the server other test suites share.
 *
 *   const proxy = await startPgProxy()                 // forwards 127.0.0.1:<port> → 127.0.0.1:5432
 *   const url = proxy.url("postgres://postgres@127.0.0.1:5432/mydb")   // same URL, through the proxy
 *   await proxy.stop()      // Postgres stopped: open connections cut, new ones refused (ECONNREFUSED)
 *   await proxy.start()     // back
 *   await proxy.restart(500) // a restart: connections cut, refused for 500 ms, then accepted again
 *   proxy.blackhole()       // a partition: connections stay open but nothing goes through …
 *   proxy.heal()            // … until it heals (held bytes are then delivered, as TCP would)
 *
 * Refusal closes the listening socket (a real ECONNREFUSED, like a stopped server) and listens on
 * the same port again on `start`.
 */
import * as net from "node:net"

export interface PgProxyOptions {
  readonly targetHost?: string
  readonly targetPort?: number
  /** Listen on this port (default: an ephemeral one, kept across stop/start). */
  readonly port?: number
}

export type PgProxyState = "forwarding" | "refusing" | "blackhole"

export interface PgProxy {
  readonly port: number
  readonly state: () => PgProxyState
  /** `url` with its host and port replaced by the proxy's. */
  readonly url: (url: string) => string
  /** Cuts every open connection and refuses new ones. */
  readonly stop: () => Promise<void>
  /** Accepts and forwards again (also ends a black hole). */
  readonly start: () => Promise<void>
  /** stop, wait `downMs`, start. */
  readonly restart: (downMs?: number) => Promise<void>
  /** Cuts every open connection; keeps accepting new ones. */
  readonly cutAll: () => void
  /** Holds every byte in both directions, on open and new connections, until `heal`. */
  readonly blackhole: () => void
  readonly heal: () => void
  /** Client connections currently open through the proxy. */
  readonly connections: () => number
  /** Connections accepted since the start (a reconnecting pool shows up here). */
  readonly accepted: () => number
  readonly close: () => Promise<void>
}

interface Pair {
  readonly client: net.Socket
  upstream: net.Socket | null
}

export const startPgProxy = async (options: PgProxyOptions = {}): Promise<PgProxy> => {
  const targetHost = options.targetHost ?? "127.0.0.1"
  const targetPort = options.targetPort ?? 5432
  const pairs = new Set<Pair>()
  let state: PgProxyState = "forwarding"
  let accepted = 0
  let port = options.port ?? 0

  const destroy = (pair: Pair) => {
    pairs.delete(pair)
    pair.client.destroy()
    pair.upstream?.destroy()
  }

  const connectUpstream = (pair: Pair) => {
    const upstream = net.connect({ host: targetHost, port: targetPort })
    pair.upstream = upstream
    upstream.setNoDelay(true)
    upstream.on("error", () => destroy(pair))
    upstream.on("close", () => destroy(pair))
    // Plain data handlers, not pipe(): pipe() would resume a socket paused by a black hole on 'drain'.
    pair.client.on("data", (d: Buffer) => upstream.write(d))
    upstream.on("data", (d: Buffer) => pair.client.write(d))
    if (state === "blackhole") {
      pair.client.pause()
      upstream.pause()
    } else pair.client.resume()
  }

  const onConnection = (client: net.Socket) => {
    accepted++
    client.setNoDelay(true)
    const pair: Pair = { client, upstream: null }
    pairs.add(pair)
    client.on("error", () => destroy(pair))
    client.on("close", () => destroy(pair))
    // In a black hole the connection is accepted but goes nowhere until it heals.
    if (state === "blackhole") client.pause()
    else connectUpstream(pair)
  }

  let server: net.Server | null = null
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = net.createServer({ pauseOnConnect: true }, onConnection)
      s.once("error", reject)
      s.listen(port, "127.0.0.1", () => {
        s.off("error", reject)
        port = (s.address() as net.AddressInfo).port
        server = s
        resolve()
      })
    })
  // close() calls back only once every accepted connection has ended: cut them after it stops accepting.
  const unlisten = (cut: boolean) =>
    new Promise<void>((resolve) => {
      const s = server
      server = null
      if (s === null) {
        if (cut) cutAll()
        return resolve()
      }
      s.close(() => resolve())
      if (cut) cutAll()
    })

  const cutAll = () => {
    for (const pair of [...pairs]) destroy(pair)
  }

  const heal = () => {
    if (state !== "blackhole") return
    state = "forwarding"
    for (const pair of [...pairs]) {
      if (pair.upstream === null) connectUpstream(pair)
      else {
        pair.client.resume()
        pair.upstream.resume()
      }
    }
  }

  await listen()

  const proxy: PgProxy = {
    get port() {
      return port
    },
    state: () => state,
    url: (url) => {
      const u = new URL(url)
      u.hostname = "127.0.0.1"
      u.port = String(port)
      return u.toString()
    },
    stop: async () => {
      heal()
      state = "refusing"
      await unlisten(true)
    },
    start: async () => {
      heal()
      if (server === null) await listen()
      state = "forwarding"
    },
    restart: async (downMs = 300) => {
      await proxy.stop()
      await new Promise((r) => setTimeout(r, downMs))
      await proxy.start()
    },
    cutAll,
    blackhole: () => {
      if (state !== "forwarding") return
      state = "blackhole"
      for (const pair of pairs) {
        pair.client.pause()
        pair.upstream?.pause()
      }
    },
    heal,
    connections: () => pairs.size,
    accepted: () => accepted,
    close: () => unlisten(true)
  }
  return proxy
}
