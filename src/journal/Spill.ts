/**
 * The journal's spill: when Postgres cannot take a batch, the batch goes to local append-only
 * segment files (JSON lines, fsync'd per batch) instead of being dropped or blocking the request
 * path. The journal's replayer replays segments into Postgres, oldest first, once it accepts writes
 * again; the (stream_id, stream_position) uniqueness makes a replayed batch idempotent, so a crash
 * mid-replay only means some rows are offered twice.
 *
 * A batch is in the spill whole or not at all: `append` writes until every byte is down (a short
 * write is continued), fsyncs, and on any failure (a full disk, say) cuts the segment back to where
 * it was, so the caller keeps the batch and can try again elsewhere. Only a process killed mid-write
 * can leave a torn last line; `read` reports it (and any other line that is not a row).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { EventKey } from "./EventRow.ts"

export interface SpilledRow extends EventKey {
  readonly data: string
  readonly occurredAt: string
}

/** A segment's rows, and the lines in it that are not rows (torn by a crash mid-write). */
export interface SegmentRows {
  readonly rows: Array<SpilledRow>
  readonly torn: Array<{ readonly line: number; readonly bytes: number; readonly last: boolean }>
}

/** The file operations the spill needs; a test can make them fail or write short. */
export interface SpillFs {
  readonly writeSync: (fd: number, buffer: Uint8Array, offset: number, length: number) => number
  readonly fsyncSync: (fd: number) => void
  readonly ftruncateSync: (fd: number, length: number) => void
}

const nodeFs: SpillFs = {
  writeSync: (fd, buffer, offset, length) => fs.writeSync(fd, buffer, offset, length),
  fsyncSync: (fd) => fs.fsyncSync(fd),
  ftruncateSync: (fd, length) => fs.ftruncateSync(fd, length)
}

const SEGMENT_PREFIX = "journal-spill-"
const MAX_SEGMENT_BYTES = 8 * 1024 * 1024

const isRow = (v: unknown): v is SpilledRow => {
  const r = v as Partial<SpilledRow> | null
  return typeof r === "object" && r !== null && typeof r.streamId === "string" && typeof r.streamPosition === "number" &&
    typeof r.type === "string" && typeof r.data === "string" && typeof r.occurredAt === "string"
}

export class Spill {
  private current: { name: string; fd: number; bytes: number } | null = null
  private seq = 0

  constructor(readonly dir: string, private readonly io: SpillFs = nodeFs) {
    fs.mkdirSync(dir, { recursive: true })
    for (const name of this.segments()) {
      const n = Number(name.slice(SEGMENT_PREFIX.length, -".jsonl".length))
      if (Number.isFinite(n) && n >= this.seq) this.seq = n + 1
    }
  }

  /** Segment file names, oldest first. */
  segments(): Array<string> {
    let names: Array<string>
    try {
      names = fs.readdirSync(this.dir)
    } catch (error) {
      // No folder (removed, or a file in its place): no segment to replay; writing one will fail.
      const code = (error as { code?: unknown }).code
      if (code === "ENOENT" || code === "ENOTDIR") return []
      throw error
    }
    return names.filter((f) => f.startsWith(SEGMENT_PREFIX) && f.endsWith(".jsonl")).sort()
  }

  get pending(): boolean {
    return this.segments().length > 0
  }

  /**
   * Appends rows and fsyncs before returning: once this returns, a SIGKILL cannot lose them. Throws
   * when the disk does not take them all; the segment is then as it was before the call.
   */
  append(rows: ReadonlyArray<SpilledRow>): void {
    if (rows.length === 0) return
    if (this.current === null || this.current.bytes > MAX_SEGMENT_BYTES) this.rotate()
    const cur = this.current!
    const buffer = Buffer.from(rows.map((r) => JSON.stringify(r)).join("\n") + "\n", "utf8")
    try {
      let offset = 0
      while (offset < buffer.length) {
        const n = this.io.writeSync(cur.fd, buffer, offset, buffer.length - offset)
        if (n <= 0) throw new Error(`the spill write made no progress (${offset} of ${buffer.length} bytes written)`)
        offset += n
      }
      this.io.fsyncSync(cur.fd)
    } catch (error) {
      // Cut the partial batch off again: the segment stays whole lines (if even this fails, `read`
      // reports the torn tail at replay).
      try {
        this.io.ftruncateSync(cur.fd, cur.bytes)
      } catch {
        this.seal()
      }
      throw error
    }
    cur.bytes += buffer.length
  }

  /** Closes the segment being written, so it can be replayed. */
  seal(): void {
    if (this.current === null) return
    fs.closeSync(this.current.fd)
    this.current = null
  }

  /** The rows of one segment, and the lines that are not rows (a torn tail), by line number. */
  read(name: string): SegmentRows {
    const text = fs.readFileSync(path.join(this.dir, name), "utf8")
    const rows: Array<SpilledRow> = []
    const torn: Array<{ line: number; bytes: number; last: boolean }> = []
    const lines = text.split("\n")
    // A file that ends in "\n" has an empty last element; one that does not ends in a torn line.
    lines.forEach((line, i) => {
      if (line === "" && i === lines.length - 1) return
      let parsed: unknown
      try {
        parsed = JSON.parse(line)
      } catch {
        parsed = undefined
      }
      if (isRow(parsed)) rows.push(parsed)
      else torn.push({ line: i + 1, bytes: Buffer.byteLength(line), last: i >= lines.length - 2 })
    })
    return { rows, torn }
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
