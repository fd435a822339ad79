/**
 * The server and the HttpApi (src/domain/Api.ts) cannot disagree: this fails when they do.
 *
 * - The API HttpApiBuilder serves (`ServedApi`) is the typed client's (`GatewayApi`) less exactly
 *   the endpoints the node:http edge serves, with the very same endpoint declarations.
 * - On a running gateway every served endpoint answers with its declared success status and
 *   content type, and a body that decodes with its declared schema *strictly* (no field the
 *   declaration does not name: the server's encoding keeps extra fields, so they would show here).
 * - The typed client derived from the API round-trips every served endpoint.
 * - Refusals keep the gateway's shapes through the builder, and the client decodes them.
 *
 * A new endpoint in the API without a probe below fails the test.
 */
import { FetchHttpClient, HttpApiSchema } from "@effect/platform"
import { Effect, Either, Redacted, Schema, SchemaAST } from "effect"
import {
  edgeEndpoints,
  GatewayApi,
  GatewayClient,
  type GatewayClientService,
  ServedApi
} from "awooop-inference-gateway/client"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { newTraceId, startTestGateway, type TestGateway } from "./support/TestGateway.ts"

const TOKEN = "contract-admin-token"
const admin = { authorization: `Bearer ${TOKEN}` }

let gw: TestGateway
/** A finished synchronous run (projected or folded from the journal), its trace, and a finished async run. */
let ids: { readonly runId: string; readonly traceId: string; readonly asyncRunId: string }

const previousToken = process.env.AWOOOP_ADMIN_TOKEN

const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** An async run on deep-rca whose hosts hang: queued or running, so a DELETE cancels it (200). */
const hangingRun = async (): Promise<string> => {
  gw.fakes["111"]!.setMode("hang")
  gw.fakes["gpu-node"]!.setMode("hang")
  const res = await gw.post("/awooop/runs", { operation: "generate", model: "qwen2.5:14b", prompt: "hang" }, { "x-awooop-lane": "deep-rca" })
  expect(res.status).toBe(202)
  return ((await res.json()) as { runId: string }).runId
}

beforeAll(async () => {
  process.env.AWOOOP_ADMIN_TOKEN = TOKEN
  gw = await startTestGateway({ projections: {} })
  const traceId = newTraceId()
  const sync = await gw.post("/api/generate", { model: "gemma3:4b", prompt: "hi", stream: false }, { "x-awooop-lane": "alert-fast", "x-awooop-trace-id": traceId })
  expect(sync.status).toBe(200)
  const runId = sync.headers.get("x-awooop-run-id")!
  await gw.runEvents(traceId)
  const submitted = await gw.post("/awooop/runs", { operation: "generate", model: "qwen2.5:14b", prompt: "x" }, { "x-awooop-lane": "deep-rca" })
  const asyncRunId = ((await submitted.json()) as { runId: string }).runId
  await until("the async run to succeed", async () =>
    ((await (await fetch(`${gw.url}/awooop/runs/${asyncRunId}`)).json()) as { status: string }).status === "succeeded")
  ids = { runId, traceId, asyncRunId }
}, 60_000)

afterAll(async () => {
  await gw?.close()
  if (previousToken === undefined) delete process.env.AWOOOP_ADMIN_TOKEN
  else process.env.AWOOOP_ADMIN_TOKEN = previousToken
})

interface RawRequest {
  readonly method?: string
  readonly path: string
  readonly body?: unknown
  readonly headers?: Record<string, string>
}

interface Probe {
  /** Requests each answered with the endpoint's declared success. */
  readonly raw: () => Promise<ReadonlyArray<RawRequest>>
  /** The same through the typed client. */
  readonly client: (c: GatewayClientService) => Effect.Effect<unknown, unknown>
}

const inAnHour = () => new Date(Date.now() + 3_600_000).toISOString()

