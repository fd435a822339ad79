/**
 * Two runners of one cluster on one Postgres, in this process, talking over loopback sockets
 * (src/cluster/Runner.ts): an entity lives on exactly one of them and both reach the same instance;
 * a singleton runs on exactly one; when that runner stops, the other takes both over.
 */
import { Entity } from "@effect/cluster"
import * as Singleton from "@effect/cluster/Singleton"
import * as Rpc from "@effect/rpc/Rpc"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Layer, Schedule, Schema, Scope } from "effect"
import * as Runner from "../src/cluster/Runner.ts"
import { layerFromUrl } from "../src/storage/Database.ts"
import { clusterDatabase } from "./support/ClusterDatabase.ts"
import { freePort } from "./support/FreePort.ts"
import { shardsSplit } from "./support/ShardSplit.ts"

const Counter = Entity.make("ProofCounter", [
  Rpc.make("Inc", { success: Schema.Struct({ n: Schema.Number, runner: Schema.String }) })
])

const startRunner = (url: string, port: number, singletonRuns: Array<string>, scope: Scope.Scope) => {
  const me = `localhost:${port}`
  const CounterLive = Counter.toLayer(Effect.sync(() => {
    let n = 0
    return { Inc: () => Effect.sync(() => ({ n: ++n, runner: me })) }
  }))
  const SingletonLive = Singleton.make("proof-singleton", Effect.acquireRelease(
    Effect.sync(() => singletonRuns.push(`start ${me}`)),
    () => Effect.sync(() => singletonRuns.push(`stop ${me}`))
  ).pipe(Effect.zipRight(Effect.never)))
  const layer = Layer.mergeAll(CounterLive, SingletonLive).pipe(
    Layer.provideMerge(Runner.layer({ host: "localhost", port, lockExpiration: Duration.seconds(9) })),
    Layer.provide(layerFromUrl(url, { maxConnections: 4 }))
  )
  return Layer.buildWithScope(layer, scope)
}

const running = (runs: ReadonlyArray<string>) => {
  const now = new Map<string, number>()
  for (const r of runs) {
    const [what, who] = r.split(" ") as [string, string]
    now.set(who, (now.get(who) ?? 0) + (what === "start" ? 1 : -1))
  }
  return [...now].filter(([, n]) => n > 0).map(([who]) => who)
}

describe("cluster runners on one Postgres", () => {
  it.live("one entity instance and one singleton across two runners; the survivor takes over", () =>
    Effect.gen(function*() {
      const url = yield* clusterDatabase
      const runs: Array<string> = []
      const [portA, portB] = yield* Effect.promise(() => Promise.all([freePort(), freePort()]))
      const scopeA = yield* Scope.make()
      const scopeB = yield* Scope.make()
      yield* Effect.addFinalizer(() => Effect.all([Scope.close(scopeA, Exit.void), Scope.close(scopeB, Exit.void)]))
      const a = yield* startRunner(url, portA, runs, scopeA)
      const b = yield* startRunner(url, portB, runs, scopeB)
      const clientA = yield* Counter.client.pipe(Effect.provide(a))
      const clientB = yield* Counter.client.pipe(Effect.provide(b))
      // Shards move to the second runner when it registers (an entity moved that way starts empty,
      // like one taken over after a crash): let the assignment settle first.
      const settling = Date.now()
      const splitMs = yield* shardsSplit([a, b])
      yield* Effect.log(`shards split between the runners after ${splitMs} ms`)
      // The singleton starts on its shard's holder once that runner has acquired the shard.
      while (running(runs).length === 0 && Date.now() - settling < 30_000) yield* Effect.sleep("50 millis")

      const first = yield* clientA("host-1").Inc()
      const second = yield* clientB("host-1").Inc()
      expect(second.n).toBe(first.n + 1)
      expect(second.runner).toBe(first.runner)
      expect(running(runs)).toHaveLength(1)

      // Stop the runner that owns the entity; the other one serves it (its state starts anew).
      const owner = first.runner
      yield* Scope.close(owner === `localhost:${portA}` ? scopeA : scopeB, Exit.void)
      const survivor = owner === `localhost:${portA}` ? clientB : clientA
      const started = Date.now()
      // A message that meets the stopped runner's closing socket fails (EPIPE) instead of waiting for
      // the shard to move: a caller asks again, as HostLink's retry tick does.
      const after = yield* survivor("host-1").Inc().pipe(Effect.retry(Schedule.spaced("200 millis")), Effect.timeout("30 seconds"))
      expect(after.runner).not.toBe(owner)
      yield* Effect.log(`entity failover after a clean stop: ${Date.now() - started} ms`)
      const moved = Date.now()
      while (running(runs).join() !== after.runner && Date.now() - moved < 20_000) yield* Effect.sleep("100 millis")
      expect(running(runs)).toEqual([after.runner])
    }).pipe(Effect.scoped), 90_000)
})
