/** `npm run bench`: every benchmark, one after another, printed as markdown for BENCHMARKS.md. */
import { benchGateway } from "./gateway.ts"

const sections: Array<[string, () => Promise<string>]> = [["Gateway overhead (issue 2)", benchGateway]]

for (const [title, run] of sections) {
  console.log(`## ${title}\n`)
  console.log(await run())
  console.log("")
}
