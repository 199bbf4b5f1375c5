// The top-K classes as bars with percentages, and how long the network took.

import { msg, say } from "./i18n.js";

const percent = (p) => `${(p * 100).toFixed(2)}%`;

// The bars alone: `top` is a list of {class, index, probability}, best first.
export function renderTop(list, top) {
  list.replaceChildren(
    ...top.map((entry) => {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = entry.class;
      say(name, msg("results.class_title", { name: entry.class, index: entry.index }), "title");
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = `${Math.max(0, Math.min(1, entry.probability)) * 100}%`;
      bar.append(fill);
      const value = document.createElement("span");
      value.className = "pct";
      value.textContent = percent(entry.probability);
      item.append(name, bar, value);
      return item;
    }),
  );
}

// The server's answer from /api/predict: the bars, and the forward pass's time.
export function renderPredictions(list, timing, result, roundTripMs) {
  renderTop(list, result.top);
  say(
    timing,
    msg("run.server", {
      model: result.model,
      ms: result.time_ms.toFixed(1),
      fps: result.fps.toFixed(1),
      round_trip: Math.round(roundTripMs),
    }),
  );
}

export function clearPredictions(list, timing) {
  list.replaceChildren();
  say(timing, "");
}
