/**
 * 0013 — catalog lists that stay index scans at a million works (issue 8 §3; measured by
 * `npm run bench -- db`, checked by test/migrations/plans.test.ts).
 *
 * Two causes made a page of 50 read every row of the publisher (a Bitmap Heap Scan of the
 * publisher's rows, then a sort) instead of reading 51 index entries in order:
 *
 * 1. The scope tests of the catalog policies, `(select app_current_scope()) = 'publisher'`, compare
 *    an InitPlan parameter the planner cannot see with a constant; it gives each such equality the
 *    default selectivity of 0.5 % (PostgreSQL `DEFAULT_EQ_SEL`, src/include/utils/selfuncs.h), so it
 *    expected 5 of the publisher's 1,000 rows to pass and preferred collecting and sorting them.
 *    Written as `(select app_current_scope() = 'publisher')` the InitPlan returns the boolean itself
 *    — the same three-valued result — and a bare boolean parameter is estimated at 50 %
 *    (`clause_selectivity`, src/backend/optimizer/path/clausesel.c), so the ordered scan of
 *    `<table>_publisher_created_idx (publisher_id, created_at, id)` with its LIMIT wins. Every
 *    policy of works, songwriters, recordings and work_songwriters is rewritten so (from the
 *    catalogue, `pg_policies`; the migration fails if one is left), nothing else about them changes.
 * 2. A creator's list (scope `own`) can only use an owner index when the query names the owner at
 *    its top level (the policy's owner test sits inside an OR), which the API now does as a planner
 *    hint (catalog-api/src/modules/catalog/resource.ts; RLS still decides). The owner index
 *    `(publisher_id, owner_user_id)` becomes `(publisher_id, owner_user_id, created_at, id)`, in the
 *    list's keyset order, so the creator's page is 51 index entries too (same partial predicate,
 *    `owner_user_id is not null`; department lists already have 0006's
 *    `(publisher_id, department_id, created_at, id)`).
 *
 * Locks: CREATE INDEX (not CONCURRENTLY: migrations run in one transaction) holds SHARE on each
 * catalog table while it builds — reads go on, writes wait (about a second per million rows) —, and
 * ALTER POLICY takes ACCESS EXCLUSIVE briefly. `down` restores the old indexes and policy texts.
 */
import { Migration } from '@mikro-orm/migrations';

/** The tables whose policies and owner index this migration changes. */
const TABLES = ['works', 'songwriters', 'recordings', 'work_songwriters'] as const;
const OWNED = ['works', 'songwriters', 'recordings'] as const;

/** A reader comparison as `pg_policies` renders it: `( SELECT app_current_scope() AS "nullif") = 'own'::text`. */
const OLD_FORM = String.raw`\(\s*SELECT\s+app_current_scope\(\)(\s+AS\s+"?\w+"?)?\)\s*=\s*('\w+'::text)`;
/** The rewritten form as `pg_policies` renders it: `( SELECT (app_current_scope() = 'own'::text) AS …)`. */
const NEW_FORM = String.raw`\(\s*SELECT\s+\(app_current_scope\(\)\s*=\s*('\w+'::text)\)(\s+AS\s+"?\w+"?)?\)`;

/** A SQL string literal of `s`. */
const literal = (s: string) => `'${s.replace(/'/g, "''")}'`;

/**
 * Rewrite every policy of {@link TABLES}: up = old form → new form, down = back. Fails when a policy
 * still has the form it should not have afterwards.
 */
const rewritePolicies = (up: boolean) => String.raw`
do $rewrite$
declare
  r record;
  q text;
  c text;
  pat text := ${literal(up ? OLD_FORM : NEW_FORM)};
  rep text := ${up ? `'( SELECT (app_current_scope() = \\2))'` : `'(( SELECT app_current_scope()) = \\1)'`};
  left_over text;
begin
  for r in select p.tablename, p.policyname, p.qual, p.with_check from pg_policies p
            where p.schemaname = 'public' and p.tablename in (${TABLES.map((t) => `'${t}'`).join(', ')})
              and (coalesce(p.qual, '') ~* pat or coalesce(p.with_check, '') ~* pat) loop
    q := regexp_replace(r.qual, pat, rep, 'gi');
    c := regexp_replace(r.with_check, pat, rep, 'gi');
    execute format('alter policy %I on public.%I', r.policyname, r.tablename)
      || coalesce(' using (' || q || ')', '') || coalesce(' with check (' || c || ')', '');
  end loop;
  select string_agg(p.tablename || '.' || p.policyname, ', ') into left_over from pg_policies p
   where p.schemaname = 'public' and p.tablename in (${TABLES.map((t) => `'${t}'`).join(', ')})
     and (coalesce(p.qual, '') ~* pat or coalesce(p.with_check, '') ~* pat);
  if left_over is not null then
    raise exception '0013: policies not rewritten: %', left_over;
  end if;
end $rewrite$;`;

/** Policies with estimable scope tests and owner indexes in keyset order; `down` restores 0012's state. */
export class Migration0013CatalogIndexes extends Migration {
  override name = '0013_catalog_indexes';

  /** New owner indexes, old ones dropped, policies rewritten. */
  up(): void {
    for (const t of OWNED) {
      this.addSql(`
create index ${t}_publisher_owner_created_idx on ${t} (publisher_id, owner_user_id, created_at, id) where owner_user_id is not null;
drop index ${t}_publisher_owner_idx;`);
    }
    this.addSql(rewritePolicies(true));
  }

  /** The old owner indexes and policy texts back. */
  override down(): void {
    this.addSql(rewritePolicies(false));
    for (const t of OWNED) {
      this.addSql(`
create index ${t}_publisher_owner_idx on ${t} (publisher_id, owner_user_id) where owner_user_id is not null;
drop index ${t}_publisher_owner_created_idx;`);
    }
  }
}
