// The admin UI's entry: logging in with the API key, and showing one page
// per location hash (#cluster, #topic, #users, #config).
import { ApiError, call, storeKey, storedKey } from "./api.js";
import { ClusterPage } from "./cluster.js";
import { showConfig } from "./config.js";
import { byId, say } from "./dom.js";
import { TopicPage } from "./topic.js";
import { UsersPage } from "./users.js";

const PAGES = ["cluster", "topic", "users", "config"];

const cluster = new ClusterPage();
new TopicPage();
new UsersPage();

/** Shows the page of the location hash. */
function route() {
  const wanted = location.hash.slice(1);
  const page = PAGES.includes(wanted) ? wanted : "cluster";
  for (const name of PAGES) byId(name).hidden = name !== page;
  for (const link of byId("nav").querySelectorAll("a")) {
    if (link.getAttribute("href") === `#${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${byId(`${page}-title`).textContent} · ferrocast admin`;
  if (page === "config") showConfig();
}

/** @param {any} info the first Info, which names this node first */
function enter(info) {
  byId("login").hidden = true;
  byId("nav").hidden = false;
  byId("logout").hidden = !storedKey();
  byId("node-name").textContent = `node ${info.nodes[0]?.id ?? "?"}`;
  window.addEventListener("hashchange", route);
  route();
  cluster.start();
}

/** @param {string} message */
function askForKey(message) {
  byId("login").hidden = false;
  say(byId("login-error"), message, true);
  /** @type {HTMLInputElement} */ (byId("api-key")).focus();
}

byId("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ (byId("api-key"));
  const key = input.value.trim();
  try {
    const info = await call("info", undefined, key);
    storeKey(key);
    input.value = "";
    say(byId("login-error"), "");
    enter(info);
  } catch (error) {
    askForKey(`Not logged in: ${error.message}`);
  }
});

byId("logout").addEventListener("click", () => {
  storeKey("");
  cluster.stop();
  location.hash = "";
  location.reload();
});

async function start() {
  try {
    // Without a key on a loopback listener the API needs none.
    enter(await call("info"));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      const had = storedKey();
      storeKey("");
      askForKey(had ? `Logged out: ${error.message}` : "");
    } else {
      askForKey(`This node's API does not answer: ${error.message}`);
    }
  } finally {
    /** @type {any} */ (window).adminReady = true;
  }
}

start();
