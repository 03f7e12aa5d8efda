/**
 * "Who can act on a work": the publisher context's works (GET /api/v1/works) or a pasted work id →
 * who can read, update, delete it (GET /api/v1/authz/who-can, OpenFGA ListUsers) and why a given
 * user may or may not (GET /api/v1/authz/explain; docs/CONTRACTS.md contract E).
 */
import { api, describeError } from './api.js';
import { Component, ErrorBox, Status, WORK_PERMISSIONS, html, userLabel } from './ui.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class WorkAccess extends Component {
  state = { works: null, worksError: '', pasted: '', work: null, whoCan: null, busy: '', error: '', explainUser: '', explainPermission: 'can_read', explanation: null, explainError: '' };

  componentDidMount() {
    this.loadWorks();
  }

  async loadWorks() {
    if (!this.props.publisherId) {
      this.setState({ works: null, worksError: '' });
      return;
    }
    try {
      const r = await api('GET', '/api/v1/works', { query: { limit: 50 } });
      this.setState({ works: r.items, worksError: '' });
    } catch (err) {
      this.setState({ works: null, worksError: describeError(err) });
    }
  }

  /** Ask who can read/update/delete `work` ({id, title?}). */
  inspect = async (work) => {
    this.setState({ work, whoCan: null, explanation: null, explainError: '', busy: `Asking who can act on ${work.title ?? work.id}…`, error: '' });
    try {
      const answers = await Promise.all(WORK_PERMISSIONS.map((permission) => api('GET', '/api/v1/authz/who-can', { query: { permission, object: `work:${work.id}` } })));
      this.setState({ whoCan: Object.fromEntries(WORK_PERMISSIONS.map((p, i) => [p, answers[i]])), busy: '' });
    } catch (err) {
      this.setState({ busy: '', error: describeError(err) });
    }
  };

  inspectPasted = (e) => {
    e.preventDefault();
    const id = this.state.pasted.trim().replace(/^work:/, '');
    if (!UUID.test(id)) {
      this.setState({ error: 'A work id is a UUID (optionally prefixed with "work:").' });
      return;
    }
    this.inspect({ id });
  };

  explain = async (user, permission) => {
    const u = String(user).trim().replace(/^user:/, '');
    this.setState({ explainUser: u, explainPermission: permission, explanation: null, explainError: '' });
    try {
      const explanation = await api('GET', '/api/v1/authz/explain', { query: { user: u, permission, object: `work:${this.state.work.id}` } });
      this.setState({ explanation });
    } catch (err) {
      this.setState({ explainError: describeError(err) });
    }
  };

  render(props, s) {
    const allUsers = s.whoCan ? Object.values(s.whoCan).flatMap((a) => a.users) : [];
    return html`
      <section aria-labelledby="works-h">
        <h2 id="works-h">Who can act on a work</h2>
        ${props.publisherId
          ? s.works
            ? s.works.length
              ? html`<table>
                  <caption>Works of the publisher context</caption>
                  <thead><tr><th scope="col">Title</th><th scope="col">ISWC</th><th scope="col">Id</th><th scope="col"><span class="muted">Action</span></th></tr></thead>
                  <tbody>
                    ${s.works.map((w) => html`<tr key=${w.id}><td>${w.title}</td><td>${w.iswc ?? ''}</td><td class="mono">${w.id}</td><td><button type="button" onClick=${() => this.inspect(w)} aria-label=${`Who can act on ${w.title}`}>Who can?</button></td></tr>`)}
                  </tbody>
                </table>`
              : html`<p>This publisher has no works.</p>`
            : html`<${ErrorBox} message=${s.worksError} />`
          : html`<p class="muted">No publisher context: paste a work id.</p>`}
        <form onSubmit=${this.inspectPasted}>
          <label>Work id
            <input name="work" size="40" value=${s.pasted} onInput=${(e) => this.setState({ pasted: e.currentTarget.value })} />
          </label>
          <button type="submit">Inspect work</button>
        </form>
        <${Status} message=${s.busy} />
        <${ErrorBox} message=${s.error} />
        ${s.whoCan
          ? html`<div>
              <h3>Access to work ${s.work.title ? `“${s.work.title}”` : html`<code>${s.work.id}</code>`}</h3>
              ${WORK_PERMISSIONS.map((p) => html`<${WhoCanTable} key=${p} permission=${p} answer=${s.whoCan[p]} onExplain=${this.explain} />`)}
              <h3>Why?</h3>
              <form onSubmit=${(e) => { e.preventDefault(); this.explain(s.explainUser, s.explainPermission); }}>
                <label>User id
                  <input name="explain-user" size="40" required value=${s.explainUser} onInput=${(e) => this.setState({ explainUser: e.currentTarget.value })} />
                </label>
                <label>Permission
                  <select name="explain-permission" value=${s.explainPermission} onChange=${(e) => this.setState({ explainPermission: e.currentTarget.value })}>
                    ${WORK_PERMISSIONS.map((p) => html`<option value=${p}>${p}</option>`)}
                  </select>
                </label>
                <button type="submit">Explain</button>
              </form>
              <${ErrorBox} message=${s.explainError} />
              ${s.explanation ? html`<${ExplanationView} e=${s.explanation} users=${allUsers} />` : null}
            </div>`
          : null}
      </section>
    `;
  }
}

/** The users and usersets holding `permission` (one who-can answer). */
function WhoCanTable({ permission, answer, onExplain }) {
  return html`
    <table>
      <caption><code>${permission}</code>${answer.truncated ? ' (truncated: OpenFGA returned its maximum)' : ''}</caption>
      <thead><tr><th scope="col">User</th><th scope="col">Name</th><th scope="col"><span class="muted">Action</span></th></tr></thead>
      <tbody>
        ${answer.users.length
          ? answer.users.map((u) => html`<tr key=${u.id}><td>${u.email}</td><td>${u.display_name}</td><td><button type="button" class="link" onClick=${() => onExplain(u.id, permission)} aria-label=${`Why may ${u.email} ${permission}?`}>Why?</button></td></tr>`)
          : html`<tr><td colspan="3">No user.</td></tr>`}
        ${answer.usersets.map((us) => html`<tr key=${us}><td colspan="3">every <code>${us}</code></td></tr>`)}
      </tbody>
    </table>
  `;
}

/** An explanation (contract C): allowed or denied, the deciding path or the reasons, the text. */
function ExplanationView({ e, users }) {
  return html`
    <div aria-live="polite">
      <p>
        <strong class=${e.allowed ? 'ok' : 'denied'}>${e.allowed ? 'Allowed' : 'Denied'}</strong>${`: ${userLabel(e.user, users)} → `}<code>${e.relation}</code>${' on '}<code>${e.object}</code>${' '}<span class="muted">(model ${e.model_id})</span>
      </p>
      ${e.path?.length
        ? html`<ol aria-label="Decision path">${e.path.map((step, i) => html`<li key=${i}>${step.text}</li>`)}</ol>`
        : null}
      ${e.denied_because?.length ? html`<ul aria-label="Denied because">${e.denied_because.map((r, i) => html`<li key=${i}>${r}</li>`)}</ul>` : null}
      ${e.truncated ? html`<p class="muted">Not fully explained: ${e.truncated}</p>` : null}
      <pre>${e.text}</pre>
    </div>
  `;
}
