/** `npm run bench`: every benchmark, one after another, printed as markdown for BENCHMARKS.md. */
import { benchReplicas } from "./cluster.ts"
import { benchFloor } from "./floor.ts"
import { benchGateway } from "./gateway.ts"
import { benchProjector } from "./projector.ts"

const sections: Array<[string, () => Promise<string>]> = [
  ["Gateway overhead (issue 2)", benchGateway],
  ["The architecture's floor: Effect, journal, projector (issue 14)", () => benchFloor()],
  ["Projector, rebuild and explain on a million-event journal (issue 3)", benchProjector],
  ["Replicas: one vs three of one cluster (issue 13)", benchReplicas]
]

const only = process.argv[2]
for (const [title, run] of sections) {
  if (only !== undefined && !title.toLowerCase().includes(only.toLowerCase())) continue
  console.log(`## ${title}\n`)
  console.log(await run())
  console.log("")
}
