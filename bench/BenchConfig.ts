/** The gateway config every gateway benchmark runs: two hosts on the same fake, one lane with a reservation. */
export const gatewayBenchConfig = (fakeUrl: string): string => `
hosts:
  gcp-a: { url: "${fakeUrl}", slots: 64, protected: true }
  gcp-b: { url: "${fakeUrl}", slots: 64, protected: true }
lanes:
  alert-fast:
    model: gemma3:4b
    reserved: { gcp-a: 32 }
    route: [ { host: gcp-a, timeout: "45s" }, { host: gcp-b, timeout: "45s" } ]
    queue: { capacity: 1024 }
server: { pollInterval: "60s" }
`
