// A small live line chart in SVG: the last minutes of one figure.

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 120;
const PAD = { left: 48, right: 8, top: 10, bottom: 20 };

/**
 * @param {string} tag
 * @param {Record<string, string | number>} attrs
 * @param {string} [text]
 */
function svg(tag, attrs, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/** A round upper bound for the axis: 1, 2, 5 × 10^n. */
function ceiling(max) {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((m) => m * power).find((v) => v >= max) ?? 10 * power;
}

/**
 * Draws `samples` (`{ at: ms, value }`, oldest first) over the last
 * `windowMs` into `container`, labelled with `unit`.
 * @param {HTMLElement} container
 * @param {{ at: number, value: number }[]} samples
 * @param {number} windowMs
 * @param {string} unit
 */
export function drawChart(container, samples, windowMs, unit) {
  const width = Math.max(240, container.clientWidth);
  const now = samples.length ? samples[samples.length - 1].at : Date.now();
  const top = ceiling(Math.max(0, ...samples.map((s) => s.value)));
  const x = (at) => PAD.left + ((at - (now - windowMs)) / windowMs) * (width - PAD.left - PAD.right);
  const y = (value) => PAD.top + (1 - value / top) * (HEIGHT - PAD.top - PAD.bottom);
  const last = samples.length ? samples[samples.length - 1].value : 0;
  const root = svg("svg", { width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img" });
  root.append(svg("title", {}, `${unit}: ${Math.round(last)} now, axis up to ${top}, last ${windowMs / 60000} minutes`));
  for (const value of [0, top / 2, top]) {
    root.append(svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(value), y2: y(value), class: "grid" }));
    root.append(svg("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis" }, String(value)));
  }
  root.append(svg("text", { x: PAD.left, y: HEIGHT - 4, class: "axis" }, `${windowMs / 60000} min ago`));
  root.append(svg("text", { x: width - PAD.right, y: HEIGHT - 4, "text-anchor": "end", class: "axis" }, "now"));
  if (samples.length > 1) {
    const points = samples.filter((s) => s.at >= now - windowMs).map((s) => `${x(s.at).toFixed(1)},${y(s.value).toFixed(1)}`);
    root.append(svg("polyline", { points: points.join(" "), class: "line" }));
  }
  container.replaceChildren(root);
}
