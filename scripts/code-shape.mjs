#!/usr/bin/env node
/**
 * Lists the functions in src/ that are too long or too deep to read at once (the team's guide: at
 * most ~60 lines and 5 levels).
 *
 *   node scripts/code-shape.mjs [dir|file ...] one line per offender (default dir: src)
 *   node scripts/code-shape.mjs --json [dir]   the same as JSON: [{ file, line, name, lines, depth }]
 *   --max-lines N / --max-depth N              other limits (defaults 60 and 5)
 *
 * What a "function" is: every function declaration, method, constructor, accessor, and every arrow
 * or function expression that is named — assigned to a variable, a property or a class field. An
 * anonymous function passed as an argument (an `Effect.gen(function*() {…})` body, a `.map((x) =>
 * {…})` callback) is part of the function around it: its lines and its blocks count there. An
 * anonymous function outside any named one (a module-level `Effect.gen`) is a unit of its own.
 *
 * Lines: from the function's first line to its last, minus the lines of the named functions
 * defined inside it (those are reported on their own).
 *
 * Depth: the function's body is level 1; every `{ … }` block inside it (an if/else branch, a loop
 * body, a try/catch, the body of an inline callback) and every `case`/`default` clause adds one
 * level. A brace-less branch, a ternary or an object literal adds none. An arrow with an
 * expression body is level 1. So `(x) => Effect.gen(function*() { for (…) { if (…) { … } } })` is
 * depth 4.
 */
import { readdirSync, readFileSync, statSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import ts from "typescript"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")

const isFunction = (node) =>
  ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node) || ts.isConstructorDeclaration(node) ||
  ts.isGetAccessorDeclaration(node) || ts.isSetAccessorDeclaration(node) || ts.isArrowFunction(node) ||
  ts.isFunctionExpression(node)

/** The name a function is known by, or null for an anonymous inline one. */
const nameOf = (node) => {
  if (ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node) || ts.isGetAccessorDeclaration(node) || ts.isSetAccessorDeclaration(node)) {
    return node.name?.getText() ?? "default"
  }
  if (ts.isConstructorDeclaration(node)) return "constructor"
  const parent = node.parent
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) {
    return parent.name.getText()
  }
  if (ts.isFunctionExpression(node) && node.name !== undefined) return node.name.getText()
  return null
}

const isLevel = (node) => ts.isBlock(node) || ts.isCaseClause(node) || ts.isDefaultClause(node)

/** Every unit (named function, or anonymous one outside any) of one file, with its lines and depth. */
export const shapesOf = (file, text) => {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS)
  const lineOf = (pos) => source.getLineAndCharacterOfPosition(pos).line
  const units = []
  /** Walks `node` inside `unit` at block level `level`; a named function found starts a unit. */
  const walk = (node, unit, level) => {
    if (isFunction(node)) {
      const name = nameOf(node)
      if (name !== null || unit === null) {
        const own = { file, line: lineOf(node.getStart(source)) + 1, name: name ?? "(anonymous)", span: 0, nested: 0, depth: 1 }
        own.span = lineOf(node.getEnd()) - lineOf(node.getStart(source)) + 1
        if (unit !== null) unit.nested += own.span
        units.push(own)
        if (node.body !== undefined) walkBody(node.body, own, 1)
        return
      }
      // An inline callback: its body is one more level of the function around it.
      if (node.body !== undefined) walkBody(node.body, unit, level + 1)
      return
    }
    const next = isLevel(node) && unit !== null ? level + 1 : level
    if (unit !== null && next > unit.depth) unit.depth = next
    ts.forEachChild(node, (child) => walk(child, unit, next))
  }
  /** A function body: the block itself is `level`, its statements are inside it. */
  const walkBody = (body, unit, level) => {
    if (level > unit.depth) unit.depth = level
    ts.forEachChild(body, (child) => walk(child, unit, level))
  }
  ts.forEachChild(source, (child) => walk(child, null, 0))
  return units.map(({ file, line, name, span, nested, depth }) => ({ file, line, name, lines: span - nested, depth }))
}

const filesUnder = (dir) =>
  // A file named on its own (src/main.ts) is measured as it is.
  statSync(dir).isFile() ? [dir] : readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return filesUnder(path)
    return path.endsWith(".ts") && !path.endsWith(".d.ts") ? [path] : []
  })

/** The units of every .ts file under `dirs` (relative to the repository) over the limits. */
export const offenders = (dirs, limits = { maxLines: 60, maxDepth: 5 }) =>
  dirs.flatMap((dir) => filesUnder(join(root, dir))).flatMap((path) =>
    shapesOf(relative(root, path), readFileSync(path, "utf8")).filter((u) => u.lines > limits.maxLines || u.depth > limits.maxDepth)
  )

const main = () => {
  const args = process.argv.slice(2)
  const json = args.includes("--json")
  const limit = (flag, fallback) => {
    const i = args.indexOf(flag)
    return i < 0 ? fallback : Number(args[i + 1])
  }
  const limits = { maxLines: limit("--max-lines", 60), maxDepth: limit("--max-depth", 5) }
  const values = new Set([String(limits.maxLines), String(limits.maxDepth)])
  const dirs = args.filter((a, i) => !a.startsWith("--") && !(values.has(a) && args[i - 1]?.startsWith("--max-")))
  const found = offenders(dirs.length > 0 ? dirs : ["src"], limits)
  if (json) {
    process.stdout.write(JSON.stringify(found, null, 2) + "\n")
    return
  }
  for (const u of found) console.log(`${u.file}:${u.line} ${u.name}: ${u.lines} lines, depth ${u.depth}`)
  console.log(`${found.length} function(s) over ${limits.maxLines} lines or ${limits.maxDepth} levels`)
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main()
