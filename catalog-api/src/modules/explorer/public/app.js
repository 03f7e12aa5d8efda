/**
 * The access explorer's shell (issue 10 §5): sign-in, then — for system admins and publisher
 * admins only — the publisher context and the four views. Who is an admin comes from
 * GET /api/v1/users/me: `is_system_admin`, or a publisher-wide `admin` membership (or a custom
 * role, which may hold audit:read); the API decides every call again, so the page only avoids
 * offering what would be refused.
 */
import { api, describeError, setPublisher, setToken, setUnauthenticatedHandler } from './api.js';
import { Component, ErrorBox, html, render } from './ui.js';
import { SignIn } from './signin.js';
import { UserAccess } from './users.js';
import { WorkAccess } from './works.js';
import { Models } from './models.js';
import { DenyTail } from './denies.js';

/** The memberships that may make the caller a publisher admin. */
function adminMemberships(me) {
  return me.memberships.filter((m) => (m.role === 'admin' && !m.department_id) || m.role === 'custom');
}

class App extends Component {
  state = { me: null, publishers: [], publisherId: '', error: '', notice: '' };

  componentDidMount() {
    setUnauthenticatedHandler(() => this.signedOut('Your session ended: sign in again.'));
  }

  signedIn = async (accessToken) => {
    setToken(accessToken);
    setPublisher('');
    try {
      const me = await api('GET', '/api/v1/users/me', { publisher: false });
      let publishers = adminMemberships(me).map((m) => ({ id: m.publisher_id, name: m.name }));
      if (me.is_system_admin) {
        const all = await api('GET', '/api/v1/publishers', { query: { limit: 100 }, publisher: false });
        publishers = all.items.map((p) => ({ id: p.id, name: p.name }));
      }
      // the /api/v1/authz inspection rules decide audit:read on the publisher context, so even a
      // system admin (admin of every publisher) works in one (policies/routes.yaml)
      const publisherId = publishers[0]?.id ?? '';
      setPublisher(publisherId);
      this.setState({ me, publishers, publisherId, error: '', notice: '' });
    } catch (err) {
      setToken(null);
      this.setState({ error: describeError(err) });
    }
  };

  signedOut = (notice = '') => {
    setToken(null);
    setPublisher('');
    this.setState({ me: null, publishers: [], publisherId: '', notice });
  };

  signOut = async () => {
    try {
      await api('POST', '/api/v1/auth/logout', { publisher: false });
    } catch {
      // the token is forgotten either way
    }
    this.signedOut('Signed out.');
  };

  choosePublisher = (id) => {
    setPublisher(id);
    this.setState({ publisherId: id });
  };

  render(_props, s) {
    if (!s.me) return html`<${SignIn} onSignedIn=${this.signedIn} notice=${s.notice} /><${ErrorBox} message=${s.error} />`;
    const me = s.me;
    const isAdmin = me.is_system_admin || s.publishers.length > 0;
    const who = me.is_system_admin ? 'system admin' : isAdmin ? `admin at ${s.publishers.map((p) => p.name).join(', ')}` : 'not an admin';
    return html`
      <div class="row" role="region" aria-label="Session">
        <p>Signed in as <strong>${me.email}</strong> (${who}).</p>
        ${isAdmin
          ? html`<label>Publisher context
              <select name="publisher" value=${s.publisherId} onChange=${(e) => this.choosePublisher(e.currentTarget.value)}>
                ${s.publishers.map((p) => html`<option value=${p.id}>${p.name}</option>`)}
              </select>
            </label>`
          : null}
        <button type="button" onClick=${this.signOut}>Sign out</button>
      </div>
      ${isAdmin
        ? html`
            <${UserAccess} key=${`u-${s.publisherId}`} publisherId=${s.publisherId} />
            <${WorkAccess} key=${`w-${s.publisherId}`} publisherId=${s.publisherId} />
            ${me.is_system_admin ? html`<${Models} />` : null}
            <${DenyTail} key=${`d-${s.publisherId}`} publisherId=${s.publisherId} />
          `
        : html`<section aria-labelledby="na-h">
            <h2 id="na-h">Not an admin</h2>
            <p role="alert">You are not an admin: the access explorer is for system admins and publisher admins. Ask a system admin for access.</p>
          </section>`}
    `;
  }
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
