/**
 * Once per `vitest run`, before any test file: a migrated template database that every test
 * database is copied from (TestDatabase.ts), dropped again at the end. Its name reaches the workers
 * through `provide` (test/support/setup.ts puts it in `TEST_DATABASE_TEMPLATE`).
 */
import type { TestProject } from "vitest/node"
import { createTemplateDatabase } from "./TestDatabase.ts"

declare module "vitest" {
  export interface ProvidedContext {
    readonly testDatabaseTemplate: string
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const template = await createTemplateDatabase()
  project.provide("testDatabaseTemplate", template.name)
  return template.drop
}
