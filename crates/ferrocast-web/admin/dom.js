// Small DOM and formatting helpers shared by the pages.

/**
 * An element `tag` with `attrs` (properties; `class` and `data-*` as
 * attributes) and `children` (strings become text, never HTML).
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node | string | number | null | undefined)} children
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class" || name.startsWith("data-") || name.startsWith("aria-")) element.setAttribute(name, String(value));
    else /** @type {any} */ (element)[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    element.append(typeof child === "object" ? child : String(child));
  }
  return element;
}

/** @param {string} id */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return element;
}

/**
 * Shows `message` in `element` (an error in red when `error`), or hides it
 * when `message` is empty.
 * @param {HTMLElement} element
 * @param {string} message
 * @param {boolean} [error]
 */
export function say(element, message, error = false) {
  element.textContent = message;
  element.classList.toggle("error", error);
  element.hidden = !message;
}

/** @param {number} seconds */
export function duration(seconds) {
  const d = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  if (d) return `${d} d ${hours} h`;
  if (hours) return `${hours} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

/** @param {number} n */
export function count(n) {
  return Math.round(n).toLocaleString("en-US");
}

/** @param {number} millis since the epoch */
export function clock(millis) {
  return new Date(millis).toLocaleTimeString("en-GB", { hour12: false });
}

/** A publication's data as one line of text. */
export function shown(publication) {
  if (publication.encoding === "base64") return `(${publication.content_type ?? "bytes"}, base64) ${publication.data}`;
  return typeof publication.data === "string" ? publication.data : JSON.stringify(publication.data);
}

/** Headers `{name: value}` as `name: value; …`. */
export function headerText(headers) {
  return Object.entries(headers ?? {})
    .map(([name, value]) => `${name}: ${value}`)
    .join("; ");
}
