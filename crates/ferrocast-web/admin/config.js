// The Config page: the node's effective configuration (secrets left out)
// and its namespaces, from GET /api/config.
import { call } from "./api.js";
import { byId, duration, h, say } from "./dom.js";

export async function showConfig() {
  try {
    const config = await call("config");
    byId("config-node").textContent = config.node;
    byId("config-toml").textContent = config.toml;
    const yes = (flag) => (flag ? "yes" : "no");
    const rows = config.namespaces.map((ns) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, ns.name),
        h("td", { class: "num" }, ns.history_size ? `${ns.history_size} per topic` : "none"),
        h("td", {}, ns.history_size ? duration(ns.history_ttl_seconds) : ""),
        h("td", {}, yes(ns.presence)),
        h("td", {}, yes(ns.anonymous)),
        h("td", {}, yes(ns.client_publish)),
      ),
    );
    if (!rows.length) rows.push(h("tr", {}, h("td", { colSpan: 6 }, "No namespace is configured.")));
    /** @type {HTMLTableElement} */ (byId("namespaces")).tBodies[0].replaceChildren(...rows);
  } catch (error) {
    say(byId("banner"), `Cannot read the configuration: ${error.message}`, true);
  }
}
