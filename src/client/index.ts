/**
 * The AwoooP gateway's typed Effect client (`awooop-inference-gateway/client`): the client, its
 * options and errors, and the API definitions it is derived from.
 */
export { type CallOptions, GatewayClient, type GatewayClientConfig, type GatewayClientError, type GatewayClientService, make } from "./GatewayClient.ts"
export * from "../domain/Api.ts"
export * from "../domain/OperatorApi.ts"
export * from "../domain/Errors.ts"
export type { ChatRequest, EmbedRequest, EmbeddingsRequest, GenerateRequest } from "../domain/OllamaApi.ts"
