/**
 * What the inference fast path answers with 202 at once instead of running the request:
 *
 * - a shadow decision (`X-AwoooP-Shadow: 1`, or a lane in shadow mode, by its config or by the
 *   operator's runtime switch, routing/LaneMode.ts): plan() against the live
 *   view, journaled as ShadowDecided, no upstream call (operations/Shadow.ts);
 * - an async run (a generate/chat on an `async: true` lane): stored, journaled, queued; the answer
 *   names the run and its status URL (operations/async/AsyncRuns.ts).
 * The OpenAI routes take shadow decisions too (a lane in shadow mode never executes, by any route);
 * an async lane stays 409 there, as OpenAI's API has no run to poll.
 */
import { type Context, Effect } from "effect"
import { type CallerContext, HeaderNames } from "../domain/CallerContext.ts"
import type { GatewayError } from "../domain/Errors.ts"
import type { OllamaRequest } from "../domain/OllamaApi.ts"
import { AsyncRuns } from "../operations/async/AsyncRuns.ts"
import { isShadowRequested, ShadowHeaders, ShadowMode } from "../operations/Shadow.ts"
import type { LaneActor } from "../routing/Lane.ts"

/** The operations a request may be handed to instead of running (operations/): the tags, and their union. */
export const acceptServices = [ShadowMode, AsyncRuns] as const
export type AcceptServices = Context.Tag.Identifier<typeof acceptServices[number]>

export interface Accepted {
  readonly _tag: "Accepted"
  readonly headers: Readonly<Record<string, string>>
  readonly body: unknown
}

const header = (headers: Readonly<Record<string, string | undefined>>, name: string): string | null => {
  const v = headers[name]?.trim()
  return v === undefined || v === "" ? null : v.slice(0, 512)
}

/** A shadow decision instead of running, when the request or its lane asks for one; null otherwise. */
export const shadowInstead = (
  request: OllamaRequest,
  caller: CallerContext,
  lane: LaneActor,
  headers: Readonly<Record<string, string | undefined>>
): Effect.Effect<Accepted | null, never, ShadowMode> => {
  const viaHeader = isShadowRequested(headers[ShadowHeaders.shadow])
  // The lane's mode now (the config's, or the operator's: routing/LaneMode.ts).
  if (!viaHeader && lane.mode.current().mode !== "shadow") return Effect.succeed(null)
  return Effect.map(
    Effect.flatMap(ShadowMode, (shadow) => shadow.decide({
      lane,
      operation: request.operation,
      caller,
      requestedModel: request.body.model,
      via: viaHeader ? "header" : "lane",
      legacyEndpoint: header(headers, ShadowHeaders.legacyEndpoint),
      legacyModel: header(headers, ShadowHeaders.legacyModel)
    })),
    (decision): Accepted => ({
      _tag: "Accepted",
      headers: { [HeaderNames.traceId]: caller.traceId, "x-awooop-lane": lane.name, [ShadowHeaders.shadow]: "1" },
      body: { shadow: true, ...decision, traceId: caller.traceId }
    })
  )
}

/** A shadow decision or an async run instead of running inline; null: run the request as usual. */
export const acceptInstead = (
  request: OllamaRequest,
  caller: CallerContext,
  lane: LaneActor,
  headers: Readonly<Record<string, string | undefined>>,
  prompt: unknown
): Effect.Effect<Accepted | null, GatewayError, AcceptServices> =>
  Effect.flatMap(shadowInstead(request, caller, lane, headers), (shadow) => {
    if (shadow !== null) return Effect.succeed(shadow)
    if (!lane.config.async || (request.operation !== "generate" && request.operation !== "chat")) return Effect.succeed(null)
    return Effect.map(
      Effect.flatMap(AsyncRuns, (asyncRuns) => asyncRuns.submit({ lane, request, caller, prompt, via: "inference" })),
      (run): Accepted => ({
        _tag: "Accepted",
        headers: {
          [HeaderNames.traceId]: caller.traceId,
          [HeaderNames.runId]: run.runId,
          "x-awooop-lane": lane.name,
          location: run.statusUrl
        },
        body: run
      })
    )
  })
