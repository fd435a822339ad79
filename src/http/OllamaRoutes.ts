/**
 * The rest of the Ollama-compatible surface (the inference routes are in InferenceRoutes.ts): tags,
 * ps, show and version fan out to the hosts (the `ollama` group of domain/Api.ts, served by
 * ApiServer.ts); model management is refused (the gateway does not own the hosts' models), and
 * `/` answers Ollama's liveness banner, both on the platform router (`ollamaRoutes`).
 */
import { HttpRouter, HttpServerResponse } from "@effect/platform"
import { Effect } from "effect"
import type { PsResponse, ShowResponse, TagsResponse, VersionResponse } from "../domain/Api.ts"
import { BadRequest, ModelNotFound, NotManaged } from "../domain/Errors.ts"
import { ShowRequest } from "../domain/OllamaApi.ts"
import { Gateway } from "../routing/Gateway.ts"
import { errorResponse } from "./ErrorResponse.ts"
import { decodeBody, readJson } from "./RequestBody.ts"

// The hosts' entries pass through as they are: the declared schema checks them on the way out.

/** GET /api/tags: every model installed on any host, once, with the hosts that have it (`awooop_hosts`). */
export const tags: Effect.Effect<TagsResponse, never, Gateway> = Effect.gen(function*() {
  const gateway = yield* Gateway
  const answers = yield* fanOut(gateway, "/api/tags")
  const byName = new Map<string, Record<string, unknown> & { awooop_hosts: Array<string> }>()
  for (const { host, json } of answers) {
    for (const model of modelsOf(json)) {
      const name = String(model.name ?? model.model)
      const seen = byName.get(name)
      if (seen) seen.awooop_hosts.push(host)
      else byName.set(name, { ...model, awooop_hosts: [host] })
    }
  }
  return { models: [...byName.values()] } as unknown as TagsResponse
})

/** GET /api/ps: every resident model on every host, one entry per host (`awooop_host`). */
export const ps: Effect.Effect<PsResponse, never, Gateway> = Effect.gen(function*() {
  const gateway = yield* Gateway
  const answers = yield* fanOut(gateway, "/api/ps")
  return { models: answers.flatMap(({ host, json }) => modelsOf(json).map((m) => ({ ...m, awooop_host: host }))) } as unknown as PsResponse
})

const modelsOf = (json: Record<string, unknown>): Array<Record<string, unknown>> =>
  Array.isArray(json.models) ? json.models.filter((m): m is Record<string, unknown> => typeof m === "object" && m !== null) : []

/** Asks every host at once; a host that does not answer within probeTimeout is left out. */
const fanOut = (gateway: Gateway, path: string) =>
  Effect.forEach(
    [...gateway.hosts.values()],
    (host) =>
      gateway.upstream.unary(host.target, "GET", path, null, gateway.config.server.probeTimeout).pipe(
        Effect.map((r) => [{ host: host.name, json: r.json }]),
        Effect.orElseSucceed(() => [])
      ),
    { concurrency: "unbounded" }
  ).pipe(Effect.map((all) => all.flat()))

/** POST /api/show: the first host (in config order) that has the model answers. */
export const show = Effect.gen(function*() {
  const gateway = yield* Gateway
  return yield* Effect.gen(function*() {
    // Read here, not by the builder: the gateway's body limits and messages (RequestBody.ts).
    const raw = yield* readJson(gateway.config.server.maxBodyBytes)
    const body = yield* decodeBody(ShowRequest, raw)
    const model = body.model ?? body.name
    if (model === undefined) return yield* new BadRequest({ message: "model is required" })
    const bytes = new TextEncoder().encode(JSON.stringify({ model, ...(body.verbose !== undefined ? { verbose: body.verbose } : {}) }))
    for (const host of gateway.hosts.values()) {
      const answer = yield* gateway.upstream.unary(host.target, "POST", "/api/show", bytes, gateway.config.server.probeTimeout).pipe(Effect.option)
      if (answer._tag === "Some") return { ...answer.value.json, awooop_host: host.name } satisfies ShowResponse
    }
    return yield* new ModelNotFound({ lane: "(any)", model, hosts: [...gateway.hosts.keys()] })
  })
})

/** GET /api/version: the oldest version among the hosts, since a caller may only rely on what all of them support. */
export const version: Effect.Effect<VersionResponse, never, Gateway> = Effect.gen(function*() {
  const gateway = yield* Gateway
  const versions: Array<string> = []
  for (const host of gateway.hosts.values()) {
    const h = yield* host.health
    if (h.version !== null) versions.push(h.version)
  }
  if (versions.length === 0) {
    const answers = yield* fanOut(gateway, "/api/version")
    for (const a of answers) if (typeof a.json.version === "string") versions.push(a.json.version)
  }
  const oldest = versions.sort(compareVersions)[0] ?? "0.0.0"
  return { version: oldest }
})

const compareVersions = (a: string, b: string) => {
  const pa = a.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0)
  const pb = b.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

const notManaged = (route: string) => Effect.succeed(errorResponse(new NotManaged({ route })))
const running = Effect.succeed(HttpServerResponse.text("Ollama is running"))

export const ollamaRoutes = HttpRouter.empty.pipe(
  HttpRouter.get("/", running),
  HttpRouter.head("/", running),
  HttpRouter.post("/api/pull", notManaged("POST /api/pull")),
  HttpRouter.post("/api/push", notManaged("POST /api/push")),
  HttpRouter.post("/api/create", notManaged("POST /api/create")),
  HttpRouter.post("/api/copy", notManaged("POST /api/copy")),
  HttpRouter.del("/api/delete", notManaged("DELETE /api/delete")),
  HttpRouter.post("/api/blobs/:digest", notManaged("POST /api/blobs")),
  HttpRouter.head("/api/blobs/:digest", notManaged("HEAD /api/blobs"))
)
