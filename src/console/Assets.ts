/**
 * The console's static files, all served by the gateway itself (no CDN, nothing fetched at run
 * time): our own script and styles from src/console/assets/, and uPlot straight from its npm
 * package in node_modules, so a fresh `npm ci` is all the console needs. Read once at start-up,
 * served from memory with an ETag.
 */
import { HttpServerResponse } from "@effect/platform"
import { createHash } from "node:crypto"
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { securityHeaders } from "./Html.ts"

interface Asset {
  readonly body: Uint8Array
  readonly type: string
  readonly etag: string
}

/**
 * Our own files, next to this module (scripts/build.mjs copies them into dist/console/assets); from
 * the bundled dist/main.js, this module's URL is the bundle's, so they are in console/assets beside it.
 */
const ownDir = (): string => {
  const here = dirname(fileURLToPath(import.meta.url))
  const beside = join(here, "assets")
  return existsSync(beside) ? beside : join(here, "console", "assets")
}

const uplotDir = () => dirname(createRequire(import.meta.url).resolve("uplot/package.json"))

const types: Record<string, string> = {
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml"
}

export const loadAssets = (): ReadonlyMap<string, Asset> => {
  const files: Array<readonly [string, string]> = [
    ["console.js", join(ownDir(), "console.js")],
    ["theme.js", join(ownDir(), "theme.js")],
    ["console.css", join(ownDir(), "console.css")],
    ["favicon.svg", join(ownDir(), "favicon.svg")],
    ["uPlot.iife.min.js", join(uplotDir(), "dist", "uPlot.iife.min.js")],
    ["uPlot.min.css", join(uplotDir(), "dist", "uPlot.min.css")]
  ]
  const out = new Map<string, Asset>()
  for (const [name, path] of files) {
    const body = new Uint8Array(readFileSync(path))
    out.set(name, {
      body,
      type: types[name.split(".").pop()!]!,
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`
    })
  }
  return out
}

export const assetResponse = (asset: Asset, ifNoneMatch: string | undefined) =>
  ifNoneMatch === asset.etag
    ? HttpServerResponse.empty({ status: 304, headers: { etag: asset.etag } })
    : HttpServerResponse.uint8Array(asset.body, {
      contentType: asset.type,
      headers: { ...securityHeaders, "cache-control": "no-cache", etag: asset.etag }
    })
