/**
 * "A user's access": search by email prefix (GET /api/v1/authz/users?q=), then the chosen user's
 * memberships and effective permissions per publisher (GET /api/v1/authz/users/{id}/access;
 * docs/CONTRACTS.md contract E). A publisher admin sees members of the publisher context only.
 */
import { api, describeError } from './api.js';
import { Component, ErrorBox, Status, html } from './ui.js';

/** A custom role or department as the API gives it (object with a name, or a plain string). */
function named(v) {
  if (v === null || v === undefined) return '';
  return typeof v === 'object' ? (v.name ?? v.id ?? '') : String(v);
}

export class UserAccess extends Component {
  state = { q: '', users: null, access: null, busy: '', error: '' };

  search = async (e) => {
    e.preventDefault();
    this.setState({ busy: 'Searching…', error: '', users: null, access: null });
    try {
      const r = await api('GET', '/api/v1/authz/users', { query: { q: this.state.q.trim() } });
      this.setState({ users: r.users, busy: '' });
    } catch (err) {
      this.setState({ busy: '', error: describeError(err) });
    }
  };

  open = async (user) => {
    this.setState({ busy: `Loading the access of ${user.email}…`, error: '', access: null });
    try {
      const access = await api('GET', `/api/v1/authz/users/${encodeURIComponent(user.id)}/access`);
      this.setState({ access, busy: '' });
    } catch (err) {
      this.setState({ busy: '', error: describeError(err) });
    }
  };

  render(_props, s) {
    return html`
      <section aria-labelledby="users-h">
        <h2 id="users-h">A user's access</h2>
        <form role="search" onSubmit=${this.search}>
          <label>Email starts with
            <input type="search" name="q" required value=${s.q} onInput=${(e) => this.setState({ q: e.currentTarget.value })} />
          </label>
          <button type="submit">Search users</button>
        </form>
        <${Status} message=${s.busy} />
        <${ErrorBox} message=${s.error} />
        ${s.users
          ? s.users.length
            ? html`<ul aria-label="Matching users">
                ${s.users.map((u) => html`<li key=${u.id}><button type="button" class="link" onClick=${() => this.open(u)}>${u.email}</button> <span class="muted">${u.display_name}</span></li>`)}
              </ul>`
            : html`<p>No user matches.</p>`
          : null}
        ${s.access ? html`<${AccessView} access=${s.access} />` : null}
      </section>
    `;
  }
}

/** One user's memberships and permissions (the access answer of contract E). */
function AccessView({ access }) {
  const names = new Map(access.memberships.map((m) => [m.publisher.id, m.publisher.name]));
  return html`
    <div>
      <h3>${access.user.email} <span class="muted">(${access.user.display_name})</span></h3>
      ${access.memberships.length
        ? html`<table>
            <caption>Memberships</caption>
            <thead><tr><th scope="col">Publisher</th><th scope="col">Role</th><th scope="col">Custom role</th><th scope="col">Department</th><th scope="col">Status</th></tr></thead>
            <tbody>
              ${access.memberships.map(
                (m) => html`<tr key=${m.publisher.id}>
                  <td>${m.publisher.name} <span class="muted">(${m.publisher.slug})</span></td>
                  <td>${m.role}</td><td>${named(m.custom_role)}</td><td>${named(m.department)}</td><td>${m.status}</td>
                </tr>`,
              )}
            </tbody>
          </table>`
        : html`<p>No memberships.</p>`}
      ${Object.entries(access.permissions).map(
        ([publisherId, perms]) => html`<div key=${publisherId}>
          <h4>Effective permissions at ${names.get(publisherId) ?? publisherId}</h4>
          ${perms.length ? html`<ul class="perms" aria-label=${`Permissions at ${names.get(publisherId) ?? publisherId}`}>${perms.map((p) => html`<li key=${p}><code>${p}</code></li>`)}</ul>` : html`<p>None.</p>`}
        </div>`,
      )}
    </div>
  `;
}
