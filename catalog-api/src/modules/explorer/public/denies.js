/**
 * "Recent denies": a live tail of the decision log's denies (GET /api/v1/authz/decisions
 * ?allowed=false&since=<newest id seen>, polled every 2 s; records of contract A, newest first).
 * A publisher admin sees their publisher's only (the API narrows them).
 */
import { api, describeError } from './api.js';
import { Component, ErrorBox, formatTime, html } from './ui.js';

/** Poll period, ms (issue 10 §5). */
export const POLL_INTERVAL_MS = 2000;
/** Denies kept on the page. */
const KEEP = 200;

export class DenyTail extends Component {
  state = { decisions: [], paused: false, error: '', polled: false };
  timer = null;
  inFlight = false;

  componentDidMount() {
    this.poll();
  }

  componentWillUnmount() {
    clearTimeout(this.timer);
    this.timer = null;
    this.unmounted = true;
  }

  poll = async () => {
    clearTimeout(this.timer);
    if (this.unmounted) return;
    if (!this.state.paused && !this.inFlight) {
      this.inFlight = true;
      try {
        const since = this.state.decisions[0]?.id;
        const r = await api('GET', '/api/v1/authz/decisions', { query: { allowed: 'false', limit: 50, since } });
        const seen = new Set(this.state.decisions.map((d) => d.id));
        const fresh = r.decisions.filter((d) => !seen.has(d.id));
        if (!this.unmounted) this.setState({ decisions: [...fresh, ...this.state.decisions].slice(0, KEEP), error: '', polled: true });
      } catch (err) {
        if (!this.unmounted) this.setState({ error: describeError(err), polled: true });
      } finally {
        this.inFlight = false;
      }
    }
    if (!this.unmounted) this.timer = setTimeout(this.poll, POLL_INTERVAL_MS);
  };

  render(_props, s) {
    return html`
      <section aria-labelledby="denies-h">
        <h2 id="denies-h">Recent denies</h2>
        <div class="row">
          <button type="button" aria-pressed=${s.paused ? 'true' : 'false'} onClick=${() => this.setState({ paused: !s.paused })}>${s.paused ? 'Resume live tail' : 'Pause live tail'}</button>
          <span class="muted">${s.paused ? 'Paused.' : `Live: refreshed every ${POLL_INTERVAL_MS / 1000} s.`}</span>
        </div>
        <${ErrorBox} message=${s.error} />
        <table aria-live="polite">
          <caption>Denied decisions, newest first</caption>
          <thead><tr><th scope="col">Time</th><th scope="col">Subject</th><th scope="col">Relation</th><th scope="col">Object</th><th scope="col">Route rule</th><th scope="col">Publisher</th><th scope="col">Source</th></tr></thead>
          <tbody>
            ${s.decisions.length
              ? s.decisions.map(
                  (d) => html`<tr key=${d.id}>
                    <td>${formatTime(d.time)}</td><td class="mono">${d.subject}</td><td><code>${d.relation}</code></td>
                    <td class="mono">${d.object}</td><td><code>${d.rule}</code></td><td class="mono">${d.publisher ?? ''}</td><td>${d.source}</td>
                  </tr>`,
                )
              : html`<tr><td colspan="7">${s.polled ? 'No denies yet.' : 'Loading…'}</td></tr>`}
          </tbody>
        </table>
      </section>
    `;
  }
}
