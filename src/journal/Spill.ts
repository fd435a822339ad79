/**
 * The journal's spill: when Postgres cannot take a batch, the batch goes to local append-only
 * segment files (JSON lines, fsync'd per batch) instead of being dropped or blocking the request
 * path. The writer replays segments into Postgres, oldest first, once it accepts writes again; the
 * (stream_id, stream_position) uniqueness makes a replayed batch idempotent, so a crash mid-replay
 * only means some rows are offered twice.
 */
import * as fs from "node:fs"
import * as path from "node:path"

export interface SpilledRow {
  readonly streamId: string
  readonly streamPosition: number
  readonly traceId: string | null
  readonly projectId: string | null
  readonly lane: string | null
  readonly type: string
  readonly data: string
  readonly occurredAt: string
}

const SEGMENT_PREFIX = "journal-spill-"
const MAX_SEGMENT_BYTES = 8 * 1024 * 1024

export class Spill {
  private current: { name: string; fd: number; bytes: number } | null = null
  private seq = 0

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true })
    for (const name of this.segments()) {
      const n = Number(name.slice(SEGMENT_PREFIX.length, -".jsonl".length))
      if (Number.isFinite(n) && n >= this.seq) this.seq = n + 1
    }
  }

  /** Segment file names, oldest first. */
  segments(): Array<string> {
    return fs.readdirSync(this.dir).filter((f) => f.startsWith(SEGMENT_PREFIX) && f.endsWith(".jsonl")).sort()
  }

  get pending(): boolean {
    return this.segments().length > 0
  }

  /** Appends rows and fsyncs before returning: once this returns, a SIGKILL cannot lose them. */
  append(rows: ReadonlyArray<SpilledRow>): void {
    if (rows.length === 0) return
    if (this.current === null || this.current.bytes > MAX_SEGMENT_BYTES) this.rotate()
    const text = rows.map((r) => JSON.stringify(r)).join("\n") + "\n"
    const cur = this.current!
    fs.writeSync(cur.fd, text)
    fs.fsyncSync(cur.fd)
    cur.bytes += Buffer.byteLength(text)
  }

  /** Closes the segment being written, so it can be replayed. */
  seal(): void {
    if (this.current === null) return
    fs.closeSync(this.current.fd)
    this.current = null
  }

  /** The rows of one segment; a torn last line (a crash mid-write) is skipped. */
  read(name: string): Array<SpilledRow> {
    const text = fs.readFileSync(path.join(this.dir, name), "utf8")
    const rows: Array<SpilledRow> = []
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue
      try {
        rows.push(JSON.parse(line) as SpilledRow)
      } catch {
        // Only the last line can be torn: fsync happens per whole batch.
      }
    }
    return rows
  }

  remove(name: string): void {
    if (this.current?.name === name) this.seal()
    fs.rmSync(path.join(this.dir, name), { force: true })
  }

  private rotate(): void {
    this.seal()
    const name = `${SEGMENT_PREFIX}${String(this.seq++).padStart(10, "0")}.jsonl`
    const fd = fs.openSync(path.join(this.dir, name), "a")
    this.current = { name, fd, bytes: 0 }
  }
}
