/**
 * The health poller (src/routing/HostHealth.ts) against a scripted upstream: two failed probes of
 * /api/tags mark a host down, unless a probe timed out while the gateway's own event loop was
 * blocked for half its time or more (a GC pause, a starved process) — that says nothing of the host.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, PubSub } from "effect"
import type { HostEvent } from "../src/domain/Events.ts"
import type { LagMark } from "../src/observability/EventLoopLag.ts"
import { type HostChange, makeHostHealth } from "../src/routing/HostHealth.ts"
import { type OllamaUpstream, UpstreamFailure } from "../src/upstream/OllamaUpstream.ts"

const POLL_MS = 500 // probes get 2/5 of it: 200 ms

/** An upstream whose /api/tags times out or answers, as `tags` says; /api/ps and /api/version answer. */
const scripted = (tags: () => "timeout" | "ok") =>
  ({
    unary: (target: { readonly name: string }, _method: string, path: string) =>
      Effect.suspend(() =>
        path === "/api/tags" && tags() === "timeout"
          ? Effect.fail(new UpstreamFailure({ host: target.name, kind: "timeout", status: null, message: "no answer within 0.2s" }))
          : Effect.succeed({ bytes: new Uint8Array(), json: path === "/api/version" ? { version: "0.6.0" } : { models: [] } }))
  }) as unknown as OllamaUpstream

const poller = (tags: () => "timeout" | "ok", stallMs: () => number) =>
  Effect.gen(function*() {
    const events: Array<HostEvent["_tag"]> = []
    const lag = { mark: (): LagMark => ({ at: 0, stalled: 0 }), since: () => ({ lagMs: stallMs(), longestStallMs: stallMs() }) }
    const health = makeHostHealth(
      { name: "gpu-1", url: "http://127.0.0.1:1" },
      { upstream: scripted(tags), pollIntervalMs: POLL_MS, probeTimeoutMs: 2_000, lag },
      // Up and down only (the first poll also journals the residency it found).
      (event) => Effect.sync(() => void (event._tag !== "ResidencyChanged" && events.push(event._tag))),
      yield* PubSub.unbounded<HostChange>()
    )
    return { health, events }
  })

describe("host health poller", () => {
  it.effect("a host whose probes time out twice is down; one that answers again is up", () =>
    Effect.gen(function*() {
      let tags: "timeout" | "ok" = "ok"
      const { health, events } = yield* poller(() => tags, () => 0)
      yield* health.poll
      expect(health.current().status).toBe("up")
      tags = "timeout"
      yield* health.poll
      expect(health.current().status).toBe("down")
      tags = "ok"
      yield* health.poll
      expect(events).toEqual(["HostUp", "HostDown", "HostUp"])
    }))

  it.effect("probes that timed out while the gateway's event loop was blocked do not mark the host down", () =>
    Effect.gen(function*() {
      let tags: "timeout" | "ok" = "ok"
      let stall = 0
      const { health, events } = yield* poller(() => tags, () => stall)
      yield* health.poll
      // Blocked for 120 ms of the probe's 200: the timeouts are the gateway's, the host stays up.
      tags = "timeout"
      stall = 120
      yield* health.poll
      expect(health.current().status).toBe("up")
      // A stall shorter than half the probe's time does not excuse them.
      stall = 60
      yield* health.poll
      expect(health.current().status).toBe("down")
      expect(events).toEqual(["HostUp", "HostDown"])
    }))
})
