/**
 * 0012 — conditional grants (issue 10 §4; policies/model.fga "Conditional grants",
 * policies/src/conditions.ts): memberships that end, and publishers that restrict their staff to
 * office networks. Both become OpenFGA tuples with a condition, written through the relationship
 * outbox like every other tuple.
 *
 * - `authz_outbox` gains `condition_name` and `condition_context` (jsonb): a `write` row with a
 *   condition is delivered as a conditional tuple (catalog-api/src/outbox/relay.ts). A 6-argument
 *   `authz_outbox_emit` records them; the 4-argument one stays (no condition).
 * - `user_publishers.expires_at` (timestamptz, null = no end): the membership's tuple (migration
 *   0006 `authz_membership_tuple`: publisher role, department role or custom-role assignee) is
 *   written with `non_expired_grant {grant_expires_at}`. Changing the end deletes the tuple and
 *   writes it again with the new one (OpenFGA does not change a tuple's condition in place). The
 *   row stays after the end (the tuple simply stops counting); the API hides expired memberships.
 *   `invitations.membership_expires_at` carries the end to the membership its acceptance creates.
 * - `publishers.settings ->> 'office_networks'` (a JSON array of CIDRs; absent or empty =
 *   unrestricted): a non-empty list has the tuple `publisher:<p>#off_network@user:*` with
 *   `outside_office_networks {office_networks}`; a change deletes and rewrites it, emptying the list
 *   deletes it. Rows that exist before this migration get their tuple too.
 *
 * Down drops the columns and restores 0006's membership trigger function (conditional tuples already
 * in OpenFGA stay until their rows change; pending conditional outbox rows lose their condition).
 */
import { Migration } from '@mikro-orm/migrations';

/** The membership trigger of migration 0006, with the tuple's end (UP) or without it (DOWN). */
const membershipTrigger = (withExpiry: boolean) => `
create or replace function authz_membership_tuple(m user_publishers) returns text[]
language plpgsql stable security definer set search_path = public, pg_temp as $$
declare
  role_name text;
  t text[];
begin
  if m.custom_role_id is not null then
    select r.name into role_name from roles r where r.id = m.custom_role_id;
    t := array['role:' || m.publisher_id || '/' || role_name, 'assignee', 'user:' || m.user_id];
  elsif m.department_id is not null then
    t := array['department:' || m.department_id, m.role, 'user:' || m.user_id];
  else
    t := array['publisher:' || m.publisher_id, m.role, 'user:' || m.user_id];
  end if;
  ${withExpiry ? `-- 4th element: the end (RFC 3339, UTC, ms — truncated, never later) when the membership has one
  if m.expires_at is not null then t := t || to_char(m.expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'); end if;` : ''}
  return t;
end $$;

create or replace function authz_outbox_membership() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  prev text[];
  next text[];
begin
  if tg_op in ('UPDATE', 'DELETE') then prev := authz_membership_tuple(old); end if;
  if tg_op in ('INSERT', 'UPDATE') then next := authz_membership_tuple(new); end if;
  if prev is not null and prev is distinct from next then perform authz_outbox_emit('delete', prev[1], prev[2], prev[3]); end if;
  if next is not null and next is distinct from prev then
    ${
      withExpiry
        ? `if next[4] is not null then
      perform authz_outbox_emit('write', next[1], next[2], next[3], 'non_expired_grant', jsonb_build_object('grant_expires_at', next[4]));
    else
      perform authz_outbox_emit('write', next[1], next[2], next[3]);
    end if;`
        : `perform authz_outbox_emit('write', next[1], next[2], next[3]);`
    }
  end if;
  return null;
end $$;`;

/** Adds the conditional grants; `down` removes them. */
export class Migration0012ConditionalGrants extends Migration {
  override name = '0012_conditional_grants';

  /** Outbox condition columns, membership ends, the office-network restriction. */
  up(): void {
    this.addSql(`
alter table authz_outbox add column condition_name text, add column condition_context jsonb,
  add constraint authz_outbox_condition_check check ((condition_name is null) = (condition_context is null) and (condition_name is null or operation = 'write'));

create function authz_outbox_emit(op text, obj text, rel text, subj text, cond text, cond_context jsonb) returns void
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  insert into authz_outbox (operation, object, relation, subject, condition_name, condition_context) values (op, obj, rel, subj, cond, cond_context);
  perform pg_notify('authz_outbox', '');
end $$;
revoke all on function authz_outbox_emit(text, text, text, text, text, jsonb) from public;

alter table user_publishers add column expires_at timestamptz;
comment on column user_publishers.expires_at is 'The membership ends at this time (its tuple carries non_expired_grant); null = no end';
grant update (expires_at) on user_publishers to catalog_app;
alter table invitations add column membership_expires_at timestamptz;
comment on column invitations.membership_expires_at is 'The end of the membership the invitation creates (user_publishers.expires_at)';
${membershipTrigger(true)}

-- The office networks of a publisher's settings: a JSON array of CIDR strings, or null when unrestricted.
create function publisher_office_networks(settings jsonb) returns jsonb
language sql immutable set search_path = public, pg_temp as $$
  select case when jsonb_typeof(settings -> 'office_networks') = 'array' and jsonb_array_length(settings -> 'office_networks') > 0
              then settings -> 'office_networks' end
$$;

create function authz_outbox_office_networks() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  prev jsonb;
  next jsonb;
begin
  if tg_op in ('UPDATE', 'DELETE') then prev := publisher_office_networks(old.settings); end if;
  if tg_op in ('INSERT', 'UPDATE') then next := publisher_office_networks(new.settings); end if;
  if prev is not distinct from next then return null; end if;
  if prev is not null then perform authz_outbox_emit('delete', 'publisher:' || old.id, 'off_network', 'user:*'); end if;
  if next is not null then
    perform authz_outbox_emit('write', 'publisher:' || new.id, 'off_network', 'user:*', 'outside_office_networks', jsonb_build_object('office_networks', next));
  end if;
  return null;
end $$;
revoke all on function authz_outbox_office_networks() from public;
create trigger publishers_office_networks_authz_outbox after insert or update of settings or delete on publishers
  for each row execute function authz_outbox_office_networks();

insert into authz_outbox (operation, object, relation, subject, condition_name, condition_context)
  select 'write', 'publisher:' || id, 'off_network', 'user:*', 'outside_office_networks', jsonb_build_object('office_networks', publisher_office_networks(settings))
    from publishers where publisher_office_networks(settings) is not null;
`);
  }

  /** Drop the trigger, functions and columns; 0006's membership trigger function again. */
  override down(): void {
    this.addSql(`
drop trigger publishers_office_networks_authz_outbox on publishers;
drop function authz_outbox_office_networks();
drop function publisher_office_networks(jsonb);
${membershipTrigger(false)}
alter table invitations drop column membership_expires_at;
alter table user_publishers drop column expires_at;
drop function authz_outbox_emit(text, text, text, text, text, jsonb);
alter table authz_outbox drop constraint authz_outbox_condition_check, drop column condition_name, drop column condition_context;
`);
  }
}
