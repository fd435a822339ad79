/** Types of scripts/code-shape.mjs for the tests that import it. */
export interface Unit {
  readonly file: string
  readonly line: number
  readonly name: string
  readonly lines: number
  readonly depth: number
}
export declare const shapesOf: (file: string, text: string) => Array<Unit>
export declare const offenders: (dirs: ReadonlyArray<string>, limits?: { readonly maxLines: number; readonly maxDepth: number }) => Array<Unit>
