-- run_state.protocol: the wire protocol the caller spoke (RunStarted's `protocol`: ollama,
-- openai-chat, openai-responses, anthropic-messages, …); NULL for runs journaled before it was
-- recorded, and for async runs (their RunStarted says `via`).
ALTER TABLE run_state ADD COLUMN IF NOT EXISTS protocol text;
