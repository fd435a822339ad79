/**
 * A relayed answer's chunks, pulled one at a time. The lane's Ollama relay is one of these rather
 * than an Effect Stream: running a Stream costs ~100 µs of fixed work per request (channel
 * machinery, measured in BENCHMARKS.md) where a pull costs one Effect per chunk. Consumers that
 * want a Stream (the OpenAI translation, async runs) take `toStream`.
 *
 * Ending the relay (closing the upstream, returning the slot, journaling an abort) is not the
 * consumer's job: the relay's finalizer is in the request's scope (routing/Relay.ts).
 */
import { Effect, Option, Stream } from "effect"

export interface ChunkSource {
  /** The next chunk, or null once the answer is over. Never fails: a failure becomes the error line. */
  readonly next: Effect.Effect<Uint8Array | null>
}

export const toStream = (source: ChunkSource): Stream.Stream<Uint8Array> =>
  Stream.repeatEffectOption(
    Effect.flatMap(source.next, (chunk) => (chunk === null ? Effect.fail(Option.none()) : Effect.succeed(chunk)))
  )

/** Every chunk to `write` until the end. */
export const drainTo = (source: ChunkSource, write: (chunk: Uint8Array) => Effect.Effect<void>): Effect.Effect<void> => {
  const loop: Effect.Effect<void> = Effect.flatMap(source.next, (chunk) =>
    chunk === null ? Effect.void : Effect.zipRight(write(chunk), loop))
  return loop
}
