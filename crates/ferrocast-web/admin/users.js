// The Users and connections page: look a user up in a topic's presence,
// disconnect them (4002) or unsubscribe them, with the API's answer: how
// many sessions, which nodes answered and which did not.
import { call } from "./api.js";
import { byId, clock, h } from "./dom.js";

export class UsersPage {
  constructor() {
    byId("target-form").addEventListener("submit", (event) => event.preventDefault());
    byId("lookup").addEventListener("click", () => this.lookup());
    byId("disconnect").addEventListener("click", () => this.act("disconnect"));
    byId("unsubscribe").addEventListener("click", () => this.act("unsubscribe"));
  }

  /** The target of the form, `{user}` or `{client}`, or null when empty. */
  target() {
    const form = /** @type {HTMLFormElement} */ (byId("target-form"));
    const kind = /** @type {RadioNodeList} */ (form.elements.namedItem("kind")).value;
    const value = /** @type {HTMLInputElement} */ (byId("target")).value.trim();
    return value ? { [kind]: value } : null;
  }

  topic() {
    return /** @type {HTMLInputElement} */ (byId("target-topic")).value.trim();
  }

  /** @param {string} title @param {boolean} failed @param {...(Node|string)} lines */
  show(title, failed, ...lines) {
    byId("users-result").replaceChildren(
      h("div", { class: failed ? "result error" : "result" }, h("h2", {}, title), ...lines.map((line) => h("p", {}, line))),
    );
  }

  async lookup() {
    const target = this.target();
    const topic = this.topic();
    if (!target || !topic) return this.show("Look-up needs a user or client id and a topic", true);
    try {
      const answer = await call("presence", { topic });
      const found = answer.clients.filter((c) => (target.user ? c.user === target.user : c.client === target.client));
      const who = target.user ? `user ${target.user}` : `client ${target.client}`;
      if (!found.length) return this.show(`No connection of ${who} in ${topic}`, false, `${answer.clients.length} client(s) are subscribed to ${topic}.`);
      const list = h("ul", {}, ...found.map((c) => h("li", {}, h("code", {}, c.client), ` on node ${c.node}, since ${clock(c.joined_at_millis)}`)));
      this.show(`${found.length} connection(s) of ${who} in ${topic}`, false, list);
    } catch (error) {
      this.show("Look-up failed", true, error.message);
    }
  }

  /** @param {"disconnect" | "unsubscribe"} action */
  async act(action) {
    const target = this.target();
    if (!target) return this.show(`Name a user or client id to ${action}`, true);
    const body = { ...target };
    if (action === "unsubscribe") {
      if (!this.topic()) return this.show("Unsubscribe needs a topic", true);
      body.topic = this.topic();
    }
    const who = target.user ? `user ${target.user}` : `client ${target.client}`;
    try {
      const answer = await call(action, body);
      const n = action === "disconnect" ? answer.disconnected : answer.unsubscribed;
      const done = action === "disconnect" ? `Disconnected ${n} connection(s) of ${who} (close 4002)` : `Unsubscribed ${n} connection(s) of ${who} from ${body.topic}`;
      this.show(done, false, ...coverage(answer.coverage));
    } catch (error) {
      this.show(`${action === "disconnect" ? "Disconnect" : "Unsubscribe"} of ${who}: nothing done`, true, error.message);
    }
  }
}

/** The nodes that answered and those that did not, in words. */
function coverage(coverage) {
  const answered = coverage?.answered ?? [];
  const missing = coverage?.missing ?? [];
  const lines = [`Nodes that answered: ${answered.length ? answered.join(", ") : "none"}.`];
  lines.push(missing.length ? `No answer in time from: ${missing.join(", ")}; connections there may remain.` : "Every known node answered.");
  return lines;
}
