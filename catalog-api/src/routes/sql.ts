/**
 * Small SQL builders for the catalog repositories (column names are always literals from the code,
 * values always bind parameters).
 */

/**
 * Build `col1 = $n, col2 = $n+1 …` for the defined entries of `values`.
 * @param values   column → value; `undefined` entries are skipped (PATCH semantics), `null` is kept
 * @param firstIndex the number of the first placeholder
 * @returns the SET list (without the keyword) and its parameters, in order
 */
export function setList(values: Record<string, unknown>, firstIndex: number): { sql: string; params: unknown[] } {
  const parts: string[] = [];
  const params: unknown[] = [];
  for (const [column, value] of Object.entries(values)) {
    if (value === undefined) continue;
    if (!/^[a-z_]+$/.test(column)) throw new Error(`setList: bad column name ${column}`);
    params.push(value);
    parts.push(`${column} = $${firstIndex + params.length - 1}`);
  }
  return { sql: parts.join(', '), params };
}
