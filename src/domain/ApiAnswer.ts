/**
 * How the gateway's JSON answers are declared in its HttpApi (Api.ts, OperatorApi.ts), so that
 * HttpApiBuilder sends them exactly as the hand-written routes did:
 * - with the content type the gateway has always sent (`application/json; charset=utf-8`);
 * - keeping every field the declaration does not name (`onExcessProperty: "preserve"`): a host's
 *   own fields in /api/tags, /api/ps and /api/show pass through, and nothing the server sends is
 *   ever dropped by the declaration on the way out. test/api-contract.e2e.test.ts decodes every
 *   answer strictly instead, so a field the server sends without declaring it fails there.
 */
import { HttpApiSchema } from "@effect/platform"
import { Schema } from "effect"

export const jsonContentType = "application/json; charset=utf-8"

export const answer = <S extends Schema.Schema.Any>(schema: S): S =>
  HttpApiSchema.withEncoding(
    schema.annotations({ parseOptions: { onExcessProperty: "preserve" } }) as S,
    { kind: "Json", contentType: jsonContentType } as never
  )

/**
 * A query parameter as it arrives: given twice it is an array, which the gateway refuses with its
 * own 400 naming the parameter (http/RunRoutes.ts `parseCostQuery`), so the declaration does not
 * refuse it first with another message.
 */
export const QueryParam = Schema.Union(Schema.String, Schema.Array(Schema.String))
