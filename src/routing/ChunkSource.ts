/**
 * A relayed answer's chunks, pulled one at a time. The lane's Ollama relay is one of these rather
 * than an Effect Stream: running a Stream costs ~100 µs of fixed work per request (channel
 * machinery, measured in BENCHMARKS.md) where a pull costs one Effect per chunk. Consumers that
 * want a Stream (the OpenAI translation, async runs) take `toStream`.
 */
import { Effect, Exit, Option, Stream } from "effect"

export interface ChunkSource {
  /** The next chunk, or null once the answer is over. Never fails: a failure becomes the error line. */
  readonly next: Effect.Effect<Uint8Array | null>
  /**
   * Ends the relay: journals an abort (`interrupted`: the caller went away before the end), closes
   * the upstream, returns the slot. Acts once, however many paths call it.
   */
  readonly close: (interrupted: boolean) => Effect.Effect<void>
}

export const toStream = (source: ChunkSource): Stream.Stream<Uint8Array> =>
  Stream.repeatEffectOption(
    Effect.flatMap(source.next, (chunk) => (chunk === null ? Effect.fail(Option.none()) : Effect.succeed(chunk)))
  ).pipe(Stream.ensuringWith((exit) => source.close(Exit.isInterrupted(exit))))

/**
 * Every chunk to `write` until the end, then closes the source; an interruption (the caller went
 * away) closes it as an abort.
 */
export const drainTo = (source: ChunkSource, write: (chunk: Uint8Array) => Effect.Effect<void>): Effect.Effect<void> => {
  const loop: Effect.Effect<void> = Effect.flatMap(source.next, (chunk) =>
    chunk === null ? Effect.void : Effect.zipRight(write(chunk), loop))
  return Effect.onExit(loop, (exit) => source.close(Exit.isInterrupted(exit)))
}
