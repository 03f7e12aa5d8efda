/**
 * 0010 — metering (docs/CONTRACTS.md, "Metering"): the SECURITY DEFINER functions through which the
 * catalog API's roll-up (catalog-api/src/modules/metering) reads every publisher's API-call limit
 * and writes `account_usage` / `api_client_usage` (migration 0007; `catalog_app` has only SELECT
 * there, under usage:read). Executable by `catalog_app` only; owned by `catalog_owner`, whose
 * owner policies on the usage tables (0007) let them write.
 *
 * - `metering_publishers()`: every account's publisher with its plan's monthly API-call limit (null
 *   = unlimited) and `over_limit` — what the roll-up publishes to the sidecars.
 * - `metering_set_api_calls(p, day, calls, client_ids, client_calls)`: the day's totals as Redis
 *   holds them. A SET, not an add — so a retried or concurrent roll-up never double counts — that
 *   only ever raises a value (Redis counts only grow; a stale reader cannot lower one). Unknown API
 *   client ids are skipped.
 * - `metering_record_measurements(p, day, seats_used)`: measures the publisher's catalog storage
 *   and writes it with the seats used into the day's row; returns the bytes. Storage = the sum of
 *   `pg_column_size` of every row (soft-deleted ones too: they are stored until purged) of `works`,
 *   `songwriters`, `recordings` and `work_songwriters` of the publisher — the row data as PostgreSQL
 *   stores it (after compression), without indexes and tuple headers. FORCE RLS applies to the
 *   owner too, so the function reads them under the publisher's own context (`app.publisher_id`,
 *   scope `publisher`) and puts the caller's settings back before it returns (a function SET clause
 *   cannot name the `app.*` placeholders without superuser rights).
 */
import { Migration } from '@mikro-orm/migrations';

const DEFINER = 'security definer set search_path = public, pg_temp';

/** The metering functions and their grants. */
export class Migration0010Metering extends Migration {
  override name = '0010_metering';

  /** Create the three functions; EXECUTE for catalog_app only. */
  up(): void {
    this.addSql(`
create function metering_publishers() returns table (publisher_id uuid, api_calls_per_month bigint, over_limit text)
language sql stable ${DEFINER} as $$
  select a.publisher_id, pl.api_calls_per_month, pl.over_limit
    from accounts a join plans pl on pl.id = a.plan_type
   order by a.publisher_id
$$;

create function metering_set_api_calls(p uuid, d date, calls bigint, client_ids uuid[], client_calls bigint[]) returns void
language plpgsql volatile ${DEFINER} as $$
begin
  if coalesce(array_length(client_ids, 1), 0) <> coalesce(array_length(client_calls, 1), 0) then
    raise exception 'metering_set_api_calls: % client ids but % counts', array_length(client_ids, 1), array_length(client_calls, 1)
      using errcode = '22023';
  end if;
  insert into account_usage as u (publisher_id, day, api_calls) values (p, d, calls)
    on conflict (publisher_id, day) do update set api_calls = excluded.api_calls, updated_at = now()
    where u.api_calls < excluded.api_calls;
  for i in 1 .. coalesce(array_length(client_ids, 1), 0) loop
    begin
      insert into api_client_usage as c (publisher_id, client_id, day, api_calls) values (p, client_ids[i], d, client_calls[i])
        on conflict (publisher_id, client_id, day) do update set api_calls = excluded.api_calls, updated_at = now()
        where c.api_calls < excluded.api_calls;
    exception when foreign_key_violation then
      null; -- a client id that names no user (never issued by us): nothing to record
    end;
  end loop;
end $$;

create function metering_record_measurements(p uuid, d date, seats_used integer) returns bigint
language plpgsql volatile ${DEFINER} as $$
declare
  bytes bigint;
  caller_publisher text := coalesce(current_setting('app.publisher_id', true), '');
  caller_scope text := coalesce(current_setting('app.access_scope', true), '');
begin
  perform set_config('app.publisher_id', p::text, true), set_config('app.access_scope', 'publisher', true);
  select coalesce((select sum(pg_column_size(w.*)) from works w where w.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(s.*)) from songwriters s where s.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(r.*)) from recordings r where r.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(ws.*)) from work_songwriters ws where ws.publisher_id = p), 0)
    into bytes;
  -- the caller's context back (an error aborts the (sub)transaction, which undoes the set_config too)
  perform set_config('app.publisher_id', caller_publisher, true), set_config('app.access_scope', caller_scope, true);
  insert into account_usage as u (publisher_id, day, storage_bytes, seats_used) values (p, d, bytes, metering_record_measurements.seats_used)
    on conflict (publisher_id, day) do update set storage_bytes = excluded.storage_bytes, seats_used = excluded.seats_used, updated_at = now();
  return bytes;
end $$;
`);
    for (const f of ['metering_publishers()', 'metering_set_api_calls(uuid, date, bigint, uuid[], bigint[])', 'metering_record_measurements(uuid, date, integer)']) {
      this.addSql(`revoke all on function ${f} from public; grant execute on function ${f} to catalog_app;`);
    }
  }

  /** Drop the functions. */
  override down(): void {
    this.addSql(`
drop function metering_record_measurements(uuid, date, integer);
drop function metering_set_api_calls(uuid, date, bigint, uuid[], bigint[]);
drop function metering_publishers();
`);
  }
}
