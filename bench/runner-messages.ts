/**
 * The host entity's messages between two runners of one cluster in this process (Postgres, loopback
 * sockets), `concurrency` at a time from the runner that does not own the host: messages per second
 * and the median round trip, with the runner sockets as shipped (`noDelay`, cluster/RunnerSockets.ts)
 * and as the library makes them (Nagle on).
 *
 *   npx tsx bench/runner-messages.ts [messages=4000] [concurrency=32]
 */
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import { RunnerAddress } from "@effect/cluster/RunnerAddress"
import * as Runners from "@effect/cluster/Runners"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SocketRunner from "@effect/cluster/SocketRunner"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import { Duration, Effect, Layer, Option, Scope } from "effect"
import pg from "pg"
import * as HostEntity from "../src/cluster/HostEntity.ts"
import * as RunnerSockets from "../src/cluster/RunnerSockets.ts"
import { layerFromUrl } from "../src/storage/Database.ts"
import { freePort } from "../test/support/FreePort.ts"

const total = Number(process.argv[2] ?? 4000)
const concurrency = Number(process.argv[3] ?? 32)
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const settings: HostEntity.EntitySettings = {
  leaseMs: 500,
  hosts: { "gpu-1": { slots: 1_000_000, reservations: {}, breaker: { consecutiveTimeouts: 2, cooldown: 10_000 }, longestTimeoutMs: 1_000 } }
}

const runner = (url: string, port: number, sockets: "noDelay" | "library") => {
  const transport = sockets === "noDelay"
    ? { server: RunnerSockets.layerSocketServer, client: RunnerSockets.layerClientProtocol }
    : { server: NodeClusterSocket.layerSocketServer, client: NodeClusterSocket.layerClientProtocol }
  return HostEntity.layer(settings).pipe(
    Layer.provideMerge(SocketRunner.layer.pipe(
      Layer.provide([transport.server, transport.client]),
      Layer.provide(RunnerHealth.layerPing.pipe(Layer.provide(Runners.layerRpc), Layer.provide(transport.client))),
      Layer.provideMerge(Layer.orDie(Layer.merge(SqlMessageStorage.layer, SqlRunnerStorage.layer))),
      Layer.provideMerge(ShardingConfig.layer({
        runnerAddress: Option.some(RunnerAddress.make({ host: "127.0.0.1", port })),
        shardLockExpiration: Duration.seconds(9),
        simulateRemoteSerialization: false
      })),
      Layer.provide(RpcSerialization.layerMsgPack)
    )),
    Layer.provide(layerFromUrl(url, { maxConnections: 4 }))
  )
}

const measure = (sockets: "noDelay" | "library") =>
  Effect.scoped(Effect.gen(function*() {
    const db = `awooop_rm_${Date.now()}`
    const admin = new pg.Client({ connectionString: adminUrl })
    yield* Effect.promise(() => admin.connect().then(() => admin.query(`CREATE DATABASE ${db}`)))
    yield* Effect.addFinalizer(() => Effect.promise(() => admin.query(`DROP DATABASE ${db} WITH (FORCE)`).then(() => admin.end())))
    const url = adminUrl.replace(/\/[^/]*$/, `/${db}`)
    const scope = yield* Effect.scope
    const [pa, pb] = yield* Effect.promise(() => Promise.all([freePort(), freePort()]))
    const a = yield* Layer.buildWithScope(runner(url, pa, sockets), scope)
    const b = yield* Layer.buildWithScope(runner(url, pb, sockets), scope)
    const clients = [a, b].map((ctx) => Effect.runSync(Effect.provide(HostEntity.HostEntity.client, ctx))("gpu-1"))
    yield* Effect.sleep("6 seconds")
    const owner = (yield* clients[0]!.Renew({ opened: null, replica: "probe", leases: [] })).state.owner
    const remote = owner.endsWith(`:${pa}`) ? clients[1]! : clients[0]!
    yield* Effect.sleep("1 second")
    let next = 0
    const times: Array<number> = []
    const t0 = performance.now()
    yield* Effect.all(Array.from({ length: concurrency }, (_, w) =>
      Effect.gen(function*() {
        while (next < total) {
          const i = next++
          const t = performance.now()
          yield* remote.Acquire({ replica: `w${w}`, lease: `w${w}/${i}`, lane: "x" })
          yield* remote.Release({ replica: `w${w}`, leases: [`w${w}/${i}`] })
          times.push(performance.now() - t)
        }
      })), { concurrency: "unbounded", discard: true })
    const secs = (performance.now() - t0) / 1000
    times.sort((x, y) => x - y)
    console.log(`${sockets.padEnd(8)} ${total} grant+release pairs at c=${concurrency} from the other runner: ${(total / secs).toFixed(0)} pairs/s, p50 ${times[Math.floor(times.length / 2)]!.toFixed(2)} ms, p99 ${times[Math.floor(times.length * 0.99)]!.toFixed(2)} ms`)
  }))

void Scope
for (const round of [1, 2]) {
  void round
  await Effect.runPromise(measure("library"))
  await Effect.runPromise(measure("noDelay"))
}
process.exit(0)
