/**
 * When two runners of one cluster have settled: every shard of the group is held by exactly one of
 * them and each holds some. The split is a function of the set of runners, so while both run nothing
 * moves after that (an entity or singleton started before it may move once, and starts empty there).
 */
import { Sharding, ShardingConfig, ShardId } from "@effect/cluster"
import { Context, Effect } from "effect"

const split = (shardings: ReadonlyArray<Sharding.Sharding["Type"]>, group: string, shardsPerGroup: number) => {
  const held = shardings.map(() => 0)
  for (let id = 1; id <= shardsPerGroup; id++) {
    const holders = shardings.flatMap((s, i) => (s.hasShardId(ShardId.make(group, id)) ? [i] : []))
    if (holders.length !== 1) return false
    held[holders[0]!]! += 1
  }
  return held.every((n) => n > 0)
}

/** Waits (polling every 100 ms, up to 30 s) until the runners built into `contexts` have split the shards; the milliseconds it took. */
export const shardsSplit = (
  contexts: ReadonlyArray<Context.Context<Sharding.Sharding | ShardingConfig.ShardingConfig>>,
  group = "default"
) =>
  Effect.gen(function*() {
    const shardings = contexts.map((ctx) => Context.get(ctx, Sharding.Sharding))
    const { shardsPerGroup } = Context.get(contexts[0]!, ShardingConfig.ShardingConfig)
    const started = Date.now()
    while (!split(shardings, group, shardsPerGroup)) {
      if (Date.now() - started > 30_000) return yield* Effect.dieMessage(`the shards of group ${group} never split between the ${contexts.length} runners`)
      yield* Effect.sleep("100 millis")
    }
    return Date.now() - started
  })
