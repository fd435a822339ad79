/** In each test worker: the template database globalSetup.ts made, for TestDatabase.ts and FaultKit.ts. */
import { makeMethods } from "@effect/vitest"
import { afterAll, inject, it } from "vitest"

process.env.TEST_DATABASE_TEMPLATE = inject("testDatabaseTemplate")

// A worker process runs many files one after another (`isolate: false`, vitest.config.ts): each
// file gets back the environment it started with, as in a process of its own (several set keys or
// AWOOOP_ADMIN_TOKEN at import, which gateways they spawn would inherit). This hook is registered
// before the file's own, so it runs after them (hooks run in stack order).
const environment = { ...process.env }
afterAll(() => {
  for (const key of Object.keys(process.env)) if (!(key in environment)) delete process.env[key]
  Object.assign(process.env, environment)
})

// @effect/vitest's `layer(...)` installs its own `effect`, `scoped`, `prop`, `flakyTest` and `layer`
// on vitest's one `it` object (Object.assign; @effect/vitest 0.30), which is also the `it` that
// @effect/vitest exports: after a file with a `layer` block, another file's top-level `it.effect`
// ran on that block's (closed) runtime, without the TestClock. Each file starts from the defaults.
makeMethods(it as unknown as Parameters<typeof makeMethods>[0])

