// The top-K classes as bars with percentages, and how long the network took.

const percent = (p) => `${(p * 100).toFixed(2)}%`;

// The bars alone: `top` is a list of {class, index, probability}, best first.
export function renderTop(list, top) {
  list.replaceChildren(
    ...top.map((entry) => {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = entry.class;
      name.title = `${entry.class} (class ${entry.index})`;
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
  timing.textContent =
    `${result.model}: ${result.time_ms.toFixed(1)} ms (${result.fps.toFixed(1)} fps) ` +
    `for the forward pass; ${Math.round(roundTripMs)} ms round trip`;
}

export function clearPredictions(list, timing) {
  list.replaceChildren();
  timing.textContent = "";
}
