import { describe, expect, it } from "@effect/vitest"
import { canonicalModel, sameModel } from "../src/domain/OllamaApi.ts"

// The one model-name rule (routing, keep-warm, health, the console all compare through it).
describe("sameModel: Ollama's naming rule", () => {
  it("an untagged name is <name>:latest", () => {
    expect(sameModel("bge-m3", "bge-m3:latest")).toBe(true)
    expect(sameModel("gemma3:4b", "gemma3:4b")).toBe(true)
    expect(sameModel("gemma3", "gemma3:4b")).toBe(false)
  })

  it("a registry's port is not a tag: only a colon after the last slash is", () => {
    expect(canonicalModel("registry.example:5000/library/gemma3")).toBe("registry.example:5000/library/gemma3:latest")
    expect(sameModel("registry.example:5000/library/gemma3", "registry.example:5000/library/gemma3:latest")).toBe(true)
    expect(sameModel("registry.example:5000/library/gemma3:4b", "registry.example:5000/library/gemma3")).toBe(false)
  })
})
