/**
 * The explorer's toolkit glue: Preact (class components — its hooks module imports the bare
 * specifier "preact", which a page without an import map and without inline scripts cannot
 * resolve) with htm's tagged templates instead of JSX, and a few shared bits of markup.
 */
import { h, render, Component } from './vendor/preact/preact.mjs';
import htm from './vendor/htm/htm.mjs';

/** JSX-like tagged templates rendering Preact elements (https://github.com/developit/htm). */
export const html = htm.bind(h);
export { render, Component };

/** The permissions the work view asks about (policies/model.fga, type work). */
export const WORK_PERMISSIONS = ['can_read', 'can_update', 'can_delete'];

/** An error message announced to screen readers; nothing when `message` is empty. */
export function ErrorBox({ message }) {
  return message ? html`<p class="error" role="alert">${message}</p>` : null;
}

/** A polite status line ("Loading…"), for assistive technology too. */
export function Status({ message }) {
  return html`<p class="muted" role="status">${message || ''}</p>`;
}

/** 'user:<uuid>' or '<uuid>' → a user's label from `users` ({id,email,display_name}[]) or the id. */
export function userLabel(subject, users = []) {
  const id = String(subject).replace(/^user:/, '');
  const u = users.find((x) => x.id === id);
  return u ? u.email || u.display_name : subject;
}

/** An ISO 8601 time as local date + time (seconds). */
export function formatTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso ?? '') : d.toLocaleString(undefined, { hour12: false });
}
