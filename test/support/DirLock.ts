/**
 * A lock between test workers (separate processes): a directory made with `mkdir`, which only one
 * of them can create. A lock left by a killed run is taken over once it is older than `staleMs`.
 *
 *   await withDirLock(path.join(os.tmpdir(), "awooop-x.lock"), 300_000, () => buildOnce())
 */
import * as fs from "node:fs"

const take = async (lockDir: string, staleMs: number): Promise<void> => {
  for (;;) {
    try {
      fs.mkdirSync(lockDir)
      return
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
    }
    const age = Date.now() - (fs.statSync(lockDir, { throwIfNoEntry: false })?.mtimeMs ?? Date.now())
    if (age > staleMs) fs.rmSync(lockDir, { recursive: true, force: true })
    else await new Promise((r) => setTimeout(r, 100))
  }
}

/** Runs `f` holding the lock at `lockDir`; releases it however `f` ends. */
export const withDirLock = async <A>(lockDir: string, staleMs: number, f: () => Promise<A>): Promise<A> => {
  await take(lockDir, staleMs)
  try {
    return await f()
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true })
  }
}