/** One probe per served endpoint, keyed "group.endpoint". */
const probes: Record<string, Probe> = {
  "ollama.tags": { raw: async () => [{ path: "/api/tags" }], client: (c) => c.tags },
  "ollama.ps": { raw: async () => [{ path: "/api/ps" }], client: (c) => c.ps },
  "ollama.version": { raw: async () => [{ path: "/api/version" }], client: (c) => c.api.ollama.version() },
  "ollama.show": { raw: async () => [{ method: "POST", path: "/api/show", body: { model: "gemma3:4b" } }], client: (c) => c.show("gemma3:4b") },
  "runs.submit": {
    raw: async () => [{ method: "POST", path: "/awooop/runs", body: { operation: "chat", model: "qwen2.5:14b", messages: [{ role: "user", content: "x" }] }, headers: { "x-awooop-lane": "deep-rca" } }],
    client: (c) => c.submitRun({ operation: "generate", model: "qwen2.5:14b", prompt: "x" }, { lane: "deep-rca" })
  },
  "runs.status": {
    // Both members of RunStatus: an async run, and a run of the journal's projection.
    raw: async () => [{ path: `/awooop/runs/${ids.asyncRunId}` }, { path: `/awooop/runs/${ids.runId}` }],
    client: (c) => Effect.zip(c.runStatus(ids.asyncRunId), c.runStatus(ids.runId))
  },
  "runs.cancel": {
    raw: async () => [{ method: "DELETE", path: `/awooop/runs/${await hangingRun()}` }],
    client: (c) => Effect.flatMap(Effect.promise(hangingRun), (id) => c.cancelRun(id))
  },
  "runs.trace": { raw: async () => [{ path: `/awooop/traces/${ids.traceId}` }], client: (c) => c.trace(ids.traceId) },
  "runs.cost": {
    raw: async () => [{ path: "/awooop/cost" }, { path: "/awooop/cost?groupBy=lane,provider,model,day,caller" }],
    client: (c) => c.cost({ groupBy: "project,lane" })
  },
  "operations.health": { raw: async () => [{ path: "/awooop/health" }], client: (c) => c.health },
  "operations.metrics": { raw: async () => [{ path: "/metrics" }], client: (c) => c.api.operations.metrics() },
  "operations.shadowReport": {
    raw: async () => [{ path: "/awooop/shadow/report?since=1h" }],
    client: (c) => c.api.operations.shadowReport({ urlParams: { since: "2h" } })
  },
  "admin.budget": { raw: async () => [{ path: "/awooop/admin/budget", headers: admin }], client: (c) => c.api.admin.budget({ headers: admin }) },
  "admin.hardKill": {
    raw: async () => [{ method: "POST", path: "/awooop/admin/budget/hard-kill", body: { tripped: false, reason: "contract" }, headers: admin }],
    client: (c) => c.api.admin.hardKill({ headers: admin, payload: { tripped: false } })
  },
  "admin.maintenance": {
    raw: async () => [{ method: "POST", path: "/awooop/admin/hosts/gpu-node/maintenance", body: { open: true, reason: "contract", until: inAnHour() }, headers: admin }],
    client: (c) => c.api.admin.maintenance({ path: { host: "gpu-node" }, headers: admin, payload: { open: false, reason: "done" } })
  },
  // Each leaves alert-fast active: a pin to "active" (then its repeat, unchanged), and its removal.
  "admin.setLaneMode": {
    raw: async () => [
      { method: "PUT", path: "/awooop/admin/lanes/alert-fast/mode", body: { mode: "active", reason: "contract" }, headers: admin },
      { method: "PUT", path: "/awooop/admin/lanes/alert-fast/mode", body: { mode: "active", reason: "contract again" }, headers: admin }
    ],
    client: (c) => c.setLaneMode("alert-fast", "active", "contract", Redacted.make(TOKEN))
  },
  "admin.resetLaneMode": {
    raw: async () => [
      { method: "DELETE", path: "/awooop/admin/lanes/alert-fast/mode?reason=contract", headers: admin },
      { method: "DELETE", path: "/awooop/admin/lanes/alert-fast/mode", body: { reason: "contract" }, headers: admin }
    ],
    client: (c) =>
      Effect.zipRight(c.setLaneMode("alert-fast", "active", "contract", Redacted.make(TOKEN)), c.resetLaneMode("alert-fast", Redacted.make(TOKEN), "contract"))
  }
}

type AnyEndpoint = { readonly name: string; readonly method: string; readonly path: string; readonly successSchema: Schema.Schema.Any }
type AnyGroup = { readonly identifier: string; readonly endpoints: Record<string, AnyEndpoint> }

const groupsOf = (api: { readonly groups: unknown }) => Object.values(api.groups as Record<string, AnyGroup>)
const served = groupsOf(ServedApi).flatMap((g) => Object.values(g.endpoints).map((e) => ({ key: `${g.identifier}.${e.name}`, endpoint: e })))

/** The declared schema, decoding strictly: a field the server sends that it does not declare fails. */
const strict = (schema: Schema.Schema.Any) =>
  Schema.decodeUnknownEither(Schema.make(SchemaAST.annotations(schema.ast, { [SchemaAST.ParseOptionsAnnotationId]: { onExcessProperty: "error" } })))

const fetchRaw = (r: RawRequest) =>
  fetch(gw.url + r.path, {
    method: r.method ?? "GET",
    headers: { ...(r.body === undefined ? {} : { "content-type": "application/json" }), ...r.headers },
    ...(r.body === undefined ? {} : { body: JSON.stringify(r.body) })
  })

const withClient = <A>(f: (c: GatewayClientService) => Effect.Effect<A, unknown>) =>
  Effect.runPromise(Effect.either(Effect.flatMap(GatewayClient, f)).pipe(
    Effect.provide(GatewayClient.layer({ baseUrl: gw.url })),
    Effect.provide(FetchHttpClient.layer)
  ))

const resetHosts = () => {
  for (const fake of Object.values(gw.fakes)) fake.setMode("ok")
}

