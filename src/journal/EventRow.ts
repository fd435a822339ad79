/**
 * Where a journal event stands and what it is, the columns every form of an event row shares: the
 * row the writer inserts, a spilled line, a row read back, an event the projections fold.
 */
export interface EventKey {
  readonly streamId: string
  readonly streamPosition: number
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly type: string
}
