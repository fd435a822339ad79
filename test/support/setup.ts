/** In each test worker: the template database globalSetup.ts made, for TestDatabase.ts and FaultKit.ts. */
import { inject } from "vitest"

process.env.TEST_DATABASE_TEMPLATE = inject("testDatabaseTemplate")