describe("the served API is the client's API", () => {
  it("less exactly the edge's endpoints, with the same declarations", () => {
    const gatewayGroups = groupsOf(GatewayApi)
    expect(groupsOf(ServedApi).map((g) => g.identifier).sort()).toEqual(gatewayGroups.map((g) => g.identifier).sort())
    for (const group of gatewayGroups) {
      const servedGroup = (ServedApi.groups as Record<string, AnyGroup>)[group.identifier]!
      for (const [name, endpoint] of Object.entries(group.endpoints)) {
        const onEdge = group.identifier === "ollama" && (edgeEndpoints as ReadonlyArray<string>).includes(name)
        expect(servedGroup.endpoints[name], `${group.identifier}.${name}`).toBe(onEdge ? undefined : endpoint)
      }
      expect(Object.keys(servedGroup.endpoints).every((name) => name in group.endpoints)).toBe(true)
    }
  })

  it("every served endpoint has a probe here", () => {
    expect(served.map((s) => s.key).sort()).toEqual(Object.keys(probes).sort())
  })
})

describe("every served endpoint answers as declared", () => {
  it.each(served.map((s) => [s.key, s.endpoint] as const))("%s", async (key, endpoint) => {
    resetHosts()
    try {
      const status = HttpApiSchema.getStatusSuccess(endpoint.successSchema)
      const encoding = HttpApiSchema.getEncoding(endpoint.successSchema.ast)
      for (const request of await probes[key]!.raw()) {
        expect(request.method ?? "GET", key).toBe(endpoint.method)
        const res = await fetchRaw(request)
        const text = await res.text()
        expect(res.status, `${key} ${request.path}: ${text}`).toBe(status)
        expect(res.headers.get("content-type"), key).toBe(encoding.contentType)
        if (encoding.kind === "Json") {
          const decoded = strict(endpoint.successSchema)(JSON.parse(text))
          expect(Either.isRight(decoded), `${key} ${request.path}: ${Either.isLeft(decoded) ? String(decoded.left) : ""}`).toBe(true)
        } else {
          expect(text.length, key).toBeGreaterThan(0)
        }
      }
    } finally {
      resetHosts()
    }
  })
})

describe("the typed client round-trips every served endpoint", () => {
  it.each(served.map((s) => [s.key] as const))("%s", async (key) => {
    resetHosts()
    try {
      const result = await withClient(probes[key]!.client)
      expect(Either.isRight(result), `${key}: ${Either.isLeft(result) ? String(result.left) : ""}`).toBe(true)
    } finally {
      resetHosts()
    }
  })
})

describe("refusals through the builder keep the gateway's shapes", () => {
  it("a plain refusal is {\"error\"} at its status; the client reads it as a GatewayResponseError", async () => {
    const res = await fetch(`${gw.url}/awooop/runs/not-a-run`)
    expect(res.status).toBe(400)
    expect(res.headers.get("content-type")).toBe("application/json; charset=utf-8")
    expect(res.headers.get("x-awooop-error")).toBeNull()
    expect(await res.json()).toEqual({ error: "run id must be a UUID (or run-<uuid>), got \"not-a-run\"" })
    const result = await withClient((c) => c.runStatus("not-a-run"))
    expect(Either.isLeft(result) && result.left).toMatchObject({ _tag: "GatewayResponseError", status: 400 })
  })

  it("a gateway error has its class's status, Ollama's body and its tagged header; admin's 401 has the challenge", async () => {
    const res = await fetch(`${gw.url}/awooop/admin/budget`, { headers: { authorization: "Bearer wrong" } })
    expect(res.status).toBe(401)
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="awooop-admin"')
    expect(res.headers.get("x-awooop-error")).not.toBeNull()
    expect(await res.json()).toEqual({ error: "unauthorized: wrong bearer token" })
    const result = await withClient((c) => c.api.admin.budget({ headers: { authorization: "Bearer wrong" } }))
    expect(Either.isLeft(result) && result.left).toMatchObject({ _tag: "Unauthorized", reason: "wrong bearer token" })
    const lane = await withClient((c) => c.setLaneMode("alert-fast", "shadow", "x", Redacted.make("wrong")))
    expect(Either.isLeft(lane) && lane.left).toMatchObject({ _tag: "Unauthorized", reason: "wrong bearer token" })
    const unknownLane = await withClient((c) => c.resetLaneMode("no-such-lane", Redacted.make(TOKEN)))
    expect(Either.isLeft(unknownLane) && unknownLane.left).toMatchObject({ _tag: "GatewayResponseError", status: 404 })

    const bad = await gw.post("/awooop/runs", { operation: "generate", model: "qwen2.5:14b", prompt: "x" }, { "x-awooop-lane": "deep-rca", "x-awooop-trace-id": "nope" })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: string }).error).toMatch(/^malformed X-AwoooP-Trace-ID "nope"/)
  })
})
