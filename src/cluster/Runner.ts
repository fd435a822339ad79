/**
 * This gateway as one runner of a cluster (issue 13): replicas on the same Postgres register in SQL
 * (`cluster_runners`), hold shards with Postgres advisory locks on a reserved connection, and talk
 * to each other over plain TCP sockets (msgpack). No shard-manager process.
 *
 * Configured by `AWOOOP_RUNNER_PORT` (the port other runners reach this one at; unset → no cluster,
 * the gateway is a single runner as before), `AWOOOP_RUNNER_HOST` (default `localhost`) and
 * `AWOOOP_CLUSTER_LOCK_EXPIRATION` (default `9 seconds`: how long a dead runner's shards stay
 * locked, hence about the failover time) and `AWOOOP_CLUSTER_SLOT_LEASE` (default `5 seconds`: how long a
 * host slot lease lives without renewal; cluster/HostLeases.ts).
 *
 * The sharding config is built here, not with `ShardingConfig.layerFromEnv`: that one reads
 * unprefixed variables (`HOST`, `PORT`, …) that a process manager may set for other reasons.
 */
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import { RunnerAddress } from "@effect/cluster/RunnerAddress"
import * as Runners from "@effect/cluster/Runners"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SocketRunner from "@effect/cluster/SocketRunner"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import { layerClientProtocol, layerSocketServer } from "@effect/platform-node/NodeClusterSocket"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import { Config, Duration, Effect, Layer, Option, Schedule } from "effect"

export interface RunnerConfig {
  /** The address other runners reach this one at. */
  readonly host: string
  readonly port: number
  /** A dead runner's shards are taken over after about this long. */
  readonly lockExpiration: Duration.Duration
  /**
   * A host slot lease not renewed for this long expires (cluster/HostLeases.ts), and a host entity's
   * new owner grants nothing for this long after it starts. Default 5 seconds.
   */
  readonly slotLease?: Duration.Duration
}

export const defaultSlotLease = Duration.seconds(5)

/** The cluster's settings from the environment; None without `AWOOOP_RUNNER_PORT` (single runner). */
export const runnerConfigFromEnv = Config.all({
  host: Config.string("AWOOOP_RUNNER_HOST").pipe(Config.withDefault("localhost")),
  port: Config.option(Config.port("AWOOOP_RUNNER_PORT")),
  lockExpiration: Config.duration("AWOOOP_CLUSTER_LOCK_EXPIRATION").pipe(Config.withDefault(Duration.seconds(9))),
  slotLease: Config.duration("AWOOOP_CLUSTER_SLOT_LEASE").pipe(Config.withDefault(defaultSlotLease))
}).pipe(Config.map(({ host, lockExpiration, port, slotLease }): Option.Option<RunnerConfig> =>
  Option.map(port, (port) => ({ host, port, lockExpiration, slotLease }))
))

/** Everything a runner needs but the `SqlClient`: sharding, runner storage and messages in SQL, the socket transport. */
export const layer = (config: RunnerConfig) => {
  const expiration = Duration.toMillis(config.lockExpiration)
  const sharding = ShardingConfig.layer({
    runnerAddress: Option.some(RunnerAddress.make({ host: config.host, port: config.port })),
    // Listens on every interface at that port: the advertised host may be a name the load balancer's network resolves.
    runnerListenAddress: Option.some(RunnerAddress.make({ host: "0.0.0.0", port: config.port })),
    shardLockExpiration: config.lockExpiration,
    // A third of the expiration (the library's own bound), so a lost lock is noticed before another runner may take it.
    shardLockRefreshInterval: Duration.millis(Math.max(500, Math.floor(expiration / 3))),
    refreshAssignmentsInterval: Duration.seconds(1),
    sendRetryInterval: Duration.millis(50),
    entityMessagePollInterval: Duration.seconds(1),
    entityReplyPollInterval: Duration.millis(100),
    runnerHealthCheckInterval: Duration.seconds(2),
    // Local messages are not round-tripped through msgpack: the host entity is asked on every request.
    simulateRemoteSerialization: false,
    entityTerminationTimeout: Duration.seconds(5)
  })
  // Replicas started together race on the library's CREATE TABLE IF NOT EXISTS (Postgres then
  // reports a duplicate pg_type row, or "relation cluster_migrations already exists"): the loser
  // tries again, finding the tables made. The library's migrator dies on that error (orDie), so the
  // defect is turned back into a failure the retry sees.
  const storage = Layer.merge(SqlMessageStorage.layer, SqlRunnerStorage.layer).pipe(
    Layer.catchAllCause((cause) => Layer.fail(cause)),
    Layer.retry(Schedule.spaced("300 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(10)))),
    Layer.orDie
  )
  return SocketRunner.layer.pipe(
    Layer.provide([layerSocketServer, layerClientProtocol]),
    Layer.provide(RunnerHealth.layerPing.pipe(Layer.provide(Runners.layerRpc), Layer.provide(layerClientProtocol))),
    Layer.provideMerge(storage),
    Layer.provideMerge(sharding),
    Layer.provide(RpcSerialization.layerMsgPack)
  )
}

export const describe = (config: RunnerConfig): string => `${config.host}:${config.port}`

export const logStart = (config: RunnerConfig) =>
  Effect.logInfo(`Cluster: runner ${describe(config)} (shard locks expire after ${Duration.format(config.lockExpiration)})`)
