/** In each test worker: the template database globalSetup.ts made, for TestDatabase.ts and FaultKit.ts. */
import { afterAll, inject } from "vitest"

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
