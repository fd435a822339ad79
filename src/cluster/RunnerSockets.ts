/**
 * The sockets between runners: `@effect/platform-node`'s cluster transport (NodeClusterSocket), with
 * Nagle's algorithm off on both ends (`noDelay`). The host entity's messages are small and many are
 * in flight at once on one connection under load; with Nagle a message written while the previous
 * one is unacknowledged waits for that ACK.
 */
import * as Runners from "@effect/cluster/Runners"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import { Socket } from "@effect/platform/Socket"
import * as RpcClient from "@effect/rpc/RpcClient"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import { Effect, Layer, Option } from "effect"

/** How this runner reaches another (the library's timeouts: 1 s to open, 5.5 s idle). */
export const layerClientProtocol = Layer.effect(
  Runners.RpcClientProtocol,
  Effect.map(RpcSerialization.RpcSerialization, (serialization) =>
    Effect.fnUntraced(function*(address: { readonly host: string; readonly port: number }) {
      const socket = yield* NodeSocket.makeNet({ openTimeout: 1000, timeout: 5500, host: address.host, port: address.port, noDelay: true })
      return yield* RpcClient.makeProtocolSocket().pipe(
        Effect.provideService(Socket, socket),
        Effect.provideService(RpcSerialization.RpcSerialization, serialization)
      )
    }, Effect.orDie))
)

/** Where other runners reach this one: the sharding config's listen address (or its runner address). */
export const layerSocketServer = Layer.unwrapEffect(Effect.gen(function*() {
  const config = yield* ShardingConfig.ShardingConfig
  const listen = Option.orElse(config.runnerListenAddress, () => config.runnerAddress)
  if (Option.isNone(listen)) return yield* Effect.dieMessage("runner sockets: no listen address in the sharding config")
  return NodeSocketServer.layer({ ...listen.value, noDelay: true })
}))
