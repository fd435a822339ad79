/**
 * What this process is in the cluster (issue 13), for the parts that must run once per cluster:
 * `singleton(name, run)` runs `run` on exactly one runner at a time (moved to another when that one
 * dies), `runners` lists the cluster. The default is the single runner: a singleton is a fiber of
 * the caller's scope, and nothing is asked of Postgres — the single-runner gateway is as before.
 */
import * as Sharding from "@effect/cluster/Sharding"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Duration, Effect, Layer, Option, type Scope } from "effect"
import type { Gauge } from "../observability/Metrics.ts"
import * as HostCluster from "./HostCluster.ts"
import * as Runner from "./Runner.ts"

export interface RunnerRow {
  readonly address: string
  readonly healthy: boolean
  readonly lastHeartbeat: string
}

export interface ClusterView {
  readonly runner: string
  readonly runners: ReadonlyArray<RunnerRow>
  /** Singleton name → the runner that last took it (as recorded in Postgres). */
  readonly singletons: Readonly<Record<string, string>>
  /** The singletons running in this process now. */
  readonly here: ReadonlyArray<string>
}

export interface ClusterRoleShape {
  /** This runner's address; null for the single runner. */
  readonly runner: string | null
  readonly lockExpirationMs: number
  /** Runs `run` once per cluster while the caller's scope lasts. */
  readonly singleton: (name: string, run: Effect.Effect<void, never, Scope.Scope>) => Effect.Effect<void, never, Scope.Scope>
  /** The cluster as Postgres knows it; null for the single runner. */
  readonly view: Effect.Effect<ClusterView | null>
}

const single: ClusterRoleShape = {
  runner: null,
  lockExpirationMs: 0,
  singleton: (_name, run) => Effect.asVoid(Effect.forkScoped(run)),
  view: Effect.succeed(null)
}

export class ClusterRole extends Context.Reference<ClusterRole>()("awooop/ClusterRole", { defaultValue: () => single }) {}

const readView = (sql: SqlClient.SqlClient, runner: string, here: ReadonlySet<string>) =>
  Effect.gen(function*() {
    const runners = yield* sql<RunnerRow>`
      SELECT address, healthy, last_heartbeat::text AS "lastHeartbeat" FROM cluster_runners ORDER BY address`
    const held = yield* sql<{ readonly name: string; readonly runner: string }>`SELECT name, runner FROM cluster_singletons ORDER BY name`
    return { runner, runners, singletons: Object.fromEntries(held.map((s) => [s.name, s.runner])), here: [...here].sort() }
  })

const clustered = (config: Runner.RunnerConfig) =>
  Layer.effect(
    ClusterRole,
    Effect.gen(function*() {
      const sharding = yield* Sharding.Sharding
      const sql = yield* SqlClient.SqlClient
      const runner = Runner.describe(config)
      const here = new Set<string>()
      const running = (name: string) => Effect.acquireRelease(Effect.sync(() => here.add(name)), () => Effect.sync(() => here.delete(name)))
      const claim = (name: string) =>
        sql`INSERT INTO cluster_singletons (name, runner, since) VALUES (${name}, ${runner}, now())
            ON CONFLICT (name) DO UPDATE SET runner = excluded.runner, since = now()`.pipe(
          Effect.catchAll((error) => Effect.logWarning(`cluster: singleton ${name} not recorded`, error))
        )
      return {
        runner,
        lockExpirationMs: Duration.toMillis(config.lockExpiration),
        singleton: (name, run) =>
          sharding.registerSingleton(name, Effect.zipRight(
            Effect.zipRight(claim(name), Effect.logInfo(`cluster: singleton ${name} runs here (${runner})`)),
            Effect.scoped(Effect.zipRight(Effect.zipRight(running(name), run), Effect.never))
          )),
        view: readView(sql, runner, here).pipe(Effect.orElseSucceed(() => ({ runner, runners: [], singletons: {}, here: [...here].sort() })))
      } satisfies ClusterRoleShape
    })
  )

/**
 * The cluster runner, its role and the hosts' coordination through their entities when
 * `AWOOOP_RUNNER_PORT` is set; nothing otherwise (the defaults are the single runner's). Needs the
 * gateway's `SqlClient` and config.
 */
export const ClusterLive = Layer.unwrapEffect(
  Effect.map(Runner.runnerConfigFromEnv, Option.match({
    onNone: () => Layer.empty,
    onSome: (config) =>
      // The hosts' slots and breakers through their entities (cluster/HostCluster.ts).
      Layer.merge(clustered(config), HostCluster.layer(config)).pipe(
        Layer.provide(Runner.layer(config)),
        Layer.tap(() => Runner.logStart(config))
      )
  }))
)

/** /metrics lines for the cluster (none for the single runner). */
export const clusterGauges = (view: ClusterView | null, hostOwners: Readonly<Record<string, string | null>> = {}): Array<Gauge> =>
  view === null ? [] : [
    { name: "awooop_cluster_runner", help: "This process's runner address in the cluster (always 1).", samples: [{ labels: { runner: view.runner }, value: 1 }] },
    {
      name: "awooop_cluster_runners",
      help: "Runners registered in the cluster, by health.",
      samples: [true, false].map((healthy) => ({ labels: { healthy: String(healthy) }, value: view.runners.filter((r) => r.healthy === healthy).length }))
    },
    {
      name: "awooop_cluster_singleton",
      help: "The runner that runs each once-per-cluster task (1).",
      samples: Object.entries(view.singletons).map(([name, runner]) => ({ labels: { name, runner }, value: 1 }))
    },
    {
      name: "awooop_cluster_host_owner",
      help: "The runner whose host entity holds each host's slots and breaker (1).",
      samples: Object.entries(hostOwners).flatMap(([host, runner]) => runner === null ? [] : [{ labels: { host, runner }, value: 1 }])
    }
  ]
