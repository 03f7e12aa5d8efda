/**
 * "Authorization model" (system admins): the active model and its version history
 * (GET /api/v1/authz/models, /models/{id}), the diff of two versions (/models/diff), a candidate
 * edited in a textarea, its shadow report first (POST /models/shadow: recent real decisions
 * replayed against it), then deploy (POST /models/deploy, with accept_changes only after the
 * admin ticked the confirmation) and rollback per version, confirmed inline
 * (docs/CONTRACTS.md contracts D and E).
 */
import { api, describeError } from './api.js';
import { Component, ErrorBox, Status, formatTime, html, userLabel } from './ui.js';

/** At most this many changed decisions are listed (the groups table counts them all). */
const MAX_LISTED_CHANGES = 50;

export class Models extends Component {
  state = {
    list: null, error: '', busy: '', shown: null, from: '', to: '', diff: null,
    candidate: '', report: null, accepted: false, outcome: '', confirmRollback: null,
  };

  componentDidMount() {
    this.load(true);
  }

  /** (Re)load the history; `fillCandidate` puts the active model's DSL into the textarea. */
  async load(fillCandidate = false) {
    try {
      const list = await api('GET', '/api/v1/authz/models');
      const to = list.models[0]?.id ?? '';
      const from = list.models[1]?.id ?? to;
      this.setState({ list, from, to, error: '' });
      if (fillCandidate && list.active) {
        const active = await api('GET', `/api/v1/authz/models/${encodeURIComponent(list.active)}`);
        this.setState({ candidate: active.dsl, report: null, accepted: false });
      }
    } catch (err) {
      this.setState({ error: describeError(err) });
    }
  }

  run = async (busy, fn) => {
    this.setState({ busy, error: '', outcome: '' });
    try {
      await fn();
      this.setState({ busy: '' });
    } catch (err) {
      this.setState({ busy: '', error: describeError(err) });
    }
  };

  show = (id) => this.run(`Loading model ${id}…`, async () => this.setState({ shown: await api('GET', `/api/v1/authz/models/${encodeURIComponent(id)}`) }));

  showDiff = (e) => {
    e.preventDefault();
    this.run('Comparing…', async () => this.setState({ diff: await api('GET', '/api/v1/authz/models/diff', { query: { from: this.state.from, to: this.state.to } }) }));
  };

  shadow = (e) => {
    e.preventDefault();
    this.run('Replaying recent decisions against the candidate…', async () =>
      this.setState({ report: await api('POST', '/api/v1/authz/models/shadow', { body: { dsl: this.state.candidate } }), accepted: false }),
    );
  };

  deploy = () =>
    this.run('Deploying…', async () => {
      const changed = this.state.report?.changed.length ?? 0;
      try {
        const r = await api('POST', '/api/v1/authz/models/deploy', { body: { dsl: this.state.candidate, accept_changes: changed > 0 && this.state.accepted } });
        this.setState({ outcome: r.written === false ? `Unchanged: model ${r.model_id} is already active.` : `Deployed: model ${r.model_id} is active.`, report: r.shadow ?? this.state.report });
      } catch (err) {
        // 409 shadow-changes: decisions changed since the shadow run; show the new report
        const report = err?.problem?.shadow ?? err?.problem?.report;
        if (err?.status === 409 && report) this.setState({ report, accepted: false });
        throw err;
      }
      await this.load();
    });

  rollback = (id) =>
    this.run(`Rolling back to ${id}…`, async () => {
      const r = await api('POST', `/api/v1/authz/models/${encodeURIComponent(id)}/rollback`);
      this.setState({ outcome: `Rolled back: model ${r.model_id} (the content of ${id}) is active.`, confirmRollback: null });
      await this.load();
    });

