// The Topic page: a live tail through /api/subscribe, the history with
// positions, presence, and a publish form.
import { call, follow } from "./api.js";
import { byId, clock, h, headerText, say, shown } from "./dom.js";

/** Most publications the live tail keeps on screen. */
const TAIL_KEPT = 200;

export class TopicPage {
  constructor() {
    /** @type {AbortController | null} */
    this.following = null;
    byId("topic-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.follow(/** @type {HTMLInputElement} */ (byId("topic-name")).value.trim());
    });
    byId("topic-stop").addEventListener("click", () => this.stop("stopped"));
    byId("publish-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.publish();
    });
    byId("history-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.history();
    });
    byId("presence-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.presence();
    });
  }

  topic() {
    return /** @type {HTMLInputElement} */ (byId("topic-name")).value.trim();
  }

  /** @param {string} topic */
  async follow(topic) {
    this.stop("");
    if (!topic) return;
    const publishTopic = /** @type {HTMLInputElement} */ (byId("publish-topic"));
    if (!publishTopic.value && !/[*>]/.test(topic)) publishTopic.value = topic;
    byId("tail").replaceChildren();
    const controller = new AbortController();
    this.following = controller;
    /** @type {HTMLButtonElement} */ (byId("topic-stop")).disabled = false;
    this.state("connecting", "");
    try {
      await follow(topic, controller.signal, (name, data) => {
        if (name === "subscribed") this.state(`following ${topic}`, "up");
        else if (name === "publication") this.show(data);
        else if (name === "error") this.state(`ended: ${data.error?.message ?? "unknown error"}`, "down");
      });
      if (this.following === controller && !controller.signal.aborted && !this.ended) this.state("the stream ended", "down");
    } catch (error) {
      if (this.following === controller) this.state(`cannot follow ${topic}: ${error.message}`, "down");
    } finally {
      if (this.following === controller) /** @type {HTMLButtonElement} */ (byId("topic-stop")).disabled = true;
    }
  }

  /** @param {string} why shown as the tail's state, unless empty */
  stop(why) {
    this.following?.abort();
    this.following = null;
    /** @type {HTMLButtonElement} */ (byId("topic-stop")).disabled = true;
    if (why) this.state(why, "");
  }

  /** @param {string} text @param {string} kind */
  state(text, kind) {
    const element = byId("tail-state");
    element.textContent = text;
    element.className = `pill ${kind}`;
    this.ended = kind === "down";
  }

  show(publication) {
    const tail = byId("tail");
    const position = publication.offset === undefined ? "" : `#${publication.offset}`;
    tail.prepend(
      h(
        "li",
        {},
        h("span", { class: "meta" }, `${clock(publication.published_at_micros / 1000)} ${publication.topic} ${position}`),
        h("code", { class: "data" }, shown(publication)),
        publication.headers ? h("span", { class: "meta" }, headerText(publication.headers)) : null,
      ),
    );
    while (tail.children.length > TAIL_KEPT) tail.lastElementChild?.remove();
  }

  async publish() {
    const form = /** @type {HTMLFormElement} */ (byId("publish-form"));
    const result = byId("publish-result");
    const data = /** @type {HTMLTextAreaElement} */ (form.elements.namedItem("data")).value;
    const format = /** @type {RadioNodeList} */ (form.elements.namedItem("format")).value;
    /** @type {Record<string, any>} */
    const body = { topic: /** @type {HTMLInputElement} */ (form.elements.namedItem("topic")).value.trim() };
    if (format === "json") {
      try {
        body.data = JSON.parse(data);
      } catch (error) {
        say(result, `The data is not JSON (${error.message}); choose Text to send it as it is.`, true);
        return;
      }
    } else {
      const bytes = new TextEncoder().encode(data);
      body.data_base64 = btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
      body.content_type = "text/plain; charset=utf-8";
    }
    const headers = {};
    for (const line of /** @type {HTMLTextAreaElement} */ (form.elements.namedItem("headers")).value.split("\n")) {
      if (!line.trim()) continue;
      const colon = line.indexOf(":");
      if (colon <= 0) {
        say(result, `Header line "${line}" is not "name: value".`, true);
        return;
      }
      headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
    }
    if (Object.keys(headers).length) body.headers = headers;
    try {
      const answer = await call("publish", body);
      const at = answer.position ? ` at offset ${answer.position.offset}` : "";
      say(result, `Published to ${body.topic}${at}, ${clock(Date.now())}.`);
    } catch (error) {
      say(result, `Not published: ${error.message}`, true);
    }
  }

  async history() {
    const result = byId("history-result");
    const table = /** @type {HTMLTableElement} */ (byId("history"));
    const topic = this.topic();
    if (!topic) return say(result, "Name a topic above first.", true);
    const limit = Number(/** @type {HTMLInputElement} */ (byId("history-limit")).value) || 50;
    try {
      const answer = await call("history", { topic, limit });
      const rows = answer.publications
        .slice()
        .reverse()
        .map((p) =>
          h(
            "tr",
            {},
            h("td", { class: "num" }, p.offset ?? ""),
            h("td", {}, clock(p.published_at_micros / 1000)),
            h("td", {}, h("code", {}, shown(p))),
            h("td", {}, headerText(p.headers)),
          ),
        );
      table.tBodies[0].replaceChildren(...rows);
      table.hidden = rows.length === 0;
      const top = answer.top ? ` The stream is at offset ${answer.top.offset} (epoch ${answer.top.epoch}).` : "";
      say(result, `${rows.length} publication(s) of ${topic}, newest first.${top}`);
    } catch (error) {
      table.hidden = true;
      say(result, `No history: ${error.message}`, true);
    }
  }

  async presence() {
    const result = byId("presence-result");
    const table = /** @type {HTMLTableElement} */ (byId("presence"));
    const topic = this.topic();
    if (!topic) return say(result, "Name a topic above first.", true);
    try {
      const answer = await call("presence", { topic });
      const rows = answer.clients.map((c) =>
        h("tr", {}, h("td", {}, h("code", {}, c.client)), h("td", {}, c.user ?? "(anonymous)"), h("td", {}, c.node), h("td", {}, clock(c.joined_at_millis))),
      );
      table.tBodies[0].replaceChildren(...rows);
      table.hidden = rows.length === 0;
      say(result, `${rows.length} client(s) subscribed to ${topic}.`);
    } catch (error) {
      table.hidden = true;
      say(result, `No presence: ${error.message}`, true);
    }
  }
}
