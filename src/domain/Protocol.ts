/**
 * The wire protocol a caller spoke. Every protocol is translated onto the same lane request (an
 * Ollama body); the run's RunStarted records which one it was, so an audit can tell an Anthropic
 * SDK caller from an `ollama` one.
 */
export type Protocol =
  | "ollama"
  | "openai-chat"
  | "openai-completions"
  | "openai-embeddings"
  | "openai-responses"
  | "anthropic-messages"