  render(_props, s) {
    const models = s.list?.models ?? [];
    const changed = s.report?.changed.length ?? 0;
    return html`
      <section aria-labelledby="models-h">
        <h2 id="models-h">Authorization model</h2>
        <${Status} message=${s.busy} />
        <${ErrorBox} message=${s.error} />
        ${s.outcome ? html`<p role="status" class="ok">${s.outcome}</p>` : null}
        ${s.list
          ? html`<table>
              <caption>Version history (${models.length}; newest first)</caption>
              <thead><tr><th scope="col">Model id</th><th scope="col">Created</th><th scope="col">State</th><th scope="col"><span class="muted">Actions</span></th></tr></thead>
              <tbody>
                ${models.map(
                  (m) => html`<tr key=${m.id}>
                    <td class="mono">${m.id}</td><td>${formatTime(m.created_at)}</td>
                    <td>${m.id === s.list.active ? html`<strong>active</strong>` : ''}</td>
                    <td>
                      <button type="button" onClick=${() => this.show(m.id)} aria-label=${`View model ${m.id}`}>View</button>
                      ${m.id === s.list.active
                        ? null
                        : s.confirmRollback === m.id
                          ? html` <span role="group" aria-label="Confirm rollback">Roll back to this version?
                              <button type="button" onClick=${() => this.rollback(m.id)}>Yes, roll back</button>
                              <button type="button" onClick=${() => this.setState({ confirmRollback: null })}>Cancel</button></span>`
                          : html` <button type="button" onClick=${() => this.setState({ confirmRollback: m.id })} aria-label=${`Roll back to model ${m.id}`}>Roll back</button>`}
                    </td>
                  </tr>`,
                )}
              </tbody>
            </table>`
          : null}
        ${s.shown
          ? html`<div>
              <h3>Model <code>${s.shown.id}</code> <span class="muted">${formatTime(s.shown.created_at)}</span></h3>
              <pre aria-label="Model DSL">${s.shown.dsl}</pre>
              <button type="button" onClick=${() => this.setState({ candidate: s.shown.dsl, report: null, accepted: false })}>Use as candidate</button>
            </div>`
          : null}
        ${models.length > 1
          ? html`<form onSubmit=${this.showDiff}>
              <label>From
                <select name="diff-from" value=${s.from} onChange=${(e) => this.setState({ from: e.currentTarget.value })}>${models.map((m) => html`<option value=${m.id}>${m.id}</option>`)}</select>
              </label>
              <label>To
                <select name="diff-to" value=${s.to} onChange=${(e) => this.setState({ to: e.currentTarget.value })}>${models.map((m) => html`<option value=${m.id}>${m.id}</option>`)}</select>
              </label>
              <button type="submit">Show diff</button>
            </form>`
          : null}
        ${s.diff ? html`<${DiffView} diff=${s.diff} />` : null}

        <h3>Candidate model</h3>
        <form class="stack" onSubmit=${this.shadow}>
          <label>Candidate model (DSL)
            <textarea name="candidate" spellcheck="false" value=${s.candidate} onInput=${(e) => this.setState({ candidate: e.currentTarget.value, report: null, accepted: false })}></textarea>
          </label>
          <button type="submit" disabled=${!s.candidate.trim()}>Run shadow test</button>
        </form>
        ${s.report
          ? html`<${ShadowReportView} report=${s.report} />
              ${changed
                ? html`<label class="inline"><input type="checkbox" name="accept" checked=${s.accepted} onChange=${(e) => this.setState({ accepted: e.currentTarget.checked })} />
                    I accept that ${changed} recent decision${changed === 1 ? '' : 's'} would change</label>`
                : null}
              <div class="row"><button type="button" onClick=${this.deploy} disabled=${changed > 0 && !s.accepted}>Deploy candidate</button></div>`
          : html`<p class="muted">Deploying needs a shadow test of the candidate first.</p>`}
      </section>
    `;
  }
}

/** A line diff with added/removed lines marked (text and colour). */
function DiffView({ diff }) {
  const lines = String(diff.diff ?? '').split('\n');
  return html`<div>
    <h3>Diff <code>${diff.from}</code> → <code>${diff.to}</code></h3>
    ${diff.diff ? html`<pre aria-label="Model diff">${lines.map((l, i) => html`<span key=${i} class=${l.startsWith('+') ? 'diff-add' : l.startsWith('-') ? 'diff-del' : ''}>${`${l}\n`}</span>`)}</pre>` : html`<p>No difference.</p>`}
  </div>`;
}

/** A shadow report (contract D): counts, the changes grouped by route rule and role, the first changes. */
function ShadowReportView({ report }) {
  const changes = report.changed.slice(0, MAX_LISTED_CHANGES);
  const verdict = (b) => (b ? 'allowed' : 'denied');
  return html`<div role="group" aria-label="Shadow report">
    <h3>Shadow report</h3>
    <p role="status">
      Replayed ${report.replayed} recent decision${report.replayed === 1 ? '' : 's'} against the candidate
      (base model <code>${report.base_model_id}</code>): <strong>${report.changed.length === 0 ? 'no decision changes' : `${report.changed.length} would change`}</strong>.
    </p>
    ${report.skipped || report.truncated
      ? html`<p class="muted">${report.skipped ? `${report.skipped} decision(s) could not be replayed. ` : ''}${report.truncated ? 'The sample was cut to its bound.' : ''}</p>`
      : null}
    ${report.groups.length
      ? html`<table>
          <caption>Changes by route rule and role</caption>
          <thead><tr><th scope="col">Route rule</th><th scope="col">Role</th><th scope="col">Allowed → denied</th><th scope="col">Denied → allowed</th></tr></thead>
          <tbody>${report.groups.map((g, i) => html`<tr key=${i}><td><code>${g.rule}</code></td><td>${g.role}</td><td>${g.allowed_to_denied}</td><td>${g.denied_to_allowed}</td></tr>`)}</tbody>
        </table>`
      : null}
    ${changes.length
      ? html`<table>
          <caption>Changed decisions${report.changed.length > changes.length ? ` (first ${changes.length} of ${report.changed.length})` : ''}</caption>
          <thead><tr><th scope="col">Subject</th><th scope="col">Relation</th><th scope="col">Object</th><th scope="col">Route rule</th><th scope="col">Before</th><th scope="col">After</th></tr></thead>
          <tbody>
            ${changes.map(
              (c, i) => html`<tr key=${i}>
                <td class="mono">${userLabel(c.decision.subject)}</td><td><code>${c.decision.relation}</code></td><td class="mono">${c.decision.object}</td>
                <td><code>${c.decision.rule}</code></td><td>${verdict(c.before)}</td><td class=${c.after ? 'ok' : 'denied'}>${verdict(c.after)}</td>
              </tr>`,
            )}
          </tbody>
        </table>`
      : null}
  </div>`;
}
