/**
 * The host entity's messages in a cluster of two runners in this process (Postgres, loopback
 * sockets): `concurrency` grant + release pairs at a time, asked from the runner that owns the host
 * and from the other one — pairs per second and the round trip's median and p99.
 *
 *   npx tsx bench/runner-messages.ts [pairs=4000] [concurrency=32]
 */
import { Duration, Effect, Layer } from "effect"
import pg from "pg"
import * as HostEntity from "../src/cluster/HostEntity.ts"
import * as Runner from "../src/cluster/Runner.ts"
import { layerFromUrl } from "../src/storage/Database.ts"
import { freePort } from "../test/support/FreePort.ts"

const total = Number(process.argv[2] ?? 4000)
const concurrency = Number(process.argv[3] ?? 32)
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const settings: HostEntity.EntitySettings = {
  leaseMs: 500,
  hosts: { "gpu-1": { slots: 1_000_000, reservations: {}, breaker: { consecutiveTimeouts: 2, cooldown: 10_000 }, longestTimeoutMs: 1_000 } }
}

const runner = (url: string, port: number) =>
  HostEntity.layer(settings).pipe(
    Layer.provideMerge(Runner.layer({ host: "127.0.0.1", port, lockExpiration: Duration.seconds(9) })),
    Layer.provide(layerFromUrl(url, { maxConnections: 4 }))
  )

type Host = ReturnType<Effect.Effect.Success<typeof HostEntity.HostEntity.client>>

const pairs = (host: Host, label: string) =>
  Effect.gen(function*() {
    let next = 0
    const times: Array<number> = []
    const t0 = performance.now()
    yield* Effect.all(Array.from({ length: concurrency }, (_, w) =>
      Effect.gen(function*() {
        while (next < total) {
          const i = next++
          const t = performance.now()
          yield* host.Acquire({ replica: `${label}${w}`, lease: `${label}${w}/${i}`, lane: "x" })
          yield* host.Release({ replica: `${label}${w}`, leases: [`${label}${w}/${i}`] })
          times.push(performance.now() - t)
        }
      })), { concurrency: "unbounded", discard: true })
    const secs = (performance.now() - t0) / 1000
    times.sort((x, y) => x - y)
    const at = (q: number) => times[Math.floor(times.length * q)]!.toFixed(2)
    console.log(`${label.padEnd(22)} ${total} grant+release pairs at c=${concurrency}: ${(total / secs).toFixed(0)} pairs/s, p50 ${at(0.5)} ms, p99 ${at(0.99)} ms`)
  })

await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const db = `awooop_rm_${Date.now()}`
  const admin = new pg.Client({ connectionString: adminUrl })
  yield* Effect.promise(() => admin.connect().then(() => admin.query(`CREATE DATABASE ${db}`)))
  yield* Effect.addFinalizer(() => Effect.promise(() => admin.query(`DROP DATABASE ${db} WITH (FORCE)`).then(() => admin.end())))
  const url = adminUrl.replace(/\/[^/]*$/, `/${db}`)
  const scope = yield* Effect.scope
  const [pa, pb] = yield* Effect.promise(() => Promise.all([freePort(), freePort()]))
  const clients = yield* Effect.forEach([pa, pb], (port) =>
    Effect.flatMap(Layer.buildWithScope(runner(url, port), scope), (ctx) =>
      Effect.map(Effect.provide(HostEntity.HostEntity.client, ctx), (client) => client("gpu-1"))))
  // The shards settle, then the owner's recovery period passes.
  yield* Effect.sleep("7 seconds")
  const owner = (yield* clients[0]!.Renew({ opened: null, replica: "probe", leases: [] })).state.owner
  const [local, remote] = owner.endsWith(`:${pa}`) ? [clients[0]!, clients[1]!] : [clients[1]!, clients[0]!]
  for (let round = 0; round < 2; round++) {
    yield* pairs(local, "on the owner's runner")
    yield* pairs(remote, "from the other runner")
  }
})))
process.exit(0)
