/**
 * Small SQL builders for the catalog repositories (column names are always literals from the code,
 * values always bind parameters).
 */

function checkColumn(fn: string, column: string): void {
  if (!/^[a-z_]+$/.test(column)) throw new Error(`${fn}: bad column name ${column}`);
}

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
    checkColumn('setList', column);
    params.push(value);
    parts.push(`${column} = $${firstIndex + params.length - 1}`);
  }
  return { sql: parts.join(', '), params };
}

/**
 * Build the column list and `$1, $2 …` placeholders of an INSERT for every entry of `values`.
 * @param values column → value; `undefined` is stored as `null`
 * @returns the column list, the VALUES list (both without parentheses) and the parameters, in order
 */
export function insertList(values: Record<string, unknown>): { columns: string; placeholders: string; params: unknown[] } {
  const columns = Object.keys(values);
  columns.forEach((column) => checkColumn('insertList', column));
  return {
    columns: columns.join(', '),
    placeholders: columns.map((_, i) => `$${i + 1}`).join(', '),
    params: Object.values(values).map((v) => v ?? null),
  };
}
