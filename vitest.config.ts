import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  // The package's own exports (`awooop-inference-gateway/client`) resolve to src/ in tests, to dist/ elsewhere.
  // (Only that condition is added: Vite's "module" would pick ESM builds Node cannot load, e.g. @opentelemetry/api's.)
  ssr: { resolve: { conditions: ["source", "node", "development|production"] } },
  test: {
    include: ["test/**/*.test.ts"],
    // The fault matrix has its own command (`npm run test:faults`, vitest.faults.config.ts).
    exclude: [...configDefaults.exclude, "test/faults/**"],
    setupFiles: ["test/support/setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two files at a time on a 2-core machine: most suites wait on sockets, Postgres and child
    // processes, not the CPU. Each test makes its own random database, so neighbours don't collide.
    // The slowest files (Chromium, the spawned gateways) start first (vitest orders by last duration).
    // More workers are faster (session 8, idle: 2 → 94-96 s, 3 → 73-79 s, 4 → 64-75 s) but not yet
    // safe: the in-process gateways' 300 ms step windows and poll waits then fail now and then (4
    // workers: 2 runs of 11; 3 workers: a 503 for a 504 in messages.e2e in a clean-clone CI run),
    // because a neighbour stalls the worker's event loop. Those tests need TestClock first. On a
    // slower machine of the same kind (session 9) the suite is CPU-bound (cores 79% busy with two
    // workers: spawned gateways, Chromium, Postgres), and three workers were no faster (131-144 s
    // against 134-145 s with two; session 10, with less CPU per run: 111 s once against 116-128 s;
    // session 11: 117.7 s with the cores 93% busy, against 115-120 s): see BENCHMARKS.md for where
    // the CPU goes. (Vitest runs a file that failed last time first: a flake reorders the next
    // run.) With more workers, set minWorkers = maxWorkers: fewer made tinypool end a worker vitest
    // still held ("Terminating worker thread" after every test passed, vitest #8564).
    maxWorkers: 2,
    minWorkers: 1,
    // Worker processes are reused from file to file, and the modules they loaded with them: effect,
    // @effect/platform, sql, cluster… and src/ are loaded once per worker instead of once per file.
    // Measured on this 2-core machine (shared with another suite, load average 3-5), full runs back
    // to back: with `--isolate` (a process per file) 232 s wall, 249 + 69 s user+sys, collect 104 s;
    // with this 143 s and 159 s wall, 124 + 29 s and 127 + 30 s, collect 12-15 s. (An earlier note
    // here said it saved no CPU: that A/B set `isolate: false` on a project only, which the forks
    // pool ignores.)
    // What a file leaves in the process is then seen by the next one, so test/support/setup.ts gives
    // each file back the environment it started with and @effect/vitest's default `it.effect` /
    // `it.scoped` (a `layer(...)` block replaces them on vitest's shared `it`: the TestClock suites
    // then found a live Clock, which is why they once ran in an isolated project of their own), and
    // each journal without settings spills to a folder of its own (src/journal/JournalConfig.ts).
    isolate: false,
    // One migrated template database per run; every test database is a copy of it (TestDatabase.ts).
    globalSetup: ["test/support/globalSetup.ts"]
  }
})
