/**
 * Sign-in: email + password → POST /api/v1/auth/login; an `mfa_required` answer asks for the
 * authenticator code → POST /api/v1/auth/mfa/verify (docs/CONTRACTS.md, "Identity"). Calls
 * `onSignedIn(accessToken)`; the token is never stored beyond memory.
 */
import { api, describeError } from './api.js';
import { Component, ErrorBox, html } from './ui.js';

export class SignIn extends Component {
  state = { email: '', password: '', code: '', mfaToken: null, busy: false, error: '' };

  submit = async (e) => {
    e.preventDefault();
    this.setState({ busy: true, error: '' });
    try {
      const { email, password, code, mfaToken } = this.state;
      const r = mfaToken
        ? await api('POST', '/api/v1/auth/mfa/verify', { body: { mfa_token: mfaToken, code: code.trim() }, publisher: false })
        : await api('POST', '/api/v1/auth/login', { body: { email: email.trim(), password }, publisher: false });
      if (r?.mfa_required) {
        this.setState({ mfaToken: r.mfa_token, busy: false, password: '' });
        return;
      }
      this.setState({ busy: false, password: '', code: '' });
      await this.props.onSignedIn(r.access_token);
    } catch (err) {
      this.setState({ busy: false, error: describeError(err) });
    }
  };

  render(props, s) {
    return html`
      <section aria-labelledby="signin-h">
        <h2 id="signin-h">Sign in</h2>
        <p class="muted">For system admins and publisher admins. Your session lives in this tab only.</p>
        ${props.notice ? html`<p role="status">${props.notice}</p>` : null}
        <form onSubmit=${this.submit}>
          ${s.mfaToken
            ? html`<label>Authenticator code
                <input name="code" inputmode="numeric" autocomplete="one-time-code" required value=${s.code} onInput=${(e) => this.setState({ code: e.currentTarget.value })} />
              </label>`
            : html`<label>Email
                  <input name="email" type="email" autocomplete="username" required value=${s.email} onInput=${(e) => this.setState({ email: e.currentTarget.value })} />
                </label>
                <label>Password
                  <input name="password" type="password" autocomplete="current-password" required value=${s.password} onInput=${(e) => this.setState({ password: e.currentTarget.value })} />
                </label>`}
          <button type="submit" disabled=${s.busy}>${s.mfaToken ? 'Verify' : 'Sign in'}</button>
        </form>
        <${ErrorBox} message=${s.error} />
      </section>
    `;
  }
}
