/** Types of scripts/import-cycles.mjs for the tests that import it. */
export declare const importCycles: (folder: string) => Array<Array<string>>
