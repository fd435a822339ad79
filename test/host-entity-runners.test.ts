/**
 * The host entity on two real runners of one cluster in this process (Postgres, loopback sockets;
 * src/cluster/Runner.ts): both runners' links reach the one entity, and a grant's round trip is
 * timed from the runner that owns it and from the other (printed: the added latency per request).
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Option, Scope } from "effect"
import * as HostEntity from "../src/cluster/HostEntity.ts"
import * as Runner from "../src/cluster/Runner.ts"
import { layerFromUrl } from "../src/storage/Database.ts"
import { clusterDatabase } from "./support/ClusterDatabase.ts"
import { freePort } from "./support/FreePort.ts"
import { shardsSplit } from "./support/ShardSplit.ts"

const settings: HostEntity.EntitySettings = {
  leaseMs: 500,
  hosts: { "gpu-1": { slots: 2, reservations: {}, breaker: { consecutiveTimeouts: 2, cooldown: 10_000 }, longestTimeoutMs: 1_000 } }
}

const startRunner = (url: string, port: number, scope: Scope.Scope) =>
  Layer.buildWithScope(
    HostEntity.layer(settings).pipe(
      Layer.provideMerge(Runner.layer({ host: "localhost", port, lockExpiration: Duration.seconds(9) })),
      Layer.provide(layerFromUrl(url, { maxConnections: 4 }))
    ),
    scope
  )

const p50 = (xs: Array<number>) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

describe("host entity on two runners", () => {
  it.live("one count for both runners; a grant's round trip, local and remote", () =>
    Effect.gen(function*() {
      const url = yield* clusterDatabase
      const [portA, portB] = yield* Effect.promise(() => Promise.all([freePort(), freePort()]))
      const scope = yield* Effect.scope
      const a = yield* startRunner(url, portA, scope)
      const b = yield* startRunner(url, portB, scope)
      const hostA = (yield* HostEntity.HostEntity.client.pipe(Effect.provide(a)))("gpu-1")
      const hostB = (yield* HostEntity.HostEntity.client.pipe(Effect.provide(b)))("gpu-1")
      // Let the shards settle on both runners: once they are split the entity's owner is final;
      // then both runners name it, past its recovery period.
      yield* shardsSplit([a, b])
      let owner = ""
      const deadline = Date.now() + 30_000
      for (;;) {
        const ra = (yield* hostA.Renew({ opened: null, replica: "a", leases: [] })).state
        const rb = (yield* hostB.Renew({ opened: null, replica: "b", leases: [] })).state
        if (ra.owner === rb.owner && !ra.recovering && !rb.recovering) {
          owner = ra.owner
          break
        }
        if (Date.now() > deadline) throw new Error(`the host entity did not settle within 30 s (a: ${JSON.stringify(ra)}, b: ${JSON.stringify(rb)})`)
        yield* Effect.sleep("100 millis")
      }

      const g1 = yield* hostA.Acquire({ replica: "a", lease: "a/1", lane: "x" })
      const g2 = yield* hostB.Acquire({ replica: "b", lease: "b/1", lane: "x" })
      const g3 = yield* hostB.Acquire({ replica: "b", lease: "b/2", lane: "x" })
      expect([g1.pool, g2.pool, g3.pool]).toEqual(["shared", "shared", null])
      yield* hostA.Release({ replica: "a", leases: ["a/1"] })
      yield* hostB.Release({ replica: "b", leases: ["b/1"] })

      const time = (host: typeof hostA, who: string) =>
        Effect.gen(function*() {
          const times: Array<number> = []
          for (let i = 0; i < 200; i++) {
            const t0 = performance.now()
            const g = yield* host.Acquire({ replica: who, lease: `${who}/t${i}`, lane: "x" })
            times.push(performance.now() - t0)
            expect(Option.fromNullable(g.pool)._tag).toBe("Some")
            yield* host.Release({ replica: who, leases: [`${who}/t${i}`] })
          }
          return p50(times.slice(20))
        })
      const fromA = yield* time(hostA, "a")
      const fromB = yield* time(hostB, "b")
      const [local, remote] = owner === `localhost:${portA}` ? [fromA, fromB] : [fromB, fromA]
      yield* Effect.log(`host entity: a grant's p50 from the owner's runner ${local.toFixed(3)} ms, from the other ${remote.toFixed(3)} ms`)
      console.log(`host entity: a grant's p50 from the owner's runner ${local.toFixed(3)} ms, from the other ${remote.toFixed(3)} ms`)
    }).pipe(Effect.scoped), 60_000)
})
