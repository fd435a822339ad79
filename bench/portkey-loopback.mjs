/**
 * Preloaded into Portkey's gateway for the benchmark (`node --import ./bench/portkey-loopback.mjs`):
 * its server (`@hono/node-server`'s serve({ port })) passes no hostname, so it would listen on every
 * interface; this binds a listen without a host to 127.0.0.1. Bench-only, not part of the product.
 */
import net from "node:net"

const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && typeof args[1] !== "string") args.splice(1, args[1] === undefined ? 1 : 0, "127.0.0.1")
  else if (typeof args[0] === "object" && args[0] !== null && args[0].host === undefined && args[0].path === undefined) args[0] = { ...args[0], host: "127.0.0.1" }
  return listen.apply(this, args)
}
