/**
 * Turn what an admin types for a user (`user:<uuid>`, a bare uuid, or an email) into the OpenFGA
 * user `user:<uuid>`, for the explain / what-can commands of the policies CLI.
 *
 * An email is looked up in the catalog database as the schema owner (DATABASE_OWNER_URL), read
 * only: `select id from users where lower(email) = lower($1)` in a transaction whose
 * `app.access_scope` is `platform` — the row-level security scope of a system admin's user
 * administration (migrations/0006_administration.ts, policy users_select), since FORCE RLS applies
 * to the owner too.
 */
import pg from 'pg';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The id of the (not deleted) user with this email, case-insensitively.
 * @param databaseUrl a PostgreSQL URL of the schema owner (DATABASE_OWNER_URL).
 * @throws Error when no user has the email (directory users exist only after their first sign-in),
 *   or pg's error when the database is unreachable.
 */
export async function userIdByEmail(databaseUrl: string, email: string): Promise<string> {
  const client = new pg.Client({ connectionString: databaseUrl, statement_timeout: 5000 });
  await client.connect();
  try {
    await client.query('begin read only');
    await client.query("select set_config('app.access_scope', 'platform', true)");
    const res = await client.query<{ id: string }>('select id from users where lower(email) = lower($1) and deleted_at is null', [email]);
    await client.query('commit');
    const id = res.rows[0]?.id;
    if (!id) throw new Error(`no user with email ${email} (a directory user exists after its first sign-in)`);
    return id;
  } finally {
    await client.end();
  }
}

/**
 * `user:<uuid>` from `user:<id>` (kept as is), a bare uuid, or an email (looked up with
 * {@link userIdByEmail} in `databaseUrl`).
 * @throws Error when the text is none of these, or as {@link userIdByEmail}.
 */
export async function resolveUser(text: string, databaseUrl: string): Promise<string> {
  if (/^[^:#\s]+:[^#\s]+$/.test(text) && !text.includes('@')) return text;
  if (UUID_RE.test(text)) return `user:${text.toLowerCase()}`;
  if (/^[^@\s]+@[^@\s]+$/.test(text)) return `user:${await userIdByEmail(databaseUrl, text)}`;
  throw new Error(`user must be user:<uuid>, a uuid or an email, got "${text}"`);
}
