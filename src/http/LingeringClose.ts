/**
 * Lingering close (nginx's `lingering_close`) for a request whose body the gateway refused (413, or
 * 503 past the in-flight limits) while the caller is still sending it.
 *
 * Node ends a `Connection: close` socket as soon as the answer is written (`destroySoon`). With the
 * caller's bytes still arriving, that close answers them with a reset: the caller's next write
 * fails (EPIPE, ECONNRESET), and a client that stops at a failed write may never read the answer
 * that was sent before it (the fault matrix's hoarders saw this under load: fewer 503s than refusals).
 * Here the answer is followed by a FIN, and what the caller still sends is read and dropped (never
 * buffered: the in-flight limits stay true) until it ends its side or `lingerMs` passed.
 */
import type { IncomingMessage } from "node:http"
import type { Socket } from "node:net"

/** The longest a refused caller's remaining body is read (and dropped) after the answer. */
const lingerMs = 2_000

const drop = () => {}

/** Call when the body is refused before its end: the answer is sent as usual, the socket closes gently. */
export const lingerAfterAnswer = (req: IncomingMessage): void => {
  const socket = req.socket
  if (socket.destroyed) return
  req.on("data", drop)
  req.resume()
  // Replaces, for this socket only, what node:http calls once a `Connection: close` answer is written.
  socket.destroySoon = function(this: Socket) {
    const close = () => this.destroy()
    // At the latest: a caller that neither stops sending nor reads its answer is cut off.
    const timer = setTimeout(close, lingerMs)
    this.once("close", () => clearTimeout(timer))
    // Once the answer is flushed, the caller's end of its side (or the timer) closes the socket.
    const flushed = () => (this.readableEnded ? close() : void this.once("end", close))
    this.end()
    if (this.writableFinished) flushed()
    else this.once("finish", flushed)
  }
}
